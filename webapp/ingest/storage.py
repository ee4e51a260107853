"""Content-addressed storage of DICOM instances through Django's default storage."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.storage.filesystem import FileSystemStorage

from webapp.core.models import Instance

logger = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_instance_bytes(data: bytes) -> tuple[str, str]:
    """Store ``data`` under the name derived from its SHA-256; return (name, sha256).

    Storing the same bytes twice, even from two processes at once, leaves one file: the name
    depends only on the content, and a file written by another process has the same bytes.
    Call this outside a database transaction, because it is slow I/O.
    """
    digest = sha256_bytes(data)
    name = Instance.storage_name_for(digest)
    if isinstance(default_storage, FileSystemStorage):
        _write_file_atomically(Path(default_storage.path(name)), data)
        return name, digest

    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(data))
        if saved != name:
            # Another process stored the same content first, so the storage picked a new
            # name for this copy. The first file is identical, so this copy is deleted.
            default_storage.delete(saved)
    return name, digest


def stored_path(name: str) -> str:
    """Return the local path of a stored instance.

    NOTE: only storages with local files (FileSystemStorage) support this; an S3-compatible
    storage needs the files downloaded to a temporary folder before scanning or inference.
    """
    return str(default_storage.path(name))


def _write_file_atomically(target: Path, data: bytes) -> None:
    if target.exists() and target.stat().st_size == len(data):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file in the same folder and rename it over the target: a reader
    # never sees a partly written file, and two writers of the same content both succeed.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
        os.chmod(temporary, 0o640)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
