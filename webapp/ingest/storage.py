"""Content-addressed storage of DICOM instances through Django's default storage."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.storage.filesystem import FileSystemStorage

from webapp.core.models import Instance

logger = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_instance_bytes(data: bytes) -> tuple[str, str]:
    """Store ``data`` under the name derived from its SHA-256; return (name, sha256)."""
    return store_instance_chunks([data])


def store_instance_chunks(chunks: Sequence[bytes | memoryview]) -> tuple[str, str]:
    """Store the concatenated ``chunks`` under the name derived from their SHA-256.

    Returns (name, sha256). Storing the same bytes twice, even from two processes at once,
    leaves one file: the name depends only on the content, and a file written by another
    process has the same bytes. On a local file system the bytes are hashed while they are
    written to a temporary file, which is then renamed to its content name. Call this outside
    a database transaction, because it is slow I/O.
    """
    if isinstance(default_storage, FileSystemStorage):
        return _write_local(Path(default_storage.location), chunks)

    data = b"".join(bytes(chunk) for chunk in chunks)
    digest = sha256_bytes(data)
    name = Instance.storage_name_for(digest)
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


def _write_local(root: Path, chunks: Sequence[bytes | memoryview]) -> tuple[str, str]:
    incoming = root / "instances" / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file on the same file system and rename it to the content name: a
    # reader never sees a partly written file, and two writers of the same content both succeed.
    handle, temporary = tempfile.mkstemp(dir=incoming, prefix="instance-")
    try:
        hasher = hashlib.sha256()
        size = 0
        with os.fdopen(handle, "wb") as sink:
            for chunk in chunks:
                hasher.update(chunk)
                sink.write(chunk)
                size += len(chunk)
        digest = hasher.hexdigest()
        name = Instance.storage_name_for(digest)
        target = root / name
        if target.exists() and target.stat().st_size == size:
            Path(temporary).unlink()
            return name, digest
        os.chmod(temporary, 0o640)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return name, digest
