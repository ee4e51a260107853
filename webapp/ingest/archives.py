"""Safe extraction of uploaded zip archives, with limits read from ``settings.INGEST``.

Each limit is checked twice: against the sizes the zip's directory declares (cheap, rejects an
honest bomb before any byte is written) and against the bytes actually written (a forged
directory cannot lie past it).
"""

from __future__ import annotations

import logging
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


class ArchiveRejectedError(Exception):
    """A zip archive is unsafe or unreadable; ``code`` names the violated rule."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ZipLimits:
    """Limits on one archive: entry count, total uncompressed bytes, compression ratio."""

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


def is_zip_file(path: Path) -> bool:
    """Return whether ``path`` starts with the zip local-file signature."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def unsafe_member_name(name: str) -> bool:
    """Return whether an archive or upload path is absolute or climbs out with ``..``."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    return (
        normalised.startswith("/")
        or (len(normalised) > 1 and normalised[1] == ":")
        or ".." in path.parts
    )


def extract_zip(zip_path: Path, display_name: str, destination: Path, limits: ZipLimits) -> int:
    """Extract every regular file of ``zip_path`` below ``destination``; return the file count.

    Raises ArchiveRejectedError, naming ``display_name`` and the limit, when an entry name is
    absolute or contains ``..``, an entry is a symbolic link, a limit is exceeded, or the
    archive cannot be read. Nothing of a rejected archive is stored.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [member for member in archive.infolist() if not member.is_dir()]
            _check_declared(members, display_name, limits)
            compressed_total = sum(member.compress_size for member in members)
            written = 0
            for member in members:
                target = destination / PurePosixPath(member.filename.replace("\\", "/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as sink:
                    while block := source.read(1 << 20):
                        written += len(block)
                        _check_written(written, compressed_total, display_name, limits)
                        sink.write(block)
    except zipfile.BadZipFile as error:
        raise ArchiveRejectedError(
            f"{display_name}: not a readable zip archive ({error}); create the archive again",
            code="zip_invalid",
        ) from error
    except (NotImplementedError, RuntimeError) as error:
        # NotImplementedError: an unsupported compression method; RuntimeError: encryption.
        raise ArchiveRejectedError(
            f"{display_name}: the archive cannot be extracted ({error}); create it again "
            "without encryption using the deflate or store method",
            code="zip_invalid",
        ) from error
    logger.info("Extracted %d files (%d bytes) from an uploaded zip", len(members), written)
    return len(members)


def _check_declared(members: list[zipfile.ZipInfo], display_name: str, limits: ZipLimits) -> None:
    if len(members) > limits.max_entries:
        raise ArchiveRejectedError(
            f"{display_name}: the archive has {len(members)} entries, more than the limit of "
            f"{limits.max_entries} (INGEST ZIP_MAX_ENTRIES); split it into smaller archives",
            code="zip_too_many_entries",
        )
    for member in members:
        if unsafe_member_name(member.filename):
            raise ArchiveRejectedError(
                f"{display_name}: entry {member.filename!r} has an absolute path or '..'; "
                "the archive is rejected because it could write outside its folder",
                code="zip_path_traversal",
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ArchiveRejectedError(
                f"{display_name}: entry {member.filename!r} is a symbolic link; archive the "
                "files themselves",
                code="zip_symbolic_link",
            )
    declared_total = sum(member.file_size for member in members)
    compressed_total = sum(member.compress_size for member in members)
    _check_written(declared_total, compressed_total, display_name, limits)


def _check_written(
    total_bytes: int, compressed_bytes: int, display_name: str, limits: ZipLimits
) -> None:
    if total_bytes > limits.max_total_bytes:
        raise ArchiveRejectedError(
            f"{display_name}: uncompressed content exceeds the limit of "
            f"{limits.max_total_bytes} bytes (INGEST ZIP_MAX_TOTAL_BYTES); upload the study "
            "in parts",
            code="zip_too_large",
        )
    # Small archives are exempt: a few kilobytes of zeros compress a thousandfold harmlessly.
    if total_bytes > 1 << 20 and total_bytes > limits.max_ratio * max(compressed_bytes, 1):
        raise ArchiveRejectedError(
            f"{display_name}: compression ratio above the limit of {limits.max_ratio:g} "
            "(INGEST ZIP_MAX_RATIO), which suggests a zip bomb; upload the files uncompressed",
            code="zip_ratio_exceeded",
        )
