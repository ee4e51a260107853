"""Import of follow-up ground truth from CSV: validate every row, preview, then apply on request.

Nothing is written by ``preview_ground_truth_csv``. ``apply_ground_truth_import`` writes a new
ground-truth version only where the label or subtype differs from the latest stored one, so
importing the same file twice adds nothing the second time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction

from webapp.core import roles
from webapp.core.audit import record_audit_event
from webapp.core.models import Case, GroundTruth, HeidelbergSubtype, HyperdensityLabel
from webapp.core.services import ClientContext, RoleRequiredError, ServiceError, record_ground_truth

logger = logging.getLogger(__name__)

IMPORT_ROLES = (roles.COORDINATOR, roles.ADMIN)
REQUIRED_COLUMNS = ("case_code", "label")
OPTIONAL_COLUMNS = ("heidelberg_subtype", "notes")
# Audit action of an applied import; each new version also gets its own ground_truth.recorded.
IMPORT_APPLIED_ACTION = "ground_truth.import_applied"
MAX_IMPORT_BYTES = 5 * 1024 * 1024


class ImportFileError(ServiceError):
    """The file as a whole cannot be read (encoding, missing column, size)."""

    code = "invalid_import_file"


@dataclass(frozen=True)
class AcceptedRow:
    line: int
    case_code: str
    label: str
    heidelberg_subtype: str
    notes: str
    # "new" (no ground truth yet), "changed" (new version) or "unchanged" (nothing to write).
    change: str


@dataclass(frozen=True)
class RejectedRow:
    line: int
    case_code: str
    reason: str


@dataclass
class ImportPreview:
    """Result of validating a CSV file; ``sha256`` identifies the file at confirmation."""

    sha256: str
    accepted: list[AcceptedRow] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "accepted": [asdict(row) for row in self.accepted],
            "rejected": [asdict(row) for row in self.rejected],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportPreview:
        return cls(
            sha256=data["sha256"],
            accepted=[AcceptedRow(**row) for row in data["accepted"]],
            rejected=[RejectedRow(**row) for row in data["rejected"]],
        )

    @property
    def changes(self) -> list[AcceptedRow]:
        return [row for row in self.accepted if row.change != "unchanged"]


def _check_role(context: ClientContext) -> None:
    if not roles.has_any_role(context.actor, *IMPORT_ROLES):
        raise RoleRequiredError(
            f"User {context.actor.get_username()!r} needs one of the roles "
            f"{', '.join(IMPORT_ROLES)} to import ground truth."
        )


def preview_ground_truth_csv(
    context: ClientContext, content: bytes, *, file_name: str = "upload.csv"
) -> ImportPreview:
    """Validate a ground-truth CSV row by row without writing anything.

    Columns: ``case_code`` and ``label`` (HT, CE or HT+CE) are required; ``heidelberg_subtype``
    and ``notes`` are optional. Raises ImportFileError when the file cannot be read at all.
    """
    _check_role(context)
    if len(content) > MAX_IMPORT_BYTES:
        raise ImportFileError(
            f"{file_name} is {len(content)} bytes, over the {MAX_IMPORT_BYTES}-byte limit; "
            "split it into smaller files."
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"{file_name} is not UTF-8 text (byte {error.start}); save it as UTF-8 CSV."
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ImportFileError(
            f"{file_name} is missing the column(s) {', '.join(missing)}; the header must contain "
            f"{', '.join(REQUIRED_COLUMNS)} and may contain {', '.join(OPTIONAL_COLUMNS)}.",
            code="missing_column",
        )
    reader.fieldnames = header

    raw_rows = list(enumerate(reader, start=2))  # line 1 is the header
    codes = {(row.get("case_code") or "").strip() for _, row in raw_rows}
    cases = {case.code: case for case in Case.objects.filter(code__in=codes)}
    latest: dict[int, GroundTruth] = {}
    for truth in GroundTruth.objects.filter(case__in=cases.values()).order_by("version"):
        latest[truth.case_id] = truth

    preview = ImportPreview(sha256=hashlib.sha256(content).hexdigest())
    seen: dict[str, int] = {}
    for line, row in raw_rows:
        code = (row.get("case_code") or "").strip()
        label = (row.get("label") or "").strip().upper()
        subtype = (row.get("heidelberg_subtype") or "").strip().upper()
        notes = (row.get("notes") or "").strip()
        reason = _rejection_reason(code, label, subtype, cases, seen)
        if reason:
            preview.rejected.append(RejectedRow(line, code, reason))
            continue
        seen[code] = line
        current = latest.get(cases[code].pk)
        if current is None:
            change = "new"
        elif current.label == label and current.heidelberg_subtype == subtype:
            change = "unchanged"
        else:
            change = "changed"
        preview.accepted.append(AcceptedRow(line, code, label, subtype, notes, change))
    return preview


def _rejection_reason(
    code: str, label: str, subtype: str, cases: dict[str, Case], seen: dict[str, int]
) -> str:
    if not code:
        return "case_code is empty; fill in the pseudonymous case code."
    if code not in cases:
        return f"Unknown case code {code!r}; create the case or correct the code."
    if code in seen:
        return f"Duplicate row: case {code!r} already appears on line {seen[code]}; keep one row."
    if label not in HyperdensityLabel.values:
        return f"Invalid label {label!r}; use one of {', '.join(HyperdensityLabel.values)}."
    if subtype and subtype not in HeidelbergSubtype.values:
        return (
            f"Invalid Heidelberg subtype {subtype!r}; use one of "
            f"{', '.join(HeidelbergSubtype.values)} or leave it empty."
        )
    if subtype and label == HyperdensityLabel.CE:
        return f"Subtype {subtype!r} given for label CE; a subtype applies only to HT or HT+CE."
    return ""


def apply_ground_truth_import(context: ClientContext, preview: ImportPreview) -> int:
    """Write the changed rows of a confirmed preview and audit the import; return versions added.

    Rows whose latest stored ground truth already has the same label and subtype are skipped,
    checked again here because another import may have run since the preview.
    """
    _check_role(context)
    added = 0
    with transaction.atomic():
        cases = {
            case.code: case
            for case in Case.objects.filter(code__in=[row.case_code for row in preview.accepted])
        }
        for row in preview.accepted:
            case = cases.get(row.case_code)
            if case is None:
                raise ServiceError(
                    f"Case {row.case_code!r} was removed after the preview; upload the file again.",
                    code="stale_import",
                )
            current = case.ground_truths.order_by("-version").first()
            if (
                current is not None
                and current.label == row.label
                and current.heidelberg_subtype == row.heidelberg_subtype
            ):
                continue
            record_ground_truth(
                context,
                case,
                label=row.label,
                heidelberg_subtype=row.heidelberg_subtype,
                source=GroundTruth.Source.CSV_IMPORT,
                notes=row.notes,
                expected_version=None,
            )
            added += 1
        record_audit_event(
            IMPORT_APPLIED_ACTION,
            actor=context.actor,
            client_address=context.client_address,
            details={
                "sha256": preview.sha256,
                "accepted_rows": len(preview.accepted),
                "rejected_rows": len(preview.rejected),
                "versions_added": added,
            },
        )
    logger.info(
        "Applied ground-truth import sha256=%s: %d versions added, %d rows rejected",
        preview.sha256[:12],
        added,
        len(preview.rejected),
    )
    return added
