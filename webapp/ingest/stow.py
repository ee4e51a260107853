"""STOW-RS (DICOM PS3.18 Store Instances): store the parts of a request, respond in DICOM JSON.

The response body is the Store Instances Response Module as ``application/dicom+json``:
ReferencedSOPSequence (0008,1199) for each stored instance with its Retrieve URL (0008,1190),
and FailedSOPSequence (0008,1198) with a FailureReason (0008,1197) for each part that was not
stored. The status is 200 when every part was stored, 202 when some were, and 409 when none
was. The application's upload report stays available at the URL of the ``Link`` header
(``rel="describedby"``), which is the upload's API endpoint.

De-identification replaces UIDs, so the referenced UIDs and Retrieve URLs are those of the
stored, de-identified instances; a failed part is named by the UIDs that were sent, because
nothing of it was stored.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pydicom
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.errors import InvalidDicomError

from webapp.core.models import Case
from webapp.ingest.services import NamedFile, ingest_files

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"

# FailureReason values (PS3.4 C-STORE statuses and PS3.18 Store Instances).
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
PROCESSING_FAILURE = 0x0110
FAILURE_BY_SKIP_REASON = {
    "other_modality": SOP_CLASS_NOT_SUPPORTED,
    "no_pixel_data": SOP_CLASS_NOT_SUPPORTED,
    "other_case": PROCESSING_FAILURE,
    "conflict": PROCESSING_FAILURE,
    "conflicting_instance": PROCESSING_FAILURE,
    "inconsistent_study": PROCESSING_FAILURE,
}

# Tags of the response module, as DICOM JSON keys.
RETRIEVE_URL = "00081190"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"


@dataclass(frozen=True)
class StowPart:
    """One part of a multipart/related request: its Content-Type and bytes."""

    content_type: str
    payload: bytes


@dataclass
class StowResult:
    status: int
    body: dict[str, Any]
    upload_id: str
    stored: int
    failed: int


def store_parts(
    case: Case,
    role: str,
    hours_after_mt: Decimal | float | str | None,
    parts: Sequence[StowPart],
    user: User,
    retrieve_url: Callable[[str, str, str], str],
    *,
    client_address: str | None = None,
) -> StowResult:
    """Ingest the ``application/dicom`` parts and build the PS3.18 response.

    ``retrieve_url(study, series, instance)`` returns the absolute WADO-RS URL of a stored
    instance, and ``retrieve_url(study, "", "")`` that of its study (Retrieve Study). Raises
    IngestError like ``ingest_files`` (wrong role or timing).
    """
    names: list[str] = []
    files: list[NamedFile] = []
    sent_uids: dict[str, tuple[str, str]] = {}
    failed: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        name = f"part-{index + 1:04d}.dcm"
        names.append(name)
        if not part.content_type.startswith("application/dicom"):
            failed.append(_failed_item("", "", CANNOT_UNDERSTAND))
            continue
        sent_uids[name] = _sent_uids(part.payload)
        files.append(NamedFile(name, SimpleUploadedFile(name, part.payload)))

    report = None
    if files:
        report = ingest_files(
            case, role, hours_after_mt, files, user, client_address=client_address
        )
    results = {item["path"]: item for item in report.instance_results} if report else {}
    skipped = report.skipped_reasons if report else {}
    # A part skipped as a duplicate of another part was stored through that part.
    stored_by_sent_uid = {
        sent_uids[path][1]: result
        for path, result in results.items()
        if result["status"] != "other_case" and sent_uids.get(path, ("", ""))[1]
    }

    referenced: list[dict[str, Any]] = []
    studies: set[str] = set()
    for name in names:
        if name not in sent_uids:
            continue  # not application/dicom; already failed above
        sop_class, sop_instance = sent_uids[name]
        result = results.get(name)
        if result is None and skipped.get(name) == "duplicate":
            result = stored_by_sent_uid.get(sop_instance)
        if result is not None and result["status"] in ("stored", "already_stored"):
            studies.add(result["study_instance_uid"])
            url = retrieve_url(
                result["study_instance_uid"],
                result["series_instance_uid"],
                result["sop_instance_uid"],
            )
            referenced.append(
                {
                    REFERENCED_SOP_CLASS_UID: _uid(result["sop_class_uid"] or sop_class),
                    REFERENCED_SOP_INSTANCE_UID: _uid(result["sop_instance_uid"]),
                    RETRIEVE_URL: {"vr": "UR", "Value": [url]},
                }
            )
            continue
        reason = result["status"] if result is not None else skipped.get(name, "")
        code = FAILURE_BY_SKIP_REASON.get(reason, CANNOT_UNDERSTAND if reason else None)
        failed.append(_failed_item(sop_class, sop_instance, code or PROCESSING_FAILURE))

    body: dict[str, Any] = {}
    if len(studies) == 1:
        study = next(iter(studies))
        body[RETRIEVE_URL] = {"vr": "UR", "Value": [retrieve_url(study, "", "")]}
    if referenced:
        body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": referenced}
    if failed:
        body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
    if not failed:
        status = 200
    elif referenced:
        status = 202  # stored some, failed others
    else:
        status = 409  # stored none
    upload_id = report.upload_id if report else ""
    logger.info(
        "STOW-RS request case_id=%s upload_id=%s parts=%d stored=%d failed=%d",
        case.pk,
        upload_id or "-",
        len(parts),
        len(referenced),
        len(failed),
    )
    return StowResult(status, body, upload_id, len(referenced), len(failed))


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _failed_item(sop_class: str, sop_instance: str, reason: int) -> dict[str, Any]:
    return {
        REFERENCED_SOP_CLASS_UID: _uid(sop_class),
        REFERENCED_SOP_INSTANCE_UID: _uid(sop_instance),
        FAILURE_REASON: {"vr": "US", "Value": [reason]},
    }


def _sent_uids(payload: bytes) -> tuple[str, str]:
    """Return (SOPClassUID, SOPInstanceUID) as sent, or empty strings when unreadable."""
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(payload),
            force=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID"],
            stop_before_pixels=True,
        )
        return str(dataset.get("SOPClassUID", "")), str(dataset.get("SOPInstanceUID", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError):
        return "", ""
