"""Running one inference job: atomic claim, lease with heartbeat, steps, retries, results.

A job is claimed with one conditional UPDATE, so of two workers holding a task for the same
job exactly one runs it. The claim sets a lease (``INFERENCE["LEASE_S"]``) that a heartbeat
thread renews every ``HEARTBEAT_S``. When a worker dies (SIGKILL, power loss), the heartbeat
stops and the lease expires. A lease-check task, queued with ``run_after`` at each claim, then
finds the job still "running" with an expired lease and claims it for its own worker.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from inference.dicom import load_study
from inference.errors import InferenceError, ModelArtifactError
from inference.models.registry import ModelRegistry
from inference.pipeline import ModelPrediction, ModelSet, VolumeAnalysis, predict_volume
from inference.radiomics import extract_case_features, load_settings, sha256_array
from inference.segmentation import segment_hyperdensities
from inference.volume import Volume
from webapp.core.models import Instance
from webapp.ingest.storage import stored_path
from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction
from webapp.jobs.selection import select_model_records
from webapp.jobs.services import send_job_task

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Extra time after a lease expires before the lease-check task runs, so a heartbeat that is a
# little late is not mistaken for a dead worker.
LEASE_GRACE_S = 1.0

# Errors that may pass on a second try: the database or the file store was briefly unavailable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DatabaseError, OSError)


def _inference_setting(name: str) -> Any:
    return settings.INFERENCE[name]


class LeaseLostError(Exception):
    """Another worker took the job over because this worker's lease expired."""


@dataclass(frozen=True)
class RunOutcome:
    """Result of ``run_job``: the job status afterwards, or ``skipped`` when it was not claimed."""

    job_id: int
    status: str
    detail: str = ""


def run_job(job_id: int, worker_id: str) -> RunOutcome:
    """Claim and run job ``job_id``; a failure of the job is stored on its row, not raised."""
    job = claim_job(job_id, worker_id)
    if job is None:
        return _outcome_without_claim(job_id)

    assert job.lease_expires_at is not None
    # The lease check: if this worker dies, this deferred task lets another worker take over.
    send_job_task(job.pk, run_after=job.lease_expires_at + timedelta(seconds=LEASE_GRACE_S))
    heartbeat = Heartbeat(job.pk, worker_id)
    heartbeat.start()
    started = time.perf_counter()
    try:
        _execute(job, heartbeat)
    except LeaseLostError:
        logger.warning("Job job_id=%s lost its lease; another worker took it over", job.pk)
        return RunOutcome(job.pk, "skipped", "lease lost")
    except InferenceError as error:
        _finish_failed(job, worker_id, error.code, error.message)
        return RunOutcome(job.pk, InferenceJob.Status.FAILED, error.code)
    except TRANSIENT_ERRORS as error:
        return _retry_or_fail(job, worker_id, error)
    except Exception as error:  # noqa: BLE001
        # Any other exception is a bug: the job fails with a generic code so it never stays
        # "running", and the traceback goes to the worker's log.
        logger.exception("Job job_id=%s failed with an unexpected error", job.pk)
        _finish_failed(
            job,
            worker_id,
            "internal_error",
            f"The analysis failed unexpectedly ({type(error).__name__}); the administrators "
            "can find the details in the worker log. Re-run the analysis after a fix.",
        )
        return RunOutcome(job.pk, InferenceJob.Status.FAILED, "internal_error")
    finally:
        heartbeat.stop()
    logger.info(
        "Job job_id=%s succeeded run=%s in %.2f s on worker %s",
        job.pk,
        job.run_count,
        time.perf_counter() - started,
        worker_id,
    )
    return RunOutcome(job.pk, InferenceJob.Status.SUCCEEDED)


def claim_job(job_id: int, worker_id: str) -> InferenceJob | None:
    """Mark the job running for ``worker_id`` if it is claimable; return it, or None.

    Claimable: queued and not deferred (``lease_expires_at`` unset or past, because a retry
    waiting for its backoff stores its earliest start there), or running with an expired lease.
    """
    now = timezone.now()
    lease = timedelta(seconds=float(_inference_setting("LEASE_S")))
    max_attempts = int(_inference_setting("MAX_ATTEMPTS"))
    expired = Q(status=InferenceJob.Status.RUNNING, lease_expires_at__lt=now)
    # A job whose workers keep dying (a study that exhausts memory, say) fails after
    # MAX_ATTEMPTS claims instead of killing workers forever.
    InferenceJob.objects.filter(expired, pk=job_id, attempts__gte=max_attempts).update(
        status=InferenceJob.Status.FAILED,
        error_code="worker_lost",
        error_message=f"The worker running this job stopped {max_attempts} times without "
        "finishing (killed or out of memory). Check the worker logs and memory, then re-run.",
        finished_at=now,
        lease_expires_at=None,
    )
    claimable = (
        Q(status=InferenceJob.Status.QUEUED)
        & (Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
    ) | expired
    # One conditional UPDATE: the database applies it to the row under a row lock, so when two
    # workers race, the second one re-evaluates the condition, finds "running", and updates 0.
    claimed = (
        InferenceJob.objects.filter(claimable, pk=job_id)
        .filter(attempts__lt=max_attempts)
        .update(
            status=InferenceJob.Status.RUNNING,
            worker_id=worker_id[:64],
            attempts=F("attempts") + 1,
            run_count=F("run_count") + 1,
            heartbeat_at=now,
            lease_expires_at=now + lease,
            started_at=now,
            finished_at=None,
            progress_step=InferenceJob.Step.PENDING,
            step_timings_s={},
        )
    )
    if not claimed:
        return None
    job = InferenceJob.objects.select_related("study").get(pk=job_id)
    logger.info(
        "Job job_id=%s claimed by worker %s (attempt %s, run %s)",
        job.pk,
        worker_id,
        job.attempts,
        job.run_count,
    )
    return job


class Heartbeat:
    """Renews a job's lease from a background thread while the job runs."""

    def __init__(self, job_id: int, worker_id: str) -> None:
        self.job_id = job_id
        self.worker_id = worker_id
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        """Raise LeaseLostError when another worker has taken the job."""
        if self.lost.is_set():
            raise LeaseLostError(f"job {self.job_id}")

    def _run(self) -> None:
        interval_s = float(_inference_setting("HEARTBEAT_S"))
        lease = timedelta(seconds=float(_inference_setting("LEASE_S")))
        try:
            while not self._stop.wait(interval_s):
                now = timezone.now()
                try:
                    renewed = InferenceJob.objects.filter(
                        pk=self.job_id, worker_id=self.worker_id, status=InferenceJob.Status.RUNNING
                    ).update(heartbeat_at=now, lease_expires_at=now + lease)
                except DatabaseError as error:
                    # The lease still runs; the next beat tries again.
                    logger.warning("Heartbeat of job_id=%s failed: %s", self.job_id, error)
                    continue
                if not renewed:
                    self.lost.set()
                    return
        finally:
            # This thread has its own database connection; close it so it does not leak.
            connection.close()


def _execute(job: InferenceJob, heartbeat: Heartbeat) -> None:
    timings: dict[str, float] = {}
    paths = _chosen_series_paths(job)

    volume: Volume = _step(
        job, heartbeat, timings, InferenceJob.Step.LOAD, lambda: load_study(paths)
    )[0]
    segmentation = _step(
        job, heartbeat, timings, InferenceJob.Step.SEGMENT, lambda: segment_hyperdensities(volume)
    )
    radiomics_settings = load_settings()
    feature_labels, feature_values = segmentation.hyperdensity_labels()
    features = _step(
        job,
        heartbeat,
        timings,
        InferenceJob.Step.RADIOMICS,
        lambda: extract_case_features(volume, feature_labels, feature_values, radiomics_settings),
    )
    analysis = VolumeAnalysis(volume, segmentation, features, {})

    def run_models() -> list[ModelPrediction]:
        models = ModelSet(
            ModelRegistry(_inference_setting("MODEL_DIR")),
            radiomics_settings,
            device=str(_inference_setting("DEVICE")),
        )
        # Promotion decides which versions run (webapp.jobs.selection), not recency alone.
        models.records = select_model_records(models.registry)
        if not models.records:
            raise ModelArtifactError(
                f"No model is registered in {_inference_setting('MODEL_DIR')}; a researcher "
                "must train or register one, then re-run the analysis.",
                code="model_not_found",
            )
        return predict_volume(analysis, models)

    outputs = _step(job, heartbeat, timings, InferenceJob.Step.MODELS, run_models)
    provenance = {
        "pipeline_version": job.pipeline_version,
        "series_instance_uid": volume.series_instance_uid,
        "pixel_sha256": sha256_array(volume.hu.astype("float32")),
        "radiomics": dict(features.provenance),
        "timings_s": dict(timings),
        "volume_notes": [note.to_dict() for note in volume.notes],
    }
    _store_results(job, heartbeat, outputs, analysis, provenance, timings)


def _step(
    job: InferenceJob,
    heartbeat: Heartbeat,
    timings: dict[str, float],
    step: str,
    work: Callable[[], T],
) -> T:
    heartbeat.check()
    InferenceJob.objects.filter(pk=job.pk, worker_id=job.worker_id).update(
        progress_step=step, step_timings_s=timings
    )
    started = time.perf_counter()
    delay_s = float(_inference_setting("TEST_STEP_DELAY_S"))
    if delay_s:
        time.sleep(delay_s)
    result = work()
    timings[step] = round(time.perf_counter() - started, 4)
    return result


def _chosen_series_paths(job: InferenceJob) -> list[str]:
    names = list(
        Instance.objects.filter(series__study=job.study, series__is_chosen=True).values_list(
            "file", flat=True
        )
    )
    if not names:
        raise InferenceError(
            f"Study {job.study.study_instance_uid} has no series chosen for analysis; upload "
            "its axial CT series, then re-run.",
            code="no_usable_series",
        )
    return [stored_path(name) for name in names]


def _store_results(
    job: InferenceJob,
    heartbeat: Heartbeat,
    outputs: list[ModelPrediction],
    analysis: VolumeAnalysis,
    provenance: dict[str, Any],
    timings: dict[str, float],
) -> None:
    succeeded = [output for output in outputs if output.prediction is not None]
    failed = [output for output in outputs if output.prediction is None]
    if not succeeded:
        first = failed[0].error or {} if failed else {}
        raise InferenceError(
            "Every model failed: "
            + "; ".join(f"{o.model_id}: {(o.error or {}).get('message')}" for o in failed),
            code=str(first.get("code") or "prediction_failed"),
        )

    # Written before the transaction (slow I/O); a run that then loses its lease leaves an
    # unreferenced file under masks/, which the next run of the same number overwrites.
    mask_name = _store_label_mask(job, analysis)

    with transaction.atomic():
        # Lock the row and check ownership: a worker whose lease was taken over must not
        # write results beside the new owner's.
        locked = InferenceJob.objects.select_for_update().get(pk=job.pk)
        if locked.worker_id != job.worker_id or locked.status != InferenceJob.Status.RUNNING:
            raise LeaseLostError(f"job {job.pk}")
        heartbeat.check()
        run_number = locked.run_count
        threshold = float(_inference_setting("UNCERTAIN_BELOW_PROBABILITY"))
        for output in succeeded:
            assert output.prediction is not None
            model_version = _model_version_row(output)
            top_probability = max(output.prediction.probabilities.values())
            Prediction.objects.create(
                job=locked,
                run_number=run_number,
                model_version=model_version,
                probabilities=output.prediction.probabilities,
                predicted_label=output.prediction.label,
                is_uncertain=output.prediction.uncertain or top_probability < threshold,
                runtime_s=output.runtime_s,
                mask_file=mask_name,
                features={
                    key: value for key, value in analysis.radiomics.to_dict()["aggregate"].items()
                },
                provenance={**provenance, "model": output.to_dict()},
            )
        for lesion in analysis.segmentation.lesions:
            Lesion.objects.create(
                job=locked,
                run_number=run_number,
                compartment=_compartment(getattr(lesion, "compartment", "")),
                **Lesion.measured_fields(lesion),
            )
        locked.status = InferenceJob.Status.SUCCEEDED
        locked.progress_step = InferenceJob.Step.DONE
        locked.step_timings_s = timings
        locked.finished_at = timezone.now()
        locked.lease_expires_at = None
        if failed:
            locked.error_code = "model_failed"
            locked.error_message = "; ".join(
                f"{o.model_id}: {(o.error or {}).get('message')}" for o in failed
            )
        else:
            locked.error_code = ""
            locked.error_message = ""
        locked.save()
    job.run_count = run_number


def _store_label_mask(job: InferenceJob, analysis: VolumeAnalysis) -> str:
    """Write the run's lesion label image as NIfTI under MEDIA_ROOT; return its storage name.

    Voxels are stored in (x, y, z) order with an RAS affine built from the volume's LPS origin,
    direction cosines and spacing, as NIfTI readers expect.
    """
    volume = analysis.volume
    spacing_z, spacing_y, spacing_x = volume.spacing_zyx_mm
    direction = np.asarray(volume.direction, dtype=np.float64)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction @ np.diag([spacing_x, spacing_y, spacing_z])
    affine_lps[:3, 3] = volume.origin_xyz_mm
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    labels = np.asarray(analysis.segmentation.labels, dtype=np.int32)
    image = nib.Nifti1Image(labels.transpose(2, 1, 0), affine_ras)
    image.header.set_xyzt_units("mm")
    name = f"masks/job-{job.pk}/run-{job.run_count}.nii.gz"
    if default_storage.exists(name):
        default_storage.delete(name)
    # mtime 0 keeps the bytes independent of the clock.
    return default_storage.save(
        name, ContentFile(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
    )


def _model_version_row(output: ModelPrediction) -> ModelVersion:
    kind = output.kind if output.kind in ModelVersion.Kind.values else ModelVersion.Kind.HYBRID
    row, _ = ModelVersion.objects.get_or_create(
        kind=kind,
        version=output.version[:32],
        defaults={
            "sha256": output.artifact_sha256,
            "intended_use": output.intended_use,
            "params": {"model_id": output.model_id},
        },
    )
    return row


def _compartment(value: str) -> str:
    return value if value in Lesion.Compartment.values else Lesion.Compartment.UNKNOWN


def _finish_failed(job: InferenceJob, worker_id: str, code: str, message: str) -> None:
    updated = InferenceJob.objects.filter(
        pk=job.pk, worker_id=worker_id, status=InferenceJob.Status.RUNNING
    ).update(
        status=InferenceJob.Status.FAILED,
        error_code=code[:64],
        error_message=message,
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
    if updated:
        logger.warning("Job job_id=%s failed: %s", job.pk, code)


def _retry_or_fail(job: InferenceJob, worker_id: str, error: BaseException) -> RunOutcome:
    max_attempts = int(_inference_setting("MAX_ATTEMPTS"))
    fresh = InferenceJob.objects.get(pk=job.pk)
    message = f"{type(error).__name__}: {error}"
    if fresh.attempts >= max_attempts:
        _finish_failed(
            job,
            worker_id,
            "transient_error",
            f"The analysis failed {fresh.attempts} times on a temporary error ({message}); "
            "check the database and file storage, then re-run.",
        )
        return RunOutcome(job.pk, InferenceJob.Status.FAILED, "transient_error")

    backoff_s = float(_inference_setting("RETRY_BACKOFF_S")) * 2 ** (fresh.attempts - 1)
    not_before = timezone.now() + timedelta(seconds=backoff_s)
    updated = InferenceJob.objects.filter(
        pk=job.pk, worker_id=worker_id, status=InferenceJob.Status.RUNNING
    ).update(
        status=InferenceJob.Status.QUEUED,
        error_code="transient_error",
        error_message=f"Attempt {fresh.attempts} failed ({message}); retrying in {backoff_s:g} s.",
        lease_expires_at=not_before,
    )
    if updated:
        logger.warning(
            "Job job_id=%s attempt %s failed (%s); retry in %.1f s",
            job.pk,
            fresh.attempts,
            type(error).__name__,
            backoff_s,
        )
        send_job_task(job.pk, run_after=not_before)
    return RunOutcome(job.pk, InferenceJob.Status.QUEUED, "retry scheduled")


def _outcome_without_claim(job_id: int) -> RunOutcome:
    job = InferenceJob.objects.filter(pk=job_id).first()
    if job is None:
        return RunOutcome(job_id, "skipped", "job not found")
    if job.status == InferenceJob.Status.RUNNING and job.lease_expires_at is not None:
        # Another worker holds a valid lease: check again when it expires.
        send_job_task(job.pk, run_after=job.lease_expires_at + timedelta(seconds=LEASE_GRACE_S))
        return RunOutcome(job.pk, "skipped", "running on another worker")
    return RunOutcome(job.pk, "skipped", f"job is {job.status}")
