"""Safe extraction of zip uploads, so that the files inside can be scanned like a folder."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import DicomReadError

logger = logging.getLogger(__name__)

# Bounds against zip bombs: a head CT study is well under 2 GiB and 20,000 files even at
# thin slices, and both are checked on the bytes actually written, not on the zip's claims.
MAX_EXTRACTED_BYTES = 4 * 2**30
MAX_MEMBERS = 50_000


def is_zip(path: str) -> bool:
    """Return True when ``path`` is a regular file that starts with the zip signature."""
    try:
        # Opening a FIFO or a device would block or read endlessly, so only regular files
        # (after following links) are opened.
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


@dataclass
class ExtractionBudget:
    """Bytes and entries that the archives of one upload may still extract.

    One budget is shared by an archive and the archives nested in it, so that a zip of many
    zips cannot multiply the limits.
    """

    bytes_left: int
    members_left: int
    limit_bytes: int = field(init=False)
    limit_members: int = field(init=False)

    def __post_init__(self) -> None:
        self.limit_bytes = self.bytes_left
        self.limit_members = self.members_left

    @classmethod
    def for_upload(cls) -> ExtractionBudget:
        """Return a full budget of :data:`MAX_EXTRACTED_BYTES` and :data:`MAX_MEMBERS`."""
        return cls(MAX_EXTRACTED_BYTES, MAX_MEMBERS)


@dataclass(frozen=True)
class RejectedEntry:
    """An archive entry that was not extracted, with a skip reason code and the fault."""

    name: str
    reason: str
    detail: str


# Archives whose content is below this size are exempt from the ratio limit: a few kilobytes
# of zeros compress a thousandfold harmlessly.
RATIO_EXEMPT_BYTES = 1 << 20


def unsafe_entry_name(name: str) -> bool:
    """Return whether an archive or upload path is absolute, has a drive, or climbs with ``..``.

    Backslashes count as separators, so a name made on Windows cannot climb out either.
    """
    normalised = name.replace("\\", "/")
    return (
        normalised.startswith("/")
        or (len(normalised) > 1 and normalised[1] == ":")
        or ".." in PurePosixPath(normalised).parts
    )


def extract_zip(
    zip_path: str,
    destination: Path,
    *,
    max_bytes: int = MAX_EXTRACTED_BYTES,
    max_members: int = MAX_MEMBERS,
    budget: ExtractionBudget | None = None,
    max_ratio: float | None = None,
    reject_unsafe_entries: bool = False,
    name: str | None = None,
) -> list[RejectedEntry]:
    """Extract the regular files of ``zip_path`` under ``destination``.

    Symbolic links and members whose names leave the destination (absolute paths, ``..``)
    are not extracted; with ``reject_unsafe_entries`` they reject the whole archive instead.
    Empty members and members that cannot be written or decoded are not extracted either.
    Skipped members are returned so that the caller can list them, and the other members are
    still extracted. ``budget`` (default: ``max_bytes`` and ``max_members`` for this archive
    alone) is reduced by what is extracted. ``max_ratio`` limits uncompressed to compressed
    bytes (zip bombs). Sizes are checked against the archive's directory before anything is
    written and again against the bytes written, which a forged directory cannot change.

    Raises DicomReadError, with a message that starts with ``name`` (default ``zip_path``),
    when the archive is unreadable, encrypted, or breaks a limit; nothing of it is left under
    ``destination`` then.
    """
    budget = budget if budget is not None else ExtractionBudget(max_bytes, max_members)
    label = name or zip_path
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    rejected: list[RejectedEntry] = []
    written = 0
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            _check_directory(zip_path, label, members, budget, max_ratio, reject_unsafe_entries)
            budget.members_left -= len(members)
            compressed = sum(member.compress_size for member in members)
            for member in members:
                if member.is_dir():
                    continue
                mode = member.external_attr >> 16
                target = (root / member.filename).resolve()
                if stat.S_ISLNK(mode) or not target.is_relative_to(root):
                    rejected.append(
                        RejectedEntry(
                            member.filename,
                            "unsafe_path",
                            "archive entry is a link or points outside the archive; not extracted",
                        )
                    )
                    continue
                if member.file_size == 0:
                    rejected.append(RejectedEntry(member.filename, "empty", "empty file (0 bytes)"))
                    continue
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, open(target, "wb") as sink:
                        while block := source.read(1 << 20):
                            written += len(block)
                            _check_size(zip_path, label, written, compressed, budget, max_ratio)
                            sink.write(block)
                except (OSError, zipfile.BadZipFile, EOFError) as exc:
                    # One entry that cannot be written (a name that is also a folder, a name
                    # too long) or decoded (a CRC error) must not discard the other entries.
                    if target.is_file():
                        target.unlink()
                    detail = getattr(exc, "strerror", None) or str(exc)
                    rejected.append(
                        RejectedEntry(
                            member.filename,
                            "archive_entry",
                            f"archive entry cannot be extracted ({detail}); the other entries "
                            "were extracted. Rename or remove the entry and create the archive "
                            "again if it is needed.",
                        )
                    )
    except DicomReadError:
        # A rejected archive leaves nothing behind, not even the part written before the limit.
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        OSError,
        RuntimeError,  # zipfile raises it for encryption it cannot handle
    ) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise DicomReadError(
            f"{label}: the zip archive cannot be read ({exc}); create it again",
            path=zip_path,
            code="archive_invalid",
        ) from exc
    budget.bytes_left -= written
    logger.info(
        "extracted %d bytes from a zip archive of %d entries (%d not extracted)",
        written,
        len(members),
        len(rejected),
    )
    return rejected


def _check_directory(
    zip_path: str,
    label: str,
    members: list[zipfile.ZipInfo],
    budget: ExtractionBudget,
    max_ratio: float | None,
    reject_unsafe_entries: bool,
) -> None:
    """Check the archive's own directory: entry count, encryption, unsafe names, sizes."""
    if len(members) > budget.members_left:
        shared = (
            f"the {budget.members_left} left of the limit of {budget.limit_members} for one "
            "upload (nested archives included)"
            if budget.members_left < budget.limit_members
            else f"the limit of {budget.limit_members}"
        )
        raise DicomReadError(
            f"{label}: the archive has {len(members)} entries, more than {shared}; split the "
            "upload into smaller archives",
            path=zip_path,
            code="archive_too_many_entries",
        )
    encrypted = [m.filename for m in members if m.flag_bits & 0x1]
    if encrypted:
        raise DicomReadError(
            f"{label}: the archive is password-protected ({len(encrypted)} encrypted "
            f"entries, e.g. {encrypted[0]}); upload it without a password",
            path=zip_path,
            code="archive_encrypted",
        )
    if reject_unsafe_entries:
        for member in members:
            if unsafe_entry_name(member.filename):
                raise DicomReadError(
                    f"{label}: entry {member.filename!r} has an absolute path or '..'; the "
                    "archive is rejected because it could write outside its folder",
                    path=zip_path,
                    code="archive_unsafe_path",
                )
            if stat.S_ISLNK(member.external_attr >> 16):
                raise DicomReadError(
                    f"{label}: entry {member.filename!r} is a symbolic link; archive the "
                    "files themselves",
                    path=zip_path,
                    code="archive_symbolic_link",
                )
    declared = sum(member.file_size for member in members if not member.is_dir())
    compressed = sum(member.compress_size for member in members)
    _check_size(zip_path, label, declared, compressed, budget, max_ratio)


def _check_size(
    zip_path: str,
    label: str,
    total: int,
    compressed: int,
    budget: ExtractionBudget,
    max_ratio: float | None,
) -> None:
    if total > budget.bytes_left:
        raise DicomReadError(
            f"{label}: extracted content exceeds {budget.limit_bytes / 2**30:.1f} GiB for one "
            f"upload (nested archives included), the limit of {budget.limit_bytes} bytes; upload "
            "the study in parts or as a folder",
            path=zip_path,
            code="archive_too_large",
        )
    if (
        max_ratio is not None
        and total > RATIO_EXEMPT_BYTES
        and total > max_ratio * max(compressed, 1)
    ):
        raise DicomReadError(
            f"{label}: compression ratio above the limit of {max_ratio:g}, which suggests a "
            "zip bomb; upload the files uncompressed",
            path=zip_path,
            code="archive_ratio_exceeded",
        )


def archive_folder_name(zip_path: str, index: int) -> str:
    """Return a folder name for the ``index``-th archive, unique within one scan."""
    return f"{index:03d}_{os.path.basename(zip_path)}"
