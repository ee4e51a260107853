"""Multipart parsing for the study upload API: 1 MiB reads, files in memory up to a budget.

When a request body is larger than FILE_UPLOAD_MAX_MEMORY_SIZE, Django's default handlers
write every file of it to a temporary file, 64 KiB at a time. ``IngestUploadHandler`` reads
1 MiB at a time. It keeps the files of one request in memory until their total reaches
``INGEST["UPLOAD_MEMORY_BYTES"]``, and ingest then scans and de-identifies them from those
bytes, so it writes only their de-identified bytes. A file that would take the total past
that budget streams to a temporary file, so memory stays bounded for large uploads. A later,
smaller file that still fits within the budget is kept in memory.
"""

from __future__ import annotations

import logging
import os
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile, TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, MultiPartParser

logger = logging.getLogger(__name__)

# Bytes Django's multipart parser reads from the request body per step. Each step costs a
# boundary search, a slice copy and a handler call. With 1 MiB in place of Django's 64 KiB, a
# 100 MiB body takes 100 steps instead of 1,600.
READ_CHUNK_BYTES = 1 << 20


class IngestUploadHandler(FileUploadHandler):
    """Keep uploaded files in memory up to ``memory_budget`` bytes per request, then spill.

    Each request gets its own handler (see ``IngestMultiPartParser``), so the budget is per
    request. Memory held by the files of a request stays at or below the budget. Completing a
    file joins its chunks, which briefly needs that file's size once more.
    """

    chunk_size = READ_CHUNK_BYTES

    def __init__(self, request: HttpRequest | None = None, memory_budget: int | None = None):
        super().__init__(request)
        if memory_budget is None:
            ingest: dict[str, Any] = settings.INGEST
            memory_budget = int(ingest["UPLOAD_MEMORY_BYTES"])
        self.memory_budget = memory_budget
        # Bytes of this request's files held in memory, completed files included.
        self.memory_used = 0
        self.spilled_files = 0
        self._chunks: list[bytes] = []
        self._file_bytes_in_memory = 0
        self._spill: TemporaryUploadedFile | None = None

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self._chunks = []
        self._file_bytes_in_memory = 0
        self._spill = None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self._spill is None and self.memory_used + len(raw_data) <= self.memory_budget:
            self._chunks.append(raw_data)
            self._file_bytes_in_memory += len(raw_data)
            self.memory_used += len(raw_data)
            return None
        if self._spill is None:
            self._spill_to_disk()
        assert self._spill is not None
        self._spill.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> InMemoryUploadedFile | TemporaryUploadedFile:
        if self._spill is not None:
            spill, self._spill = self._spill, None
            spill.seek(0)
            spill.size = file_size
            return spill
        data = b"".join(self._chunks)
        self._chunks = []
        # The file's bytes stay counted in memory_used for the rest of the request.
        self._file_bytes_in_memory = 0
        return InMemoryUploadedFile(
            BytesIO(data),
            self.field_name,
            self.file_name,
            self.content_type,
            len(data),
            self.charset,
            self.content_type_extra,
        )

    def upload_interrupted(self) -> None:
        # The body ended inside this file: Django drops it, so its bytes are released.
        self.memory_used -= self._file_bytes_in_memory
        self._chunks = []
        self._file_bytes_in_memory = 0
        if self._spill is not None:
            path = self._spill.temporary_file_path()
            self._spill.close()
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            self._spill = None

    def _spill_to_disk(self) -> None:
        """Move the current file's chunks from memory to a temporary file."""
        self._spill = TemporaryUploadedFile(
            self.file_name or "", self.content_type, 0, self.charset, self.content_type_extra
        )
        for chunk in self._chunks:
            self._spill.write(chunk)
        self.memory_used -= self._file_bytes_in_memory
        self._chunks = []
        self._file_bytes_in_memory = 0
        self.spilled_files += 1
        if self.spilled_files == 1 and self.memory_budget > 0:
            logger.info(
                "Upload above the memory budget of %d bytes; files that do not fit go to "
                "temporary files",
                self.memory_budget,
            )


class IngestMultiPartParser(MultiPartParser):
    """DRF's multipart parser with ``IngestUploadHandler`` in place of the settings' handlers."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> DataAndFiles[Any, Any]:
        parser_context = parser_context or {}
        request = parser_context["request"]
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        handler = IngestUploadHandler(request._request)
        try:
            data, files = DjangoMultiPartParser(meta, stream, [handler], encoding).parse()
        except MultiPartParserError as error:
            handler.upload_interrupted()
            raise ParseError(f"Multipart form parse error - {error}") from error
        except BaseException:
            # Django's parser calls upload_interrupted only for a body that ends inside a file.
            # On an error, the temporary file of the file being received is removed here, not
            # whenever the handler is garbage-collected.
            handler.upload_interrupted()
            raise
        return DataAndFiles(data, files)
