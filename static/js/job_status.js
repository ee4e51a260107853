// Live analysis progress on the case page: polls the case's job status endpoint every few
// seconds while a job is queued or running, and stops once every job has finished.

const POLL_INTERVAL_MS = 3000;
const STEP_ORDER = ["pending", "load", "segment", "radiomics", "models", "done"];

function describe(job) {
  const role = job.study_role === "follow_up" ? "Follow-up" : "Baseline";
  if (job.status === "succeeded") {
    const total = Object.values(job.step_timings_s).reduce((a, b) => a + b, 0);
    return `${role}: analysed in ${total.toFixed(1)} s (run ${job.run_count}).`;
  }
  if (job.status === "failed") {
    return `${role}: analysis failed (${job.error_code}). ${job.error_message}`;
  }
  if (job.status === "running") {
    const step = STEP_ORDER.indexOf(job.progress_step);
    return `${role}: ${job.progress_label} (step ${Math.max(step, 1)} of 4).`;
  }
  const retry = job.error_code === "transient_error" ? ` ${job.error_message}` : "";
  return `${role}: waiting for a worker.${retry}`;
}

async function poll(section) {
  const list = section.querySelector(".job-status-list");
  let active = true;
  try {
    const response = await fetch(section.dataset.statusUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    list.replaceChildren(
      ...(body.jobs.length
        ? body.jobs.map((job) => {
            const item = document.createElement("li");
            item.textContent = describe(job);
            item.dataset.status = job.status;
            return item;
          })
        : [Object.assign(document.createElement("li"), { textContent: "No analysis yet." })]),
    );
    active = body.jobs.some((job) => job.status === "queued" || job.status === "running");
  } catch (error) {
    const item = document.createElement("li");
    item.textContent = `Status unavailable (${error.message}); retrying.`;
    list.replaceChildren(item);
  }
  if (active) setTimeout(() => poll(section), POLL_INTERVAL_MS);
}

document.querySelectorAll(".job-status[data-status-url]").forEach((section) => poll(section));
