"""Safe extraction of zip uploads, so that the files inside can be scanned like a folder."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from pathlib import Path

from ..errors import DicomReadError

logger = logging.getLogger(__name__)

# Bounds against zip bombs: a head CT study is well under 2 GiB and 20,000 files even at
# thin slices, and both are checked on the bytes actually written, not on the zip's claims.
MAX_EXTRACTED_BYTES = 4 * 2**30
MAX_MEMBERS = 50_000


def is_zip(path: str) -> bool:
    """Return True when ``path`` starts with the zip local-file signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def extract_zip(
    zip_path: str,
    destination: Path,
    *,
    max_bytes: int = MAX_EXTRACTED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> list[str]:
    """Extract the regular files of ``zip_path`` under ``destination``.

    Symbolic links and members whose names leave the destination (absolute paths, ``..``) are
    not extracted. Their names are returned so that the caller can list them as skipped.
    Raises DicomReadError when the archive is unreadable or exceeds the size limits.
    """
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    rejected: list[str] = []
    written = 0
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            if len(members) > max_members:
                raise DicomReadError(
                    f"{zip_path}: the archive has {len(members)} entries, more than the limit "
                    f"of {max_members}; split the upload into smaller archives",
                    path=zip_path,
                    code="archive_too_large",
                )
            for member in members:
                if member.is_dir():
                    continue
                mode = member.external_attr >> 16
                target = (root / member.filename).resolve()
                if stat.S_ISLNK(mode) or not target.is_relative_to(root):
                    rejected.append(member.filename)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as sink:
                    while block := source.read(1 << 20):
                        written += len(block)
                        if written > max_bytes:
                            raise DicomReadError(
                                f"{zip_path}: extracted content exceeds {max_bytes / 2**30:.1f} "
                                "GiB; upload the study in parts or as a folder",
                                path=zip_path,
                                code="archive_too_large",
                            )
                        sink.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise DicomReadError(
            f"{zip_path}: the zip archive cannot be read ({exc}); create it again",
            path=zip_path,
            code="archive_invalid",
        ) from exc
    logger.info("extracted %d bytes from a zip archive", written)
    return rejected


def archive_folder_name(zip_path: str, index: int) -> str:
    """Return a folder name for the ``index``-th archive, unique within one scan."""
    return f"{index:03d}_{os.path.basename(zip_path)}"
