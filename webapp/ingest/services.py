"""Ingest of uploaded DICOM files: unpack, classify, de-identify, store once, link to a case.

``ingest_files`` handles one request (one batch), and the batches of one upload share an upload
id. ``complete_upload`` then re-reads every stored instance of the upload's studies and chooses
the series to analyse per study. It queues inference once its transaction commits. A single API
request does both in one call.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import secrets
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pydicom
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from pydicom.errors import InvalidDicomError

from inference.dicom import SeriesInfo, scan_buffers, scan_paths
from inference.dicom.geometry import plan_geometry
from inference.errors import InferenceError
from webapp.core import roles
from webapp.core.audit import Action, record_audit_event
from webapp.core.models import Case, Instance, Series, Study
from webapp.core.services import ServiceError
from webapp.ingest.archives import (
    ArchiveRejectedError,
    ZipLimits,
    extract_upload_zip,
    unsafe_entry_name,
)
from webapp.ingest.deid import Deidentifier, read_identified_file
from webapp.ingest.deid_template import SeriesDeidentifier
from webapp.ingest.identity import mapping_enabled, record_identities
from webapp.ingest.models import DeidentificationKey, Upload
from webapp.ingest.storage import store_instance_chunks, stored_path

logger = logging.getLogger(__name__)

# Scan kinds (inference.dicom.classify) mapped to the Series.Kind stored in the database.
SERIES_KIND_BY_SCAN_KIND = {
    "axial": Series.Kind.AXIAL,
    "multiframe": Series.Kind.AXIAL,
    "localizer": Series.Kind.LOCALIZER,
    "secondary_capture": Series.Kind.SECONDARY_CAPTURE,
    "derived": Series.Kind.OTHER,
    "non_axial": Series.Kind.REFORMAT,
}


class IncomingFile(Protocol):
    """An uploaded file: Django's UploadedFile, or any object with a name and chunks."""

    name: str | None

    def chunks(self, chunk_size: int | None = None) -> Iterable[bytes]: ...


@dataclass(frozen=True)
class NamedFile:
    """An uploaded file with the relative path the client gave (folder uploads)."""

    relative_path: str
    file: IncomingFile


class IngestError(ServiceError):
    """The whole request is rejected (bad zip, wrong role, invalid timing); nothing was stored."""

    code = "ingest_rejected"


@dataclass
class IngestReport:
    """Report of one upload: files found, stored, skipped and jobs queued, returned as JSON."""

    upload_id: str
    case: str
    role: str
    completed: bool = False
    files_received: int = 0
    instances_stored: int = 0
    instances_already_stored: int = 0
    studies: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    # Files examined: loose files plus the entries inside zip archives.
    files_examined: int = 0
    # True when the upload created its case and stored nothing, so the case was deleted again.
    case_removed: bool = False
    # One entry per instance of this request that reached the database step (not in to_dict):
    # path, status (stored, already_stored, other_case) and the stored UIDs. STOW-RS reads it.
    instance_results: list[dict[str, str]] = field(default_factory=list)
    # Skip reason of every skipped file of this request, before long lists are summarised.
    skipped_reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "case": self.case,
            "role": self.role,
            "completed": self.completed,
            "files_received": self.files_received,
            "instances_stored": self.instances_stored,
            "instances_already_stored": self.instances_already_stored,
            "studies": self.studies,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "jobs": self.jobs,
            "files_examined": self.files_examined,
            "nothing_stored": self.nothing_stored,
            "case_removed": self.case_removed,
            "summary": self.summary,
        }

    @property
    def nothing_stored(self) -> bool:
        """True when no file of the upload became an instance of the case (new or earlier)."""
        return self.instances_stored == 0 and self.instances_already_stored == 0

    @property
    def summary(self) -> str:
        """One sentence for the page: what was stored, or plainly that nothing was and why."""
        if not self.nothing_stored:
            return (
                f"{self.instances_stored} image(s) stored, {self.instances_already_stored} "
                f"already stored, of {self.files_examined or self.files_received} file(s)."
            )
        reasons = sorted(
            {skipped_reason_words(str(item.get("reason", ""))) for item in self.skipped}
        )
        why = (
            f"every file was skipped ({', '.join(reasons)}; see Skipped files below)"
            if reasons
            else "no file was received"
        )
        removed = f" Case {self.case} was not created." if self.case_removed else ""
        return (
            f"Nothing was stored: {why}. Upload CT DICOM files, a folder of them, or a zip "
            f"of them.{removed}"
        )


@dataclass(frozen=True)
class _StoredFile:
    """One instance after de-identification and storage (plain values: it crosses processes)."""

    path: str
    storage_name: str
    sha256: str
    size_bytes: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    original_name: str = ""
    original_id: str = ""
    study_description: str = ""
    series_description: str = ""
    # Keyed hash of the StudyInstanceUID as received (study_fingerprint); "" when it had none.
    source_study_hash: str = ""


@dataclass(frozen=True)
class _UnreadableFile:
    path: str
    error_type: str
    # "unreadable", or "deidentification_failed" when a header value broke de-identification.
    reason: str = "unreadable"


@dataclass
class _PreparedInstance:
    stored: _StoredFile
    series: SeriesInfo
    instance_number: int | None
    display_path: str
    sop_class_uid: str


class _FileStorer:
    """De-identifies (or copies) one file and stores it; runs in the request or a pool process.

    A path that is a key of ``buffers`` is read from those bytes, any other from the disk.
    """

    def __init__(
        self,
        seed: str,
        pseudonym: str,
        deidentify: bool,
        keep_originals: bool,
        buffers: Mapping[str, bytes] | None = None,
    ) -> None:
        # Templates per series: the first file of a series takes the full de-identification,
        # the others reuse its result where deid_template shows it gives the same bytes.
        self._deidentifier = (
            SeriesDeidentifier(Deidentifier(seed, pseudonym, keep_originals=keep_originals))
            if deidentify
            else None
        )
        self._buffers: Mapping[str, bytes] = buffers or {}

    def log_summary(self, case_code: str) -> None:
        """Log how many files the series templates de-identified, and why others were not."""
        if self._deidentifier is None:
            return
        logger.info(
            "Ingest for case %s de-identified %d files from series templates; "
            "full path after a template: %s",
            case_code,
            self._deidentifier.templated,
            dict(self._deidentifier.fallbacks) or "none",
        )

    def __call__(self, path: str) -> _StoredFile | _UnreadableFile:
        data = self._buffers.get(path)
        try:
            if self._deidentifier is None:
                # _unpack keeps files in memory only when they are de-identified.
                instance = read_identified_file(path)
            elif data is not None:
                instance = self._deidentifier.deidentify_bytes(data)
            else:
                instance = self._deidentifier.deidentify_file(path)
        except (OSError, ValueError, EOFError, AttributeError, InvalidDicomError) as error:
            # A file whose header was readable can still fail on its pixel data.
            return _UnreadableFile(path, type(error).__name__)
        except (TypeError, OverflowError) as error:
            # dicognito's handlers raise these on values they cannot parse, such as a date in
            # year 1 or a name of separators only. Only this file is skipped.
            return _UnreadableFile(path, type(error).__name__, "deidentification_failed")
        name, digest = store_instance_chunks([instance.header, instance.pixels])
        return _StoredFile(
            path=path,
            storage_name=name,
            sha256=digest,
            size_bytes=instance.size,
            study_instance_uid=instance.study_instance_uid,
            series_instance_uid=instance.series_instance_uid,
            sop_instance_uid=instance.sop_instance_uid,
            original_name=instance.original_name,
            original_id=instance.original_id,
            study_description=instance.study_description,
            series_description=instance.series_description,
            source_study_hash=study_fingerprint(instance.original_study_instance_uid),
        )


# Salt of the study fingerprint: with SECRET_KEY it makes the HMAC key. A new SECRET_KEY makes
# new fingerprints, so studies stored before the change are no longer matched.
_STUDY_FINGERPRINT_SALT = "ceht.ingest.source-study-fingerprint"


def study_fingerprint(original_study_uid: str) -> str:
    """Return the HMAC-SHA256 (hex) of a StudyInstanceUID as received, or "" when it is empty.

    The same study gives the same fingerprint in every case, whatever UIDs de-identification
    gives it there; without the key the original UID cannot be recovered or tested for.
    """
    if not original_study_uid:
        return ""
    return salted_hmac(_STUDY_FINGERPRINT_SALT, original_study_uid, algorithm="sha256").hexdigest()


# Requests with at least DEID_POOL_MIN_FILES files can de-identify and store in forked
# processes, one per core up to DEID_PROCESSES. With series templates (deid_template) most files
# cost little Python, and on the 2-core development machine under load the pool of 2 was slower
# than one process (benchmarks/bench_ingest.py, docs/benchmarks.md), so it is off (1). A host
# with idle cores can raise it.
DEID_POOL_MIN_FILES = 24
DEID_PROCESSES = 1
_pool_storer: _FileStorer | None = None
# In-memory uploads of each _store_files call that runs a pool, by a key unique to the call.
# Threads of one server process can run pools at once, so each call adds and removes only its
# own entry, and its forked processes look up that key.
_pool_buffers: dict[str, Mapping[str, bytes]] = {}


def _init_pool_process(
    seed: str, pseudonym: str, deidentify: bool, keep: bool, buffers_key: str
) -> None:
    global _pool_storer
    # A forked process inherits _pool_buffers, the in-memory uploads, without a copy.
    _pool_storer = _FileStorer(seed, pseudonym, deidentify, keep, _pool_buffers[buffers_key])


def _store_in_pool_process(path: str) -> _StoredFile | _UnreadableFile:
    assert _pool_storer is not None, "pool process started without its initializer"
    return _pool_storer(path)


def _store_files(
    paths: list[str],
    seed: str,
    pseudonym: str,
    deidentify: bool,
    keep: bool,
    buffers: Mapping[str, bytes] | None = None,
) -> list[_StoredFile | _UnreadableFile]:
    """Store ``paths`` in order, in a process pool when there are enough files and cores.

    A path that is a key of ``buffers`` is read from those bytes.
    """
    processes = min(DEID_PROCESSES, os.cpu_count() or 1)
    if processes > 1 and len(paths) >= DEID_POOL_MIN_FILES and "fork" in mp.get_all_start_methods():
        buffers_key = uuid.uuid4().hex
        _pool_buffers[buffers_key] = buffers or {}
        try:
            # fork: the processes inherit the loaded code and settings, so they start in
            # milliseconds; they touch no database connection and exit without cleanup.
            with ProcessPoolExecutor(
                max_workers=processes,
                mp_context=mp.get_context("fork"),
                initializer=_init_pool_process,
                initargs=(seed, pseudonym, deidentify, keep, buffers_key),
            ) as pool:
                chunk = max(1, len(paths) // (processes * 4))
                return list(pool.map(_store_in_pool_process, paths, chunksize=chunk))
        except BrokenProcessPool:
            logger.warning(
                "De-identification pool failed; storing %d files in the request process",
                len(paths),
            )
        finally:
            del _pool_buffers[buffers_key]
    storer = _FileStorer(seed, pseudonym, deidentify, keep, buffers)
    results = [storer(path) for path in paths]
    storer.log_summary(pseudonym)
    return results


def ingest_files(
    case: Case,
    role: str,
    hours_after_mt: Decimal | float | str | None,
    files: Sequence[NamedFile],
    user: User,
    *,
    upload_id: uuid.UUID | str | None = None,
    complete: bool = True,
    case_created: bool = False,
    client_address: str | None = None,
) -> IngestReport:
    """Store the DICOM instances among ``files`` for ``case`` and return the upload report.

    Files that are not usable (not DICOM, DICOMDIR, duplicates, truncated, other modality,
    empty) are listed in the report and the rest is stored. Raises IngestError, with nothing
    stored, when the user lacks the coordinator role, the role or timing is invalid, or a zip
    archive breaks a safety limit. With ``complete`` the upload is finished in the same call
    (see ``complete_upload``); the upload page sends ``complete=False`` for each batch.
    ``case_created`` says that this request created ``case``: completing an upload that
    stored nothing then deletes the case again, so no empty case is left behind.
    """
    _check_request(user, role)
    hours = _parse_hours(hours_after_mt)
    upload = _get_or_create_upload(case, role, hours, user, upload_id)
    if case_created and not upload.created_case:
        Upload.objects.filter(pk=upload.pk).update(created_case=True)
    report = IngestReport(upload_id=str(upload.upload_id), case=case.code, role=role)
    report.files_received = len(files)

    with tempfile.TemporaryDirectory(prefix="ceht-ingest-") as work_dir:
        # Files that arrived in memory stay there (buffers) and are de-identified from their
        # bytes, so only their de-identified bytes are written, once, to storage.
        buffers: dict[str, bytes] = {}
        display_names = _unpack(files, Path(work_dir), report, buffers)
        report.files_examined = len(display_names) + len(report.skipped)
        raw_dir = Path(work_dir) / "raw"
        scan = scan_buffers(_scan_order(raw_dir, buffers), buffers)
        for skipped in scan.skipped:
            report.skipped.append(
                {
                    "path": _display(skipped.path, display_names),
                    "reason": skipped.reason,
                    "detail": skipped.detail,
                }
            )
        prepared = _deidentify_all(case, scan.series, display_names, report, buffers)
        written = {item.stored.sha256: item.stored.storage_name for item in prepared}
        prepared = _drop_inconsistent(prepared, report)
    report.skipped_reasons = {str(item["path"]): str(item["reason"]) for item in report.skipped}
    report.skipped = summarise_skipped(report.skipped)

    # Files go to storage before the transaction, so a slow disk never holds row locks.
    studies = _record_instances(case, role, hours, user, prepared, report)
    _remove_unreferenced(written, upload.upload_id)
    _merge_batch_report(upload, studies, report)
    logger.info(
        "Upload batch received upload_id=%s case_id=%s files=%d stored=%d already=%d skipped=%d",
        upload.upload_id,
        case.pk,
        report.files_received,
        report.instances_stored,
        report.instances_already_stored,
        len(report.skipped),
    )
    if complete:
        completed = complete_upload(upload.upload_id, user, client_address=client_address)
        completed.instance_results = report.instance_results
        completed.skipped_reasons = report.skipped_reasons
        return completed
    return report


def complete_upload(
    upload_id: uuid.UUID | str, user: User, *, client_address: str | None = None
) -> IngestReport:
    """Choose the series of each study of the upload, flag problems, and queue inference.

    Idempotent: completing an upload twice re-reads the same studies and queues no second job.
    When the upload created its case and nothing of the case was stored, the case (and this
    upload's row) is deleted again, and the report sets ``case_removed``.
    """
    from webapp.jobs.services import enqueue_inference

    if not roles.has_any_role(user, roles.COORDINATOR, roles.ADMIN):
        raise IngestError(
            "Completing an upload needs the coordinator or admin role.", code="role_required"
        )
    upload = Upload.objects.select_related("case").filter(upload_id=upload_id).first()
    if upload is None:
        raise IngestError(
            f"Upload {upload_id} not found; start a new upload.", code="upload_not_found"
        )

    study_reports = []
    warnings: list[dict[str, str]] = []
    for study in upload.studies.order_by("pk"):
        study_report, study_warnings = refresh_study_series(study)
        study_reports.append(study_report)
        warnings.extend(study_warnings)

    jobs: list[dict[str, Any]] = []
    with transaction.atomic():
        locked = Upload.objects.select_for_update().get(pk=upload.pk)
        locked.status = Upload.Status.COMPLETED
        locked.completed_at = timezone.now()
        merged = dict(locked.report)
        merged["studies"] = study_reports
        merged["warnings"] = _unique(merged.get("warnings", []) + warnings)
        changed = {
            report["study_instance_uid"]
            for report in study_reports
            if report["chosen_series_changed"]
        }
        for study in locked.studies.all():
            if study.series.filter(is_chosen=True).exists():
                # A finished job runs again only when this upload changed the chosen series.
                job = enqueue_inference(
                    study, requested_by=user, force=study.study_instance_uid in changed
                )
                jobs.append(_job_entry(study, job))
        merged["jobs"] = jobs
        merged["completed"] = True
        locked.report = merged
        locked.save(update_fields=["status", "completed_at", "report"])
        report = report_from_upload(locked)
        report.case_removed = _remove_empty_new_case(locked)
        record_audit_event(
            Action.UPLOAD_RECEIVED,
            actor=user,
            target=upload.case,
            client_address=client_address,
            details={
                "upload_id": str(upload.upload_id),
                "batches": locked.batch_count,
                "instances_stored": merged.get("instances_stored", 0),
                "studies": [study["study_instance_uid"] for study in study_reports],
                "case_removed": report.case_removed,
            },
        )
    if report.case_removed:
        logger.warning(
            "Upload upload_id=%s stored nothing; removed the case_id=%s it had created",
            upload.upload_id,
            upload.case_id,
        )
    return report


def _remove_empty_new_case(upload: Upload) -> bool:
    """Delete the case that ``upload`` created if it is still empty; return whether it did.

    Runs inside the completing transaction. The case row is locked, so a concurrent upload to
    the same case either finished before (and its study or upload row keeps the case) or waits.
    A case that existed before the upload, or has any study or another upload, is never touched.
    """
    if not upload.created_case:
        return False
    case = Case.objects.select_for_update().get(pk=upload.case_id)
    if case.studies.exists() or case.uploads.exclude(pk=upload.pk).exists():
        return False
    upload.delete()
    case.delete()
    return True


def _job_entry(study: Study, job: Any) -> dict[str, Any]:
    """Describe what completing the upload did to the study's inference job, truthfully."""
    from webapp.jobs.models import InferenceJob

    # enqueue_inference leaves a finished job alone unless forced, so a job that is still
    # succeeded or failed here was not queued by this upload.
    if job.status == InferenceJob.Status.SUCCEEDED:
        outcome, message = "already_analysed", "already analysed; no new job"
    elif job.status == InferenceJob.Status.FAILED:
        outcome, message = (
            "failed_earlier",
            "the earlier analysis failed and no new job was queued; the case page shows "
            "the error and what to do",
        )
    elif job.status == InferenceJob.Status.RUNNING:
        outcome, message = "running", "analysis running"
    else:
        outcome, message = "queued", "analysis queued"
    return {
        "study_instance_uid": study.study_instance_uid,
        "job_id": job.pk,
        "status": job.status,
        "outcome": outcome,
        "message": message,
    }


def report_from_upload(upload: Upload) -> IngestReport:
    """Return the accumulated report of every batch of ``upload``."""
    data = upload.report or {}
    return IngestReport(
        upload_id=str(upload.upload_id),
        case=upload.case.code,
        role=upload.role,
        completed=upload.status == Upload.Status.COMPLETED,
        files_received=int(data.get("files_received", 0)),
        instances_stored=int(data.get("instances_stored", 0)),
        instances_already_stored=int(data.get("instances_already_stored", 0)),
        studies=list(data.get("studies", [])),
        skipped=list(data.get("skipped", [])),
        warnings=list(data.get("warnings", [])),
        jobs=list(data.get("jobs", [])),
        files_examined=int(data.get("files_examined", 0)),
    )


def refresh_study_series(study: Study) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Re-scan every stored instance of ``study``, choose its series, and update the rows.

    Returns the study's part of the report and its warnings. Scanning the stored files, not
    only the last batch, makes the choice independent of how the upload was split.
    """
    names = list(Instance.objects.filter(series__study=study).values_list("file", flat=True))
    scan = scan_paths([stored_path(name) for name in names]) if names else None
    warnings: list[dict[str, str]] = []
    series_reports: list[dict[str, Any]] = []

    with transaction.atomic():
        # Lock the study: two uploads of the same study completing at once would otherwise
        # both clear and set is_chosen, and the one-chosen-series constraint would fail.
        study = Study.objects.select_for_update().get(pk=study.pk)
        chosen_before = _chosen_series_state(study)
        Series.objects.filter(study=study, is_chosen=True).update(is_chosen=False)
        for info in scan.series if scan is not None else []:
            positions = _slice_positions(info, warnings) if info.chosen else {}
            updated = Series.objects.filter(
                study=study, series_instance_uid=info.series_instance_uid
            ).update(
                kind=SERIES_KIND_BY_SCAN_KIND.get(info.kind, Series.Kind.OTHER),
                image_count=info.n_instances,
                is_chosen=info.chosen,
                choice_reason=info.reason,
                burned_in_annotation=info.burned_in_annotation,
                kernel=info.kernel[:64],
                slice_thickness_mm=info.slice_thickness_mm,
            )
            if updated and positions:
                _store_slice_positions(positions)
            for note in info.notes:
                warnings.append({"code": note.code, "message": f"{info.label}: {note.message}"})
            series_reports.append(_series_report(info))
        warnings.extend(_study_warnings(study))
        chosen_changed = _chosen_series_state(study) != chosen_before

    chosen = next((s for s in series_reports if s["chosen"]), None)
    if chosen is None:
        warnings.append(
            {
                "code": "no_usable_series",
                "message": f"Study {study.study_instance_uid} has no series that qualifies for "
                "analysis (an axial CT series of at least 3 images); upload the axial "
                "soft-tissue series.",
            }
        )
    study_report = {
        "study_instance_uid": study.study_instance_uid,
        "role": study.role,
        "hours_after_mt": None if study.hours_after_mt is None else float(study.hours_after_mt),
        "out_of_window": study.out_of_window,
        "series": series_reports,
        "chosen_series_instance_uid": chosen["series_instance_uid"] if chosen else None,
        # True when this refresh chose another series or added images to the chosen one, so
        # earlier predictions no longer describe the stored series.
        "chosen_series_changed": chosen_changed,
    }
    return study_report, warnings


def _store_slice_positions(positions: dict[str, float]) -> None:
    """Set Instance.slice_position_mm from SOPInstanceUID -> position, in one statement."""
    if connection.vendor != "postgresql":
        instances = list(
            Instance.objects.filter(sop_instance_uid__in=list(positions)).only(
                "pk", "sop_instance_uid"
            )
        )
        for instance in instances:
            instance.slice_position_mm = positions[instance.sop_instance_uid]
        Instance.objects.bulk_update(instances, ["slice_position_mm"], batch_size=500)
        return
    # bulk_update builds a CASE with one branch per row: 0.1-0.3 s of Python for 200 rows.
    # UPDATE ... FROM (VALUES ...) sends the pairs as parameters instead.
    table = connection.ops.quote_name(Instance._meta.db_table)
    uid_column = connection.ops.quote_name(Instance._meta.get_field("sop_instance_uid").column)
    position_column = connection.ops.quote_name(
        Instance._meta.get_field("slice_position_mm").column
    )
    items = list(positions.items())
    for start in range(0, len(items), 1000):
        batch = items[start : start + 1000]
        values = ", ".join(["(%s, %s::double precision)"] * len(batch))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS instance SET {position_column} = new.position "  # noqa: S608
                f"FROM (VALUES {values}) AS new(uid, position) "
                f"WHERE instance.{uid_column} = new.uid",
                [value for pair in batch for value in pair],
            )


def _chosen_series_state(study: Study) -> tuple[str, int] | None:
    chosen = Series.objects.filter(study=study, is_chosen=True).first()
    if chosen is None:
        return None
    # image_count is what the last refresh counted, so images added since then show as a change.
    return chosen.series_instance_uid, chosen.image_count


def deidentification_seed(case: Case) -> str:
    """Return the case's de-identification seed, creating it on first use."""
    try:
        with transaction.atomic():
            key, _ = DeidentificationKey.objects.get_or_create(
                case=case, defaults={"seed": secrets.token_hex(32)}
            )
    except IntegrityError:
        # Two first uploads for one case raced; the other created the key.
        key = DeidentificationKey.objects.get(case=case)
    return key.seed


def _check_request(user: User, role: str) -> None:
    if not roles.has_any_role(user, roles.COORDINATOR, roles.ADMIN):
        raise IngestError(
            f"User {user.get_username()!r} needs the coordinator or admin role to upload studies.",
            code="role_required",
        )
    if role not in Study.Role.values:
        raise IngestError(
            f"Study role {role!r} is invalid; use one of {', '.join(Study.Role.values)}.",
            code="invalid_role",
        )


def _parse_hours(value: Decimal | float | str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        hours = Decimal(str(value))
    except ArithmeticError:
        raise IngestError(
            f"hours_after_mt {value!r} is not a number; enter the hours after thrombectomy, "
            "e.g. 2.5.",
            code="invalid_hours",
        ) from None
    if not hours.is_finite() or hours < 0 or hours >= 10_000:
        raise IngestError(
            f"hours_after_mt {value!r} is outside 0-9999; enter the hours after thrombectomy.",
            code="invalid_hours",
        )
    return hours.quantize(Decimal("0.01"))


def _get_or_create_upload(
    case: Case,
    role: str,
    hours: Decimal | None,
    user: User,
    upload_id: uuid.UUID | str | None,
) -> Upload:
    if upload_id is None:
        return Upload.objects.create(case=case, role=role, hours_after_mt=hours, created_by=user)
    try:
        parsed = uuid.UUID(str(upload_id))
    except ValueError:
        raise IngestError(
            f"upload_id {upload_id!r} is not a UUID; let the upload page create it.",
            code="invalid_upload_id",
        ) from None
    try:
        with transaction.atomic():
            upload, _ = Upload.objects.get_or_create(
                upload_id=parsed,
                defaults={"case": case, "role": role, "hours_after_mt": hours, "created_by": user},
            )
    except IntegrityError:
        # Parallel batches of a new upload: the first one created the row.
        upload = Upload.objects.get(upload_id=parsed)
    if upload.case_id != case.pk or upload.role != role:
        raise IngestError(
            f"Upload {parsed} belongs to another case or role; start a new upload.",
            code="upload_mismatch",
        )
    return upload


def _unpack(
    files: Sequence[NamedFile],
    work_dir: Path,
    report: IngestReport,
    buffers: dict[str, bytes],
) -> dict[str, str]:
    """Place uploads below ``work_dir/raw``, extracting zips; return temp path -> display name.

    With de-identification on, an upload held in memory that is not a zip is not written: its
    bytes go to ``buffers`` under the path it would have had.
    """
    raw_dir = work_dir / "raw"
    raw_dir.mkdir()
    limits = ZipLimits.from_settings()
    # One budget for every archive of the request, so many small zips cannot add up past it.
    budget = limits.budget()
    display_names: dict[str, str] = {}
    # Without de-identification the stored bytes are the upload's bytes, read from disk.
    keep_in_memory = bool(settings.INGEST["DEIDENTIFY"])
    for index, named in enumerate(files):
        name = named.relative_path or named.file.name or f"file-{index + 1}"
        if unsafe_entry_name(name):
            report.skipped.append(
                {
                    "path": name,
                    "reason": "unsafe_path",
                    "detail": "the file's path is absolute or contains '..'; it was not stored",
                }
            )
            continue
        # The index prefix keeps two files with the same name apart without a folder per file
        # (creating and removing 200 folders cost about 0.8 s per 200-file batch).
        target = raw_dir / f"{index:05d}_{PurePosixPath(name.replace(chr(92), '/')).name}"
        data = _bytes_in_memory(named.file) if keep_in_memory else None
        if data is not None and not _claims_zip_bytes(name, data[:4]):
            buffers[str(target)] = data
            display_names[str(target)] = name
            continue
        _place_upload(named.file, target)
        if _claims_zip(name, target):
            extracted_dir = raw_dir / f"{index:05d}.zip"
            try:
                if _first_bytes(target) not in _ZIP_SIGNATURES:
                    raise ArchiveRejectedError(
                        "no zip signature at the start of the file", code="zip_invalid"
                    )
                rejected = extract_upload_zip(target, name, extracted_dir, limits, budget)
            except ArchiveRejectedError as error:
                if error.code != "zip_invalid":
                    # A safety limit (size, ratio, entries, unsafe names) rejects the request.
                    logger.warning("Upload rejected a zip archive code=%s", error.code)
                    raise IngestError(error.message, code=error.code) from None
                # An unreadable archive is one bad file: it is listed, the rest is stored.
                logger.warning("Upload skipped an unreadable zip archive (file %d)", index + 1)
                report.skipped.append(
                    {
                        "path": name,
                        "reason": "broken_archive",
                        "detail": "this .zip could not be opened as a zip archive "
                        f"({_zip_failure(error)}); create the archive again, or upload "
                        "the folder instead",
                    }
                )
                target.unlink()
                continue
            target.unlink()
            report.skipped.extend(
                {"path": f"{name}/{entry.name}", "reason": entry.reason, "detail": entry.detail}
                for entry in rejected
            )
            for path in extracted_dir.rglob("*"):
                if not path.is_file():
                    continue
                inner_name = f"{name}/{path.relative_to(extracted_dir).as_posix()}"
                if _claims_zip(inner_name, path):
                    # Not unpacked: one level keeps the limits simple and the report readable.
                    path.unlink()
                    report.skipped.append(
                        {
                            "path": inner_name,
                            "reason": "nested_archive",
                            "detail": "a zip inside the zip is not unpacked; upload the inner "
                            "zip (or its folder) on its own",
                        }
                    )
                    continue
                display_names[str(path)] = inner_name
        else:
            display_names[str(target)] = name
    return display_names


def _first_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(4)
    except OSError:
        return b""


# Local file header, end of an empty archive's directory, spanned archive marker.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def _claims_zip(name: str, path: Path) -> bool:
    """Return whether a file is meant as a zip archive: by its name or by its first bytes."""
    return _claims_zip_bytes(name, _first_bytes(path))


def _claims_zip_bytes(name: str, first_bytes: bytes) -> bool:
    return name.lower().endswith(".zip") or first_bytes in _ZIP_SIGNATURES


def _bytes_in_memory(upload: IncomingFile) -> bytes | None:
    """Return the bytes of an upload that Django keeps in memory, or None for one on disk."""
    if isinstance(upload, InMemoryUploadedFile) and isinstance(upload.file, io.BytesIO):
        # getvalue shares the buffer's bytes until the next write, so it copies nothing.
        return upload.file.getvalue()
    return None


def _scan_order(raw_dir: Path, buffers: Mapping[str, bytes]) -> list[str]:
    """List the upload's files and zip folders in the order scan_paths walks ``raw_dir``.

    scan_paths lists a folder's files, shorter names first (iter_files), then its folders by
    name. The in-memory files take their places among the files, so a scan gives the same
    order, and so the same duplicates and the same report, as when every file was on disk.
    """
    files = [Path(path).name for path in buffers]
    folders = []
    with os.scandir(raw_dir) as entries:
        for entry in entries:
            if entry.is_dir():
                folders.append(entry.name)
            else:
                files.append(entry.name)
    files.sort(key=lambda name: (len(name), name))
    folders.sort()
    return [str(raw_dir / name) for name in files + folders]


def _zip_failure(error: ArchiveRejectedError) -> str:
    """Return the zip reader's own words for why an archive cannot be read."""
    cause = error.__cause__
    root = cause.__cause__ if cause is not None and cause.__cause__ is not None else cause
    return str(root) if root is not None else error.message


def _place_upload(upload: IncomingFile, target: Path) -> None:
    """Put the uploaded bytes at ``target``, by a hard link when Django spooled them to disk."""
    temporary = getattr(upload, "temporary_file_path", None)
    if callable(temporary):
        # Requests above FILE_UPLOAD_MAX_MEMORY_SIZE arrive as temporary files: a link costs
        # nothing, where a copy rewrites every byte. Ingest never writes to the linked file.
        try:
            os.link(temporary(), target)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy below
    with open(target, "wb") as sink:
        for chunk in upload.chunks():
            sink.write(chunk)


def _display(path: str, display_names: dict[str, str]) -> str:
    return display_names.get(path, Path(path).name)


def _deidentify_all(
    case: Case,
    series_list: list[SeriesInfo],
    display_names: dict[str, str],
    report: IngestReport,
    buffers: Mapping[str, bytes] | None = None,
) -> list[_PreparedInstance]:
    """De-identify and store the files of every CT series; unreadable files go to the report.

    A path that is a key of ``buffers`` is read from those bytes.
    """
    deidentify = bool(settings.INGEST["DEIDENTIFY"])
    keep = mapping_enabled()
    seed = deidentification_seed(case) if deidentify else ""
    by_path: dict[str, tuple[SeriesInfo, int | None, str]] = {}
    for info in series_list:
        if info.modality != "CT":
            for path in info.paths:
                report.skipped.append(
                    {
                        "path": _display(path, display_names),
                        "reason": "other_modality",
                        "detail": f"modality {info.modality or 'missing'}, not CT; not stored",
                    }
                )
            continue
        for item in info.instances:
            by_path[item.path] = (info, item.instance_number, item.sop_class_uid)

    prepared: list[_PreparedInstance] = []
    unreadable = 0
    for result in _store_files(list(by_path), seed, case.code, deidentify, keep, buffers):
        if isinstance(result, _UnreadableFile):
            unreadable += 1
            detail = (
                f"a value in its header could not be de-identified ({result.error_type}); "
                "check its dates, times and names at the source and send it again"
                if result.reason == "deidentification_failed"
                else f"could not be read as a whole ({result.error_type}); export the file again"
            )
            report.skipped.append(
                {
                    "path": _display(result.path, display_names),
                    "reason": result.reason,
                    "detail": detail,
                }
            )
            continue
        info, number, sop_class = by_path[result.path]
        display = _display(result.path, display_names)
        prepared.append(_PreparedInstance(result, info, number, display, sop_class))
    if unreadable:
        logger.warning("Ingest of case_id=%s skipped %d unreadable files", case.pk, unreadable)
    return prepared


def _record_instances(
    case: Case,
    role: str,
    hours: Decimal | None,
    user: User,
    prepared: list[_PreparedInstance],
    report: IngestReport,
) -> list[Study]:
    """Create the study, series and instance rows; existing rows are kept as they are."""
    studies: dict[str, Study] = {}
    by_series: dict[str, list[_PreparedInstance]] = {}
    for item in prepared:
        by_series.setdefault(item.stored.series_instance_uid, []).append(item)

    for series_uid, items in by_series.items():
        first = items[0]
        study_uid = first.stored.study_instance_uid
        with transaction.atomic():
            study = studies.get(study_uid)
            if study is None:
                # get_or_create inserts under the unique StudyInstanceUID: when two uploads of
                # the same study race, the second INSERT waits for the first transaction and
                # then fails, and get_or_create reads the committed row instead.
                study, created = Study.objects.get_or_create(
                    study_instance_uid=study_uid,
                    defaults={
                        "case": case,
                        "role": role,
                        "hours_after_mt": hours,
                        "uploaded_by": user,
                        "modality": "CT",
                        # As stored: the basic profile removes StudyDescription.
                        "description": first.stored.study_description[:128],
                        "source_study_hash": first.stored.source_study_hash,
                    },
                )
                if study.case_id != case.pk:
                    report.warnings.append(
                        {
                            "code": "study_in_other_case",
                            "message": f"Study {study_uid} is already stored for another case; "
                            "its files were not added to this case.",
                        }
                    )
                    report.instance_results.extend(
                        _instance_result(item, "other_case") for item in items
                    )
                    continue
                if not created and (study.role != role):
                    report.warnings.append(
                        {
                            "code": "study_role_kept",
                            "message": f"Study {study_uid} was stored earlier as {study.role}; "
                            f"this upload as {role} did not change that. If {study.role} is "
                            "wrong, change the role on the case page (Change role).",
                        }
                    )
                if first.stored.source_study_hash and not study.source_study_hash:
                    # A study stored before the fingerprint existed gets it on its next upload.
                    study.source_study_hash = first.stored.source_study_hash
                    study.save(update_fields=["source_study_hash"])
                _warn_if_in_other_cases(study, report)
                studies[study_uid] = study

            info = first.series
            series, _ = Series.objects.get_or_create(
                series_instance_uid=series_uid,
                defaults={
                    "study": study,
                    "series_number": info.series_number,
                    # As stored: the descriptor after de-identification cleaned it.
                    "description": first.stored.series_description[:128],
                    "modality": info.modality[:16],
                    "kind": SERIES_KIND_BY_SCAN_KIND.get(info.kind, Series.Kind.OTHER),
                    "kernel": info.kernel[:64],
                    "slice_thickness_mm": info.slice_thickness_mm,
                    "burned_in_annotation": info.burned_in_annotation,
                },
            )
            uids = [item.stored.sop_instance_uid for item in items]
            existing = {
                uid: (sha256, name)
                for uid, sha256, name in Instance.objects.filter(
                    sop_instance_uid__in=uids
                ).values_list("sop_instance_uid", "sha256", "file")
            }
            conflicts = [
                item
                for item in items
                if item.stored.sop_instance_uid in existing
                and existing[item.stored.sop_instance_uid][0] != item.stored.sha256
                and not same_image(
                    existing[item.stored.sop_instance_uid][1], item.stored.storage_name
                )
            ]
            for item in conflicts:
                report.skipped.append(
                    {
                        "path": item.display_path,
                        "reason": "conflicting_instance",
                        "detail": "an image with the same SOPInstanceUID but other content is "
                        "already stored; the stored one was kept. Two different images must "
                        "not share a UID: check the export, and ask the site to resend it.",
                    }
                )
            report.instance_results.extend(_instance_result(item, "conflict") for item in conflicts)
            items = [item for item in items if item not in conflicts]
            rows = [
                Instance(
                    series=series,
                    sop_instance_uid=item.stored.sop_instance_uid,
                    sop_class_uid=item.sop_class_uid,
                    instance_number=item.instance_number,
                    file=item.stored.storage_name,
                    sha256=item.stored.sha256,
                    size_bytes=item.stored.size_bytes,
                )
                for item in items
                if item.stored.sop_instance_uid not in existing
            ]
            # ON CONFLICT DO NOTHING on the unique SOPInstanceUID: an instance inserted by a
            # concurrent upload since the query above is kept, and this row is dropped.
            Instance.objects.bulk_create(rows, ignore_conflicts=True)
            identities = {
                (item.stored.original_name, item.stored.original_id)
                for item in items
                if item.stored.original_name or item.stored.original_id
            }
            if identities:
                record_identities(case, identities)
            new = {row.sop_instance_uid for row in rows}
            report.instance_results.extend(
                _instance_result(
                    item, "stored" if item.stored.sop_instance_uid in new else "already_stored"
                )
                for item in items
            )
            report.instances_stored += len(rows)
            report.instances_already_stored += len(items) - len(rows)
    if any(item["reason"] == "conflicting_instance" for item in report.skipped):
        logger.warning("Ingest of case_id=%s kept stored instances over conflicting files", case.pk)
        report.skipped_reasons.update(
            {str(item["path"]): str(item["reason"]) for item in report.skipped}
        )
        report.skipped = summarise_skipped(report.skipped)
    return list(studies.values())


# Attributes that two stored files of the same image share, besides the pixel data.
SAME_IMAGE_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "ImageType",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "GantryDetectorTilt",
    "ConvolutionKernel",
    "BurnedInAnnotation",
)


def _remove_unreferenced(written: dict[str, str], upload_id: uuid.UUID) -> None:
    """Delete the files this batch wrote that no instance row refers to.

    A file is left unreferenced when its SOPInstanceUID is already stored with other bytes
    (a conflict, or the same image de-identified by older code) or belongs to another case.
    The UID is inside the bytes, so no later row can refer to such a file either: the UID's
    row exists already, and the UID is unique.
    """
    referenced = set(
        Instance.objects.filter(sha256__in=list(written)).values_list("sha256", flat=True)
    )
    unreferenced = [name for sha256, name in written.items() if sha256 not in referenced]
    for name in unreferenced:
        default_storage.delete(name)
    if unreferenced:
        logger.info(
            "Removed %d stored file(s) no instance refers to, upload_id=%s",
            len(unreferenced),
            upload_id,
        )


def same_image(stored_name: str, new_name: str) -> bool:
    """Return whether two stored files hold the same image in other header bytes.

    Re-uploading a study that an earlier version of the de-identification stored gives the
    same UIDs (they depend only on the original UIDs and the case seed) but other header
    bytes, so other hashes. Such a file is the same image: same pixel data element and same
    SAME_IMAGE_KEYWORDS values. The stored file stays as it is; the stored bytes are the truth.
    Anything else under the same SOPInstanceUID is a conflict.
    """
    try:
        stored = pydicom.dcmread(stored_path(stored_name), force=True)
        new = pydicom.dcmread(stored_path(new_name), force=True)
    except (OSError, ValueError, EOFError, InvalidDicomError):
        return False
    if "PixelData" not in stored or stored.get("PixelData") != new.get("PixelData"):
        return False
    if stored.file_meta.get("TransferSyntaxUID") != new.file_meta.get("TransferSyntaxUID"):
        return False
    return all(stored.get(keyword) == new.get(keyword) for keyword in SAME_IMAGE_KEYWORDS)


# DICOM UIDs (VR UI) hold at most 64 characters; the database columns have the same limit.
MAX_UID_LENGTH = 64


def _warn_if_in_other_cases(study: Study, report: IngestReport) -> None:
    """Warn when the same original study is stored in another case (not rejected).

    De-identification gives the study new UIDs in each case, so only the fingerprint of the
    original StudyInstanceUID shows that two cases hold one patient's study.
    """
    if not study.source_study_hash:
        return
    others = list(
        Study.objects.filter(source_study_hash=study.source_study_hash)
        .exclude(case_id=study.case_id)
        .select_related("case")
        .order_by("case__code")
    )
    if not others:
        return
    codes = sorted({other.case.code for other in others})
    names = ", ".join(codes)
    report.warnings.append(
        {
            "code": "duplicate_study_other_case",
            "message": f"This study was already uploaded to case {names}; a cohort would count "
            "it twice. Check that both cases are meant to hold it.",
        }
    )
    logger.warning(
        "Ingest of case_id=%s study_id=%s: same original study as study_id=%s (case_id=%s)",
        study.case_id,
        study.pk,
        ",".join(str(other.pk) for other in others),
        ",".join(str(other.case_id) for other in others),
    )


def _drop_inconsistent(
    prepared: list[_PreparedInstance], report: IngestReport
) -> list[_PreparedInstance]:
    """Skip instances that cannot be stored as they are, naming the file and what to do.

    - a UID that is empty or longer than 64 characters (possible with de-identification off);
    - a second file of the batch with the SOPInstanceUID of an earlier one: a plain duplicate
      when the content is the same, a conflict when it differs (the first is kept);
    - files whose StudyInstanceUID differs from the rest of their series: a series belongs to
      one study, so the series is stored under its most common study and the others skipped.
    """
    kept: list[_PreparedInstance] = []
    first_by_uid: dict[str, _PreparedInstance] = {}
    for item in prepared:
        stored = item.stored
        uids = (stored.study_instance_uid, stored.series_instance_uid, stored.sop_instance_uid)
        if any(not uid or len(uid) > MAX_UID_LENGTH for uid in uids):
            report.skipped.append(
                {
                    "path": item.display_path,
                    "reason": "invalid_uid",
                    "detail": f"a study, series or instance UID is empty or longer than "
                    f"{MAX_UID_LENGTH} characters; not stored. Export the file again, or turn "
                    "de-identification on (it replaces the UIDs).",
                }
            )
            continue
        first = first_by_uid.get(stored.sop_instance_uid)
        if first is not None:
            same = first.stored.sha256 == stored.sha256
            report.skipped.append(
                {
                    "path": item.display_path,
                    "reason": "duplicate" if same else "conflicting_instance",
                    "detail": f"same image as {first.display_path}; stored once"
                    if same
                    else f"has the SOPInstanceUID of {first.display_path} but other content; "
                    "that file was kept. Two different images must not share a UID: check "
                    "the export.",
                }
            )
            continue
        first_by_uid[stored.sop_instance_uid] = item
        kept.append(item)

    studies_of_series: dict[str, dict[str, int]] = {}
    for item in kept:
        counts = studies_of_series.setdefault(item.stored.series_instance_uid, {})
        counts[item.stored.study_instance_uid] = counts.get(item.stored.study_instance_uid, 0) + 1
    # max() keeps the first study among equals, which is the study of the series' first file.
    majority = {
        series: max(counts, key=lambda study: counts[study])
        for series, counts in studies_of_series.items()
    }
    consistent = []
    for item in kept:
        study = majority[item.stored.series_instance_uid]
        if item.stored.study_instance_uid == study:
            consistent.append(item)
            continue
        count = studies_of_series[item.stored.series_instance_uid][study]
        report.skipped.append(
            {
                "path": item.display_path,
                "reason": "inconsistent_study",
                "detail": f"its StudyInstanceUID differs from the other {count} file(s) of "
                f"{item.series.label}; the series was stored under their study. Export the "
                "study again from the scanner or PACS.",
            }
        )
    return consistent


def _instance_result(item: _PreparedInstance, status: str) -> dict[str, str]:
    stored = item.stored
    return {
        "path": item.display_path,
        "status": status,
        "sop_class_uid": item.sop_class_uid,
        "study_instance_uid": stored.study_instance_uid,
        "series_instance_uid": stored.series_instance_uid,
        "sop_instance_uid": stored.sop_instance_uid,
    }


def _merge_batch_report(upload: Upload, studies: list[Study], report: IngestReport) -> None:
    # NOTE: skipped entries keep the file paths the client sent, so a site whose exports name
    # folders after patients stores those names in Upload.report until the upload is deleted.
    with transaction.atomic():
        # Parallel batches of one upload update the same row; the lock serialises the merges.
        locked = Upload.objects.select_for_update().get(pk=upload.pk)
        merged = dict(locked.report)
        for key in (
            "files_received",
            "files_examined",
            "instances_stored",
            "instances_already_stored",
        ):
            merged[key] = int(merged.get(key, 0)) + getattr(report, key)
        merged["skipped"] = summarise_skipped(list(merged.get("skipped", [])) + report.skipped)
        merged["warnings"] = _unique(list(merged.get("warnings", [])) + report.warnings)
        locked.report = merged
        locked.batch_count += 1
        locked.save(update_fields=["report", "batch_count"])
        if studies:
            locked.studies.add(*studies)


def _slice_positions(info: SeriesInfo, warnings: list[dict[str, str]]) -> dict[str, float]:
    """Return SOPInstanceUID -> position along the slice normal (mm); warn about gaps and tilt."""
    try:
        plan = plan_geometry(info.instances, allow_gaps=True)
    except InferenceError as error:
        warnings.append({"code": error.code, "message": f"{info.label}: {error.message}"})
        return {}
    for note in plan.notes:
        if note.level in ("warning", "correction") or note.code == "gantry_tilt":
            warnings.append({"code": note.code, "message": f"{info.label}: {note.message}"})
    return {
        item.sop_instance_uid: float(position)
        for item, position in zip(plan.slices, plan.positions_mm, strict=True)
    }


def _study_warnings(study: Study) -> list[dict[str, str]]:
    warnings = []
    if study.out_of_window:
        window = "at most 6 h" if study.role == Study.Role.BASELINE else "24-72 h"
        warnings.append(
            {
                "code": "out_of_window",
                "message": f"Study {study.study_instance_uid} ({study.role}) was acquired "
                f"{study.hours_after_mt} h after thrombectomy, outside the expected {window}; "
                "it is kept and flagged.",
            }
        )
    if study.hours_after_mt is None:
        warnings.append(
            {
                "code": "timing_unknown",
                "message": f"Study {study.study_instance_uid} has no hours after thrombectomy; "
                "enter them on the case page so the timing can be checked.",
            }
        )
    if (
        study.role == Study.Role.FOLLOW_UP
        and not Study.objects.filter(case_id=study.case_id, role=Study.Role.BASELINE).exists()
    ):
        warnings.append(
            {
                "code": "follow_up_without_baseline",
                "message": f"Case {study.case.code} has a follow-up study but no baseline yet; "
                "upload the post-thrombectomy NCCT as the baseline.",
            }
        )
    burned_in = list(study.series.filter(burned_in_annotation=True).order_by("series_number", "pk"))
    if burned_in:
        names = "; ".join(_series_name(series) for series in burned_in)
        warnings.append(
            {
                "code": "burned_in_annotation",
                "message": f"Study {study.study_instance_uid}: {names} may show identifying "
                "text burned into the pixels; stored but never displayed.",
            }
        )
    return warnings


def _series_name(series: Series) -> str:
    """Return 'series 401 "Dose report"', or the UID when the series has no number."""
    name = (
        f"series {series.series_number}"
        if series.series_number is not None
        else f"series {series.series_instance_uid}"
    )
    return f'{name} "{series.description}"' if series.description else name


def _series_report(info: SeriesInfo) -> dict[str, Any]:
    return {
        "series_instance_uid": info.series_instance_uid,
        "series_number": info.series_number,
        "description": info.description,
        "modality": info.modality,
        "kind": info.kind,
        "kernel": info.kernel,
        "slice_thickness_mm": info.slice_thickness_mm,
        "image_count": info.n_instances,
        "burned_in_annotation": info.burned_in_annotation,
        "chosen": info.chosen,
        "reason": info.reason,
    }


# A reason with more skipped files than SKIPPED_LIST_LIMIT keeps SKIPPED_LISTED of them by name
# and one summary line with a "count" of the rest. An archive of 10,000 junk entries thus gives
# a readable report and a small Upload.report.
SKIPPED_LIST_LIMIT = 20
SKIPPED_LISTED = 10
_SKIPPED_NOUNS = {
    "empty": "empty files",
    "not_dicom": "files that are not DICOM",
    "duplicate": "duplicate files",
    "unsafe_path": "files with unsafe paths",
    "other_modality": "files of another modality",
    "unreadable": "unreadable files",
    "deidentification_failed": "files whose header could not be de-identified",
    "truncated": "truncated files",
    "broken_archive": "unreadable zip archives",
    "nested_archive": "zip archives inside zip archives",
    "invalid_uid": "files with invalid UIDs",
    "conflicting_instance": "files that conflict with another image's UID",
    "inconsistent_study": "files whose study differs from the rest of their series",
    "archive_entry": "archive entries that could not be extracted",
    "archive": "archives",
    "dicomdir": "DICOMDIR index files",
    "missing_uid": "files without a required UID",
    "no_pixel_data": "files without pixel data",
    "not_found": "files that were not found",
}


def skipped_reason_words(reason: str) -> str:
    """Return the reason code of skipped files in words, e.g. "files that are not DICOM"."""
    return _SKIPPED_NOUNS.get(reason, f"files skipped as {reason.replace('_', ' ')}")


def summarise_skipped(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return ``items`` with long runs of one reason shortened to a few names and a count.

    A summary line has ``count`` (the files it stands for); lines without it stand for one
    file. Reasons with few files keep their lines in place; summaries come last. Summarising a
    list that already contains summaries keeps the totals right.
    """
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_reason.setdefault(str(item.get("reason", "")), []).append(item)
    long_reasons = {
        reason
        for reason, group in by_reason.items()
        if len(group) > SKIPPED_LIST_LIMIT or any("count" in item for item in group)
    }
    if not long_reasons:
        return items
    result: list[dict[str, Any]] = []
    listed: dict[str, int] = {}
    for item in items:
        reason = str(item.get("reason", ""))
        if reason not in long_reasons:
            result.append(item)
        elif "count" not in item and listed.get(reason, 0) < SKIPPED_LISTED:
            listed[reason] = listed.get(reason, 0) + 1
            result.append(item)
    for reason in sorted(long_reasons):
        group = by_reason[reason]
        total = sum(int(item.get("count", 1)) for item in group)
        shown = listed.get(reason, 0)
        paths = [str(item.get("path", "")) for item in group]
        relative = all(path and not path.startswith("/") for path in paths)
        common = os.path.commonpath(paths) if relative else ""
        noun = skipped_reason_words(reason)
        result.append(
            {
                "path": common or "(several folders)",
                "reason": reason,
                "count": total - shown,
                "detail": f"{total:,} {noun} skipped in all; {shown} are listed by name and "
                f"{total - shown:,} more are not",
            }
        )
    return result


def _unique(items: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    result = []
    for item in items:
        key = (item.get("code", ""), item.get("message", ""))
        if key not in seen:
            seen.add(key)
            result.append(item)
    return result
