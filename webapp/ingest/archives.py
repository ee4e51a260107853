"""Zip uploads: the limits from ``settings.INGEST`` applied by the one zip reader.

The extraction itself is ``inference.dicom.archive.extract_zip``; this module reads the limits
from the settings, shares one byte and entry budget across the archives of a request, and turns
a rejected archive into an error code of the upload API with the setting that sets the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.dicom.archive import (
    ExtractionBudget,
    RejectedEntry,
    extract_zip,
    is_zip,
    unsafe_entry_name,
)
from inference.errors import DicomReadError

__all__ = [
    "ArchiveRejectedError",
    "RejectedEntry",
    "ZipLimits",
    "extract_upload_zip",
    "is_zip",
    "unsafe_entry_name",
]

# Error codes of inference.dicom.archive -> (upload API code, setting that sets the limit).
_API_CODES: dict[str, tuple[str, str]] = {
    "archive_too_many_entries": ("zip_too_many_entries", "INGEST_ZIP_MAX_ENTRIES"),
    "archive_too_large": ("zip_too_large", "INGEST_ZIP_MAX_TOTAL_BYTES"),
    "archive_ratio_exceeded": ("zip_ratio_exceeded", "INGEST_ZIP_MAX_RATIO"),
    "archive_unsafe_path": ("zip_path_traversal", ""),
    "archive_symbolic_link": ("zip_symbolic_link", ""),
    "archive_encrypted": ("zip_encrypted", ""),
    "archive_invalid": ("zip_invalid", ""),
}


class ArchiveRejectedError(Exception):
    """A zip archive is unsafe or unreadable; ``code`` names the violated rule."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ZipLimits:
    """Limits on the archives of one request: entries, uncompressed bytes, compression ratio."""

    max_entries: int
    max_total_bytes: int
    max_ratio: float

    @classmethod
    def from_settings(cls) -> ZipLimits:
        ingest: dict[str, Any] = settings.INGEST
        return cls(
            max_entries=int(ingest["ZIP_MAX_ENTRIES"]),
            max_total_bytes=int(ingest["ZIP_MAX_TOTAL_BYTES"]),
            max_ratio=float(ingest["ZIP_MAX_RATIO"]),
        )

    def budget(self) -> ExtractionBudget:
        """Return a budget that the archives of one request share."""
        return ExtractionBudget(self.max_total_bytes, self.max_entries)


def extract_upload_zip(
    zip_path: Path,
    display_name: str,
    destination: Path,
    limits: ZipLimits,
    budget: ExtractionBudget,
) -> list[RejectedEntry]:
    """Extract an uploaded archive; return the entries that were skipped (empty, unreadable).

    Raises ArchiveRejectedError, naming ``display_name`` and the setting of the limit, when an
    entry name is absolute or contains ``..``, an entry is a symbolic link, a limit is
    exceeded, or the archive cannot be read. Nothing of a rejected archive is stored.
    """
    try:
        return extract_zip(
            str(zip_path),
            destination,
            budget=budget,
            max_ratio=limits.max_ratio,
            reject_unsafe_entries=True,
            name=display_name,
        )
    except DicomReadError as error:
        code, setting = _API_CODES.get(error.code, ("zip_invalid", ""))
        message = error.message
        if setting:
            message = f"{message} (the limit is set by {setting})"
        raise ArchiveRejectedError(message, code=code) from error
