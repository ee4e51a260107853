// Upload page: sends the selected files to the upload API in parallel batches that share one
// upload id, retries failed batches with exponential backoff, completes the upload and shows
// the report. Plain ES module, no build step.

const PARALLEL_BATCHES = 3;
const MAX_BATCH_BYTES = 64 * 1024 * 1024;
const MAX_ATTEMPTS = 5;
const FIRST_RETRY_DELAY_MS = 1000;

const form = document.getElementById("upload-form");
const dropZone = document.getElementById("drop-zone");
const summary = document.getElementById("selection-summary");
const progressBar = document.getElementById("upload-progress");
const progressText = document.getElementById("progress-text");
const reportSection = document.getElementById("upload-report");
const reportBody = document.getElementById("report-body");

// Each entry: { file, path } where path is the file's path inside a dropped or chosen folder.
let selected = [];

function setSelection(entries) {
  selected = entries;
  const bytes = entries.reduce((total, entry) => total + entry.file.size, 0);
  summary.textContent = `${entries.length} file(s) selected, ${formatBytes(bytes)}.`;
}

function formatBytes(bytes) {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

form.elements.files.addEventListener("change", (event) => {
  setSelection([...event.target.files].map((file) => ({ file, path: file.name })));
});

form.elements.folder.addEventListener("change", (event) => {
  setSelection(
    [...event.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })),
  );
});

// Reads a dropped folder recursively; readEntries returns at most 100 entries per call.
async function readEntry(entry, prefix) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ file, path: prefix + file.name }];
  }
  const reader = entry.createReader();
  const children = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  const nested = await Promise.all(
    children.map((child) => readEntry(child, `${prefix}${entry.name}/`)),
  );
  return nested.flat();
}

dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("drag-over");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("drag-over"));
dropZone.addEventListener("drop", async (event) => {
  event.preventDefault();
  dropZone.classList.remove("drag-over");
  const entries = [...event.dataTransfer.items]
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (entries.length) {
    const lists = await Promise.all(entries.map((entry) => readEntry(entry, "")));
    setSelection(lists.flat());
  } else {
    setSelection([...event.dataTransfer.files].map((file) => ({ file, path: file.name })));
  }
});

function makeBatches(entries, batchSize) {
  const batches = [];
  let current = [];
  let currentBytes = 0;
  for (const entry of entries) {
    if (current.length && (current.length >= batchSize || currentBytes + entry.file.size > MAX_BATCH_BYTES)) {
      batches.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(entry);
    currentBytes += entry.file.size;
  }
  if (current.length) batches.push(current);
  return batches;
}

function caseCode() {
  const mode = form.elements.case_mode.value;
  return mode === "new" ? form.elements.new_case.value.trim() : form.elements.existing_case.value;
}

// Returns why the case choice cannot be used, or "" when it can.
function caseProblem() {
  const mode = form.elements.case_mode.value;
  if (mode === "existing") {
    return form.elements.existing_case.value ? "" : "Choose the existing case from the list, or choose New case and enter a code.";
  }
  const code = form.elements.new_case.value.trim();
  if (!code) return "Enter a code for the new case, or choose Existing case.";
  const existing = [...form.elements.existing_case.options].map((option) => option.value);
  if (existing.includes(code)) {
    return `Case ${code} already exists: choose it under Existing case, or enter another code for a new case.`;
  }
  return "";
}

// Picking from the list or typing a code selects the matching mode.
form.elements.existing_case.addEventListener("change", () => {
  if (form.elements.existing_case.value) form.elements.case_mode.value = "existing";
});
form.elements.new_case.addEventListener("input", () => {
  form.elements.case_mode.value = "new";
});

class HttpError extends Error {
  constructor(status, body) {
    super(body.message || body.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// XMLHttpRequest instead of fetch, because fetch reports no upload progress.
function sendBatch(url, formData, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("X-CSRFToken", form.elements.csrfmiddlewaretoken.value);
    request.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    request.addEventListener("load", () => {
      let body = {};
      try {
        body = JSON.parse(request.responseText);
      } catch {
        body = { message: request.statusText };
      }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new HttpError(request.status, body));
    });
    request.addEventListener("error", () => reject(new HttpError(0, { message: "network error" })));
    request.send(formData);
  });
}

function isRetryable(error) {
  if (error.status === 400 && error.body && error.body.code === "incomplete_request") return true;
  return error.status === 0 || error.status === 429 || error.status >= 500;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function uploadAll(event) {
  event.preventDefault();
  const problem = caseProblem();
  if (problem) {
    progressText.textContent = problem;
    return;
  }
  if (!selected.length) {
    progressText.textContent = "Choose at least one file, a folder or a zip first.";
    return;
  }
  const code = caseCode();
  const uploadId = crypto.randomUUID();
  const batches = makeBatches(selected, Number(form.dataset.batchSize) || 50);
  const totalBytes = selected.reduce((total, entry) => total + entry.file.size, 0);
  const loadedByBatch = new Array(batches.length).fill(0);
  let filesDone = 0;
  let failedBatches = 0;
  reportSection.hidden = true;
  progressBar.max = Math.max(totalBytes, 1);

  const showProgress = () => {
    const loaded = loadedByBatch.reduce((a, b) => a + b, 0);
    progressBar.value = loaded;
    progressText.textContent =
      `${formatBytes(loaded)} of ${formatBytes(totalBytes)}; ` +
      `${filesDone} of ${selected.length} files stored` +
      (failedBatches ? `; ${failedBatches} batch(es) failed` : "");
  };

  const url = `/api/v1/cases/${encodeURIComponent(code)}/studies/`;
  let next = 0;
  let stopError = null;

  async function runBatch(index) {
    const batch = batches[index];
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
      const data = new FormData();
      // First field: the server rejects a body that was cut off before all files arrived.
      data.append("file_count", String(batch.length));
      data.append("upload_id", uploadId);
      data.append("complete", "false");
      data.append("role", form.elements.role.value);
      data.append("hours_after_mt", form.elements.hours_after_mt.value);
      if (form.elements.case_mode.value === "new") data.append("create_case", "true");
      for (const entry of batch) {
        data.append("files", entry.file, entry.file.name);
        data.append("paths", entry.path);
      }
      try {
        await sendBatch(url, data, (loaded) => {
          loadedByBatch[index] = loaded;
          showProgress();
        });
        filesDone += batch.length;
        showProgress();
        return;
      } catch (error) {
        loadedByBatch[index] = 0;
        if (!isRetryable(error) || attempt === MAX_ATTEMPTS) throw error;
        progressText.textContent = `Batch ${index + 1} failed (${error.message}); retrying.`;
        await sleep(FIRST_RETRY_DELAY_MS * 2 ** (attempt - 1));
      }
    }
  }

  async function worker() {
    while (next < batches.length && !stopError) {
      const index = next;
      next += 1;
      try {
        await runBatch(index);
      } catch (error) {
        failedBatches += 1;
        // A rejected request (wrong role, unsafe zip) fails the same way for every batch.
        if (!isRetryable(error)) stopError = error;
        showProgress();
      }
    }
  }

  await Promise.all(Array.from({ length: Math.min(PARALLEL_BATCHES, batches.length) }, worker));
  if (stopError) {
    progressText.textContent = `Upload rejected: ${stopError.message}`;
    return;
  }
  try {
    const response = await fetch(`/api/v1/uploads/${uploadId}/complete/`, {
      method: "POST",
      headers: { "X-CSRFToken": form.elements.csrfmiddlewaretoken.value },
    });
    const report = await response.json();
    if (!response.ok) throw new Error(report.message || report.detail || `HTTP ${response.status}`);
    renderReport(report, failedBatches);
  } catch (error) {
    progressText.textContent = `Completing the upload failed: ${error.message}. Retry the upload; stored files are kept.`;
  }
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function table(caption, headings, rows) {
  const node = element("table", undefined, { class: "table" });
  node.append(element("caption", caption));
  const head = element("tr");
  headings.forEach((heading) => head.append(element("th", heading, { scope: "col" })));
  const thead = element("thead");
  thead.append(head);
  node.append(thead);
  const body = element("tbody");
  rows.forEach((cells) => {
    const row = element("tr");
    cells.forEach((cell) => row.append(element("td", cell === null || cell === undefined ? "" : String(cell))));
    body.append(row);
  });
  node.append(body);
  return node;
}

function renderReport(report, failedBatches) {
  reportBody.replaceChildren();
  // A summary line stands for `count` files; every other line for one.
  const skippedCount = report.skipped.reduce((sum, item) => sum + (item.count || 1), 0);
  const examined = report.files_examined || report.files_received;
  const inArchives =
    examined !== report.files_received ? ` (${report.files_received} uploaded, archives unpacked)` : "";
  const failedNote = failedBatches ? ` ${failedBatches} batch(es) failed after retries: upload those files again.` : "";
  if (report.nothing_stored) {
    // The server's summary says why, and whether the new case was dropped again.
    reportBody.append(element("p", report.summary + failedNote, { class: "upload-nothing-stored", role: "alert" }));
  } else {
    reportBody.append(
      element(
        "p",
        `${report.instances_stored} image(s) stored, ${report.instances_already_stored} already stored, ` +
          `${skippedCount} file(s) skipped, of ${examined} file(s)${inArchives}.` + failedNote,
      ),
    );
  }
  for (const study of report.studies) {
    reportBody.append(
      table(
        `Study ${study.study_instance_uid} (${study.role})`,
        ["Series", "Description", "Kind", "Images", "Analysed", "Reason"],
        study.series.map((series) => [
          series.series_number,
          series.description,
          series.kind,
          series.image_count,
          series.chosen ? "yes" : "no",
          series.reason,
        ]),
      ),
    );
  }
  if (report.warnings.length) {
    reportBody.append(element("h3", "Warnings"));
    const list = element("ul");
    report.warnings.forEach((warning) => list.append(element("li", warning.message)));
    reportBody.append(list);
  }
  if (report.skipped.length) {
    reportBody.append(element("h3", "Skipped files"));
    reportBody.append(
      table(
        "Skipped files, with the reason for each",
        ["File", "Reason", "Detail"],
        report.skipped.map((item) => [item.path, item.reason, item.detail]),
      ),
    );
  }
  if (report.jobs.length) {
    const list = element("ul");
    report.jobs.forEach((job) => list.append(element("li", `Study ${job.study_instance_uid}: ${job.message}.`)));
    reportBody.append(element("h3", "Analysis"));
    reportBody.append(list);
  }
  if (!report.case_removed) {
    const link = element("a", `Open case ${report.case}`, { href: `/cases/${encodeURIComponent(report.case)}/` });
    reportBody.append(link);
  }
  reportSection.hidden = false;
  progressText.textContent = report.nothing_stored ? "Upload finished: nothing was stored." : "Upload complete.";
}

form.addEventListener("submit", uploadAll);
