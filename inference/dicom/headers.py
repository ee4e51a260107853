"""Per-instance header facts read from DICOM files without decoding pixel data.

Each image file becomes one :class:`InstanceInfo`, or one per frame for a multi-frame file, so
the rest of the package can group, classify, sort and decode slices without rereading headers.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from .native import HEAD_BYTES, NativeHeader, NeedsPydicom, parse_native_header

logger = logging.getLogger(__name__)

# A header read by pydicom, or by the native reader for common files. Both implement get(keyword).
HeaderSource = Dataset | NativeHeader

# A pixel data element of at least this size stays on disk while headers are read. Its file
# offset and length are kept, so truncated files are found and native pixels are read directly.
DEFER_SIZE_BYTES = 1024

PIXEL_DATA_TAG = 0x7FE00010
MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
ENHANCED_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2.1"
NON_ORTHOGONAL_COSINE = 0.01
CT_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", ENHANCED_CT_SOP_CLASS})
NATIVE_LITTLE_ENDIAN_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
ZIP_SIGNATURE = b"PK\x03\x04"
# False sends every file through pydicom; the equivalence tests compare both paths with it.
native_headers_enabled = True


class HeaderSkip(Exception):
    """A file is not an image instance this package can use; carries the skip reason code."""

    def __init__(self, reason: str, detail: str, series_instance_uid: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        # The series of a file whose header was read in full, so that the series can report
        # the file it lost (a truncated last slice shortens the volume without a gap).
        self.series_instance_uid = series_instance_uid


@dataclass(frozen=True)
class PixelEncoding:
    """The mapping from stored pixel values to Hounsfield units for one frame.

    ``rescale_present`` is False when RescaleSlope (0028,1053) or RescaleIntercept (0028,1052)
    is absent, empty or (slope) zero. ``rescale_missing`` then names what was assumed (slope 1,
    intercept 0), and the loader records a warning. ``rescale_note`` describes a malformed value
    that was read anyway because its meaning is unambiguous (a decimal comma, a Unicode minus,
    repeated equal values). ``rescale_error`` is set when a value cannot be read, and converting
    such a frame raises PixelDataError, because guessing would give wrong HU.
    """

    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    samples_per_pixel: int
    photometric_interpretation: str
    rescale_slope: float
    rescale_intercept: float
    rescale_present: bool
    padding_value: int | None
    padding_range_limit: int | None
    rescale_missing: tuple[str, ...] = ()
    rescale_note: str = ""
    rescale_error: str = ""


@dataclass(frozen=True)
class WindowPreset:
    """A display window in HU, from WindowCenter (0028,1050) and WindowWidth (0028,1051)."""

    center_hu: float
    width_hu: float
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"center_hu": self.center_hu, "width_hu": self.width_hu, "name": self.name}


@dataclass
class InstanceInfo:
    """Header facts of one image, or of one frame of a multi-frame image."""

    path: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    series_description: str
    study_description: str
    series_number: int | None
    instance_number: int | None
    image_type: tuple[str, ...]
    kernel: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    number_of_frames: int
    frame_index: int | None
    position_xyz_mm: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing_rc_mm: tuple[float, float] | None
    slice_thickness_mm: float | None
    gantry_tilt_deg: float | None
    burned_in_annotation: str
    encoding: PixelEncoding
    windows: list[WindowPreset] = field(default_factory=list)
    window_warning: str = ""
    charset_warning: str = ""
    pixel_data_offset: int | None = None
    pixel_data_length: int | None = None
    # LossyImageCompression (0028,2110) "01" with its method and ratio, or "" when the pixels
    # never went through lossy compression (as far as the header records).
    lossy_history: str = ""
    # Why ImagePositionPatient or ImageOrientationPatient is unusable although present (a
    # "nan", a zero-length direction); such a value is set to None like an absent one.
    geometry_problem: str = ""

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)

    @property
    def label(self) -> str:
        """File name, with the frame number for a frame of a multi-frame file."""
        if self.frame_index is None:
            return self.file_name
        return f"{self.file_name} frame {self.frame_index + 1}"


def clean_text(value: object) -> str:
    """Convert a decoded DICOM value to a str that is always valid UTF-8.

    pydicom replaces bytes that the declared SpecificCharacterSet cannot decode, but surrogate
    escapes can still appear, and they would fail later when encoded for JSON or HTML.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "").strip()


def _get(ds: HeaderSource, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        # A malformed value (a DS with letters, an unknown character set) must not stop the
        # scan: the attribute is treated as absent and the caller decides whether it matters.
        logger.debug("unreadable %s: %s", keyword, exc)
        return None


def _as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        # pydicom accepts "nan" and "inf" as DS with a warning. Such a position or orientation
        # is as unknown as an absent one (_geometry_problem writes the message).
        return None
    return numbers


def _numbers_text(numbers: list[float]) -> str:
    return "\\".join(f"{v:g}" for v in numbers)


def _geometry_problem(source: HeaderSource | None, keyword: str, count: int) -> str:
    """Describe why ``keyword`` of ``source`` is unusable, or "" when it is absent or valid."""
    if source is None:
        return ""
    value = _get(source, keyword)
    if value is None:
        return ""
    try:
        numbers = [float(v) for v in _multi(value)]
    except (TypeError, ValueError):
        return f"{keyword} is not numeric ({clean_text(value)!r})"
    if len(numbers) != count:
        return f"{keyword} has {len(numbers)} values instead of {count}"
    bad = [v for v in numbers if not math.isfinite(v)]
    if bad:
        return f"{keyword} contains {str(bad[0])!r}"
    if count == 6:
        row, column = numbers[:3], numbers[3:]
        if math.hypot(*row) < 0.5 or math.hypot(*column) < 0.5:
            return f"{keyword} has a zero-length direction ({_numbers_text(numbers)})"
        cross = (
            row[1] * column[2] - row[2] * column[1],
            row[2] * column[0] - row[0] * column[2],
            row[0] * column[1] - row[1] * column[0],
        )
        if math.hypot(*cross) < 0.5:
            return f"{keyword} has parallel row and column directions ({_numbers_text(numbers)})"
        cosine = sum(r * c for r, c in zip(row, column, strict=True)) / (
            math.hypot(*row) * math.hypot(*column)
        )
        # Rounding to a few decimals leaves a cosine near 1e-3; 0.01 is about 0.6 degrees off
        # a right angle, which no scanner writes (an estimate), so the value is corrupt.
        if abs(cosine) > NON_ORTHOGONAL_COSINE:
            return (
                f"{keyword} has row and column directions that are not perpendicular "
                f"(cosine {cosine:.2f}: {_numbers_text(numbers)})"
            )
    return ""


def _multi(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def read_windows(ds: HeaderSource) -> tuple[list[WindowPreset], str]:
    """Return the window presets of ``ds`` (first = default) and a warning text or ""."""
    centers = [_as_float(v) for v in _multi(_get(ds, "WindowCenter"))]
    widths = [_as_float(v) for v in _multi(_get(ds, "WindowWidth"))]
    names = [clean_text(v) for v in _multi(_get(ds, "WindowCenterWidthExplanation"))]
    warning = ""
    if len(centers) != len(widths):
        warning = (
            f"WindowCenter has {len(centers)} values but WindowWidth has {len(widths)}; "
            f"only the first {min(len(centers), len(widths))} pairs are offered as presets"
        )
    presets: list[WindowPreset] = []
    for index, (center, width) in enumerate(zip(centers, widths, strict=False)):
        if center is None or width is None or width <= 0:
            continue
        name = names[index] if index < len(names) else ""
        preset = WindowPreset(center, width, name)
        if preset not in presets:
            presets.append(preset)
    return presets, warning


# Characters that exporters write for a minus sign: Unicode minus, hyphen, figure dash, en
# dash, small and full-width hyphen-minus. Any of them before a number can only mean minus.
_MINUS_SIGNS = "\u2212\u2010\u2012\u2013\ufe63\uff0d"
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# A comma between digits is a decimal comma (a European-locale exporter) unless exactly three
# digits follow it, which could as well be a thousands separator ("1,024").
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,(?:\d{1,2}|\d{4,})")


def _raw_text(source: HeaderSource, keyword: str) -> str | None:
    """Return the value of ``keyword`` as the text written in the file, or None if absent.

    pydicom converts DS values with float(), which loses nothing for valid values but cannot
    represent "2,5" or "\u22121024". The raw bytes are read while pydicom still has them.
    """
    if isinstance(source, NativeHeader):
        # The native reader passes only single, valid numbers (see native.RESCALE_TAGS).
        value = source.get(keyword)
        if keyword not in source:
            return None
        return "" if value is None else repr(float(value))
    if keyword not in source:
        return None
    try:
        value = source.get_item(keyword).value
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        logger.debug("unreadable %s: %s", keyword, exc)
        value = _get(source, keyword)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").replace("\x00", "").strip()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    text = str(value)
    try:
        # pydicom decodes a DS as ASCII-compatible Latin-1, so UTF-8 bytes (a Unicode minus)
        # arrive as several characters; undo that to see what was written.
        text = text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return text.strip()


def _parse_rescale(text: str, keyword: str) -> tuple[float | None, str, str]:
    """Read one rescale value; returns (value or None if empty, repair note, error text)."""
    items = [item.strip() for item in text.split("\\")]
    if all(item == "" for item in items):
        return None, "", ""
    values: list[float] = []
    repairs: list[str] = []
    for item in items:
        cleaned = item
        if cleaned and cleaned[0] in _MINUS_SIGNS:
            cleaned = "-" + cleaned[1:]
            repairs.append("a non-ASCII minus sign")
        if _DECIMAL_COMMA.fullmatch(cleaned):
            cleaned = cleaned.replace(",", ".")
            repairs.append("a decimal comma")
        number = float(cleaned) if _PLAIN_NUMBER.fullmatch(cleaned) else None
        if number is None or not math.isfinite(number):
            return (
                None,
                "",
                f"{keyword} (0028,{RESCALE_ELEMENTS[keyword]:04X}) is '{text}', which is not a "
                "number; the HU cannot be computed. Correct the header or re-export the series.",
            )
        values.append(number)
    if len(set(values)) > 1:
        return (
            None,
            "",
            f"{keyword} (0028,{RESCALE_ELEMENTS[keyword]:04X}) holds {len(values)} different "
            f"values ('{text}'), but a frame has one; the HU cannot be computed. Correct the "
            "header or re-export the series.",
        )
    if len(values) > 1:
        repairs.append(f"{len(values)} equal values")
    note = ""
    if repairs:
        note = (
            f"{keyword} '{text}' read as {values[0]:g} (it has "
            + " and ".join(sorted(set(repairs)))
            + ")"
        )
    return values[0], note, ""


RESCALE_ELEMENTS = {"RescaleIntercept": 0x1052, "RescaleSlope": 0x1053}


def _encoding(ds: HeaderSource, transform: Dataset | None) -> PixelEncoding:
    source = transform if transform is not None else ds
    readings: dict[str, tuple[tuple[float | None, str, str], str | None]] = {}
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        text = _raw_text(source, keyword)
        readings[keyword] = (
            (None, "", "") if text is None else _parse_rescale(text, keyword),
            text,
        )

    (slope, slope_note, slope_error), slope_text = readings["RescaleSlope"]
    (intercept, intercept_note, intercept_error), intercept_text = readings["RescaleIntercept"]
    # What was assumed in place of a missing value, for the loader's warning.
    missing: list[str] = []
    if slope is None:
        missing.append("RescaleSlope absent" if slope_text is None else "RescaleSlope empty")
    elif slope == 0.0:
        missing.append("RescaleSlope 0 (invalid)")
    if intercept is None:
        missing.append(
            "RescaleIntercept absent" if intercept_text is None else "RescaleIntercept empty"
        )

    bits_allocated = _as_int(_get(ds, "BitsAllocated")) or 16
    bits_stored = _as_int(_get(ds, "BitsStored")) or bits_allocated
    high_bit = _as_int(_get(ds, "HighBit"))
    pixel_representation = _as_int(_get(ds, "PixelRepresentation")) or 0
    return PixelEncoding(
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=high_bit if high_bit is not None else bits_stored - 1,
        pixel_representation=pixel_representation,
        samples_per_pixel=_as_int(_get(ds, "SamplesPerPixel")) or 1,
        photometric_interpretation=clean_text(_get(ds, "PhotometricInterpretation")).upper(),
        rescale_slope=slope if slope is not None and slope != 0.0 else 1.0,
        rescale_intercept=intercept if intercept is not None else 0.0,
        rescale_present=not missing,
        rescale_missing=tuple(missing),
        rescale_note="; ".join(n for n in (slope_note, intercept_note) if n),
        rescale_error=slope_error or intercept_error,
        padding_value=_signed_tag_value(_get(ds, "PixelPaddingValue"), pixel_representation),
        padding_range_limit=_signed_tag_value(
            _get(ds, "PixelPaddingRangeLimit"), pixel_representation
        ),
    )


def _signed_tag_value(value: Any, pixel_representation: int) -> int | None:
    """Read a US-or-SS attribute such as PixelPaddingValue in the pixel data's signedness.

    In implicit VR files pydicom cannot know the VR and may read an SS value as unsigned.
    """
    number = _as_int(value[0] if isinstance(value, (list, tuple)) else value)
    if number is None:
        return None
    if pixel_representation == 1 and number > 0x7FFF:
        number -= 0x10000
    return number


def _first_item(sequence: Any) -> Dataset | None:
    if sequence is None:
        return None
    try:
        return sequence[0] if len(sequence) > 0 else None
    except (TypeError, IndexError):
        return None


def _functional_group(shared: Dataset | None, frame: Dataset | None, keyword: str) -> Any:
    """Return the first item of a functional group macro, per-frame taking precedence."""
    for group in (frame, shared):
        if group is not None:
            item = _first_item(_get(group, keyword))
            if item is not None:
                return item
    return None


def _lossy_history(ds: HeaderSource) -> str:
    """Describe a lossy compression the pixels went through before this file, or return ""."""
    if clean_text(_get(ds, "LossyImageCompression")) != "01":
        return ""
    text = "LossyImageCompression 01"
    methods = [clean_text(v) for v in _multi(_get(ds, "LossyImageCompressionMethod"))]
    if any(methods):
        text += f", method {'/'.join(m for m in methods if m)}"
    ratios = [_as_float(v) for v in _multi(_get(ds, "LossyImageCompressionRatio"))]
    if any(r is not None for r in ratios):
        text += f", ratio {'/'.join(f'{r:g}' for r in ratios if r is not None)}"
    return text


def _uid(ds: HeaderSource, keyword: str) -> str:
    return clean_text(_get(ds, keyword))


def read_header(path: str, *, archives: bool = False) -> tuple[HeaderSource, list[InstanceInfo]]:
    """Read the header of ``path`` and describe each of its images.

    Raises :class:`HeaderSkip` with a reason code for every file that is not a usable image
    instance (``empty``, ``not_dicom``, ``dicomdir``, ``truncated``, ``missing_uid``,
    ``unreadable``, ``archive``). Uncompressed little endian files are read by
    :func:`inference.dicom.native.parse_native_header`; every other file by pydicom. With
    ``archives``, a file that starts with the zip signature is an ``archive`` before anything
    else, as the caller will extract it (a DICOM preamble may hold that signature too).
    """
    try:
        # Unbuffered: every read is one large read, and no buffer is set up per file.
        with open(path, "rb", buffering=0) as handle:
            size_bytes = os.fstat(handle.fileno()).st_size
            head, native = _read_head(handle, size_bytes, archives)
    except OSError as exc:
        raise HeaderSkip("unreadable", f"cannot read the file: {exc.strerror or exc}") from exc
    return _describe_header(path, path, head, native, size_bytes)


def read_header_bytes(
    path: str, data: bytes, *, archives: bool = False
) -> tuple[HeaderSource, list[InstanceInfo]]:
    """Read the header of a file held in memory, as :func:`read_header` reads one on disk.

    ``path`` only names the file in the results and need not exist. The same bytes give the
    same instance records and the same :class:`HeaderSkip` reasons as :func:`read_header`.
    Values that pydicom defers (DEFER_SIZE_BYTES) are read from ``data`` when accessed.
    """
    stream = io.BytesIO(data)
    head, native = _read_head(stream, len(data), archives)
    stream.seek(0)
    return _describe_header(path, stream, head, native, len(data))


def _read_head(
    handle: IO[bytes], size_bytes: int, archives: bool
) -> tuple[bytes, NativeHeader | None]:
    """Read a file's first HEAD_BYTES and, for the common encodings, parse its whole header."""
    if size_bytes == 0:
        raise HeaderSkip("empty", "empty file (0 bytes)")
    # One read usually contains the whole header, so most files are described from it
    # without pydicom. The pixel data after the header is not read.
    head = handle.read(HEAD_BYTES)
    if archives and head[:4] == ZIP_SIGNATURE:
        raise HeaderSkip("archive", "zip archive")
    if native_headers_enabled:
        try:
            return head, parse_native_header(handle, head, size_bytes)
        except NeedsPydicom as reason:
            logger.debug("header read with pydicom: %s", reason)
    return head, None


def _describe_header(
    path: str,
    source: str | IO[bytes],
    head: bytes,
    native: NativeHeader | None,
    size_bytes: int,
) -> tuple[HeaderSource, list[InstanceInfo]]:
    """Describe a file from its native header, or else parse ``source`` with pydicom."""
    if native is not None:
        return native, _describe_native(path, native, size_bytes)
    if head[:4] == ZIP_SIGNATURE:
        raise HeaderSkip(
            "archive", "zip archive: not extracted (scan_paths needs archive_dir to read it)"
        )
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    # Without a preamble, a DICOM stream starts with a group 0002 (file meta) or 0008 element.
    # Anything else is junk, so it is rejected before pydicom tries to parse it.
    if not has_preamble and head[:2] not in (b"\x02\x00", b"\x08\x00"):
        raise HeaderSkip("not_dicom", "not a DICOM file (no DICM preamble, no DICOM tag)")

    # NOTE: catch_warnings changes process-wide state, so scans running in parallel threads
    # can miss or swap each other's character set warnings (the scans themselves are unaffected).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(source, defer_size=DEFER_SIZE_BYTES, force=not has_preamble)
        except (EOFError, OSError) as exc:
            raise HeaderSkip("truncated", f"file ends inside the header: {exc}") from exc
        except (InvalidDicomError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HeaderSkip("not_dicom", f"not readable as DICOM: {exc}") from exc
        infos = _describe(path, ds, size_bytes)
    charset_problems = [str(w.message) for w in caught if _is_charset_warning(str(w.message))]
    if charset_problems:
        text = clean_text(charset_problems[0])
        for info in infos:
            info.charset_warning = text
    return ds, infos


def _is_charset_warning(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("character set", "charset", "decod", "encoding"))


def _describe(path: str, ds: HeaderSource, size_bytes: int) -> list[InstanceInfo]:
    sop_class = _uid(ds, "SOPClassUID")
    file_meta = getattr(ds, "file_meta", None)
    if not sop_class and file_meta is not None:
        sop_class = clean_text(file_meta.get("MediaStorageSOPClassUID"))
    if sop_class == MEDIA_STORAGE_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise HeaderSkip("dicomdir", "DICOMDIR index file; the images it lists are read directly")

    sop_instance = _uid(ds, "SOPInstanceUID")
    series_uid = _uid(ds, "SeriesInstanceUID")
    study_uid = _uid(ds, "StudyInstanceUID")
    if not (sop_instance and series_uid and study_uid):
        if not (sop_class or sop_instance or series_uid or "Modality" in ds):
            raise HeaderSkip("not_dicom", "no DICOM identifying attributes")
        missing = [
            name
            for name, value in (
                ("SOPInstanceUID", sop_instance),
                ("SeriesInstanceUID", series_uid),
                ("StudyInstanceUID", study_uid),
            )
            if not value
        ]
        if PIXEL_DATA_TAG not in ds and "PixelData" not in ds:
            # pydicom stops quietly at a header cut short, so the later UIDs and the pixel
            # data are both missing. That is a damaged file, not a non-image object.
            raise HeaderSkip(
                "truncated",
                f"the header ends before {', '.join(missing)} and the pixel data; the file is "
                "probably cut short. Copy it again from its source.",
            )
        raise HeaderSkip("missing_uid", f"missing {', '.join(missing)}")

    transfer_syntax = ""
    if file_meta is not None:
        transfer_syntax = clean_text(file_meta.get("TransferSyntaxUID"))
    if not transfer_syntax:
        # force=True reading guessed the encoding; pydicom records its guess on the dataset.
        transfer_syntax = (
            "1.2.840.10008.1.2" if getattr(ds, "is_implicit_VR", True) else "1.2.840.10008.1.2.1"
        )

    if PIXEL_DATA_TAG not in ds:
        modality = clean_text(_get(ds, "Modality")).upper()
        if modality and modality != "CT":
            raise HeaderSkip(
                "other_modality",
                f"modality {modality} object without pixel data (a report, presentation state "
                "or other non-image object)",
            )
        if _as_int(_get(ds, "Rows")) and sop_class in CT_IMAGE_SOP_CLASSES:
            raise HeaderSkip(
                "truncated",
                "CT image without pixel data (Rows and Columns are set); the file is probably "
                "cut short. Copy it again from its source.",
            )
        raise HeaderSkip("no_pixel_data", "no pixel data: a report or other non-image object")

    pixel_offset: int | None = None
    pixel_length: int | None = None
    if isinstance(ds, NativeHeader):
        pixel_offset, pixel_length = ds.pixel_data_offset, ds.pixel_data_length
    elif PIXEL_DATA_TAG in ds:
        raw = ds._dict[Tag(PIXEL_DATA_TAG)]  # read the raw element so deferred data stays on disk
        value_tell = getattr(raw, "value_tell", None)
        if value_tell is None:
            value_tell = getattr(raw, "file_tell", None)
        length = getattr(raw, "length", None)
        undefined = length is None or length == 0xFFFFFFFF
        # In a deflated file pydicom reports offsets in the inflated stream, which may exceed
        # the compressed file's size. The pixels are then read through pydicom, not by offset.
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            value_tell = None
        if value_tell is not None and not undefined and length is not None:
            if value_tell + length > size_bytes:
                position = _as_floats(_get(ds, "ImagePositionPatient"), 3)
                where = f" (image at z = {position[2]:g} mm)" if position is not None else ""
                raise HeaderSkip(
                    "truncated",
                    f"pixel data needs {length} bytes from offset {value_tell} but the file "
                    f"has {size_bytes} bytes{where}; copy the file again from its source",
                    series_instance_uid=series_uid,
                )
            pixel_offset, pixel_length = int(value_tell), int(length)

    rows = _as_int(_get(ds, "Rows")) or 0
    columns = _as_int(_get(ds, "Columns")) or 0
    number_of_frames = _as_int(_get(ds, "NumberOfFrames")) or 1
    image_type = tuple(clean_text(v).upper() for v in _multi(_get(ds, "ImageType")))
    kernel = "\\".join(clean_text(v) for v in _multi(_get(ds, "ConvolutionKernel")))
    windows, window_warning = read_windows(ds)
    base: dict[str, Any] = {
        "path": path,
        "sop_instance_uid": sop_instance,
        "sop_class_uid": sop_class,
        "series_instance_uid": series_uid,
        "study_instance_uid": study_uid,
        "modality": clean_text(_get(ds, "Modality")).upper(),
        "series_description": clean_text(_get(ds, "SeriesDescription")),
        "study_description": clean_text(_get(ds, "StudyDescription")),
        "series_number": _as_int(_get(ds, "SeriesNumber")),
        "instance_number": _as_int(_get(ds, "InstanceNumber")),
        "image_type": image_type,
        "kernel": kernel,
        "transfer_syntax_uid": transfer_syntax,
        "rows": rows,
        "columns": columns,
        "number_of_frames": number_of_frames,
        "burned_in_annotation": clean_text(_get(ds, "BurnedInAnnotation")).upper(),
        "gantry_tilt_deg": _as_float(_get(ds, "GantryDetectorTilt")),
        "pixel_data_offset": pixel_offset,
        "pixel_data_length": pixel_length,
        "lossy_history": _lossy_history(ds),
    }

    shared = _first_item(_get(ds, "SharedFunctionalGroupsSequence"))
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    # Files with functional groups are always read by pydicom (see native.NEEDS_PYDICOM_TAGS).
    if (
        isinstance(ds, Dataset)
        and per_frame is not None
        and number_of_frames >= 1
        and len(per_frame) == number_of_frames
    ):
        return [
            _describe_frame(ds, base, shared, per_frame[index], index)
            for index in range(number_of_frames)
        ]

    orientation = _as_floats(_get(ds, "ImageOrientationPatient"), 6)
    spacing = _as_floats(_get(ds, "PixelSpacing"), 2)
    problem = _geometry_problem(ds, "ImageOrientationPatient", 6)
    if per_frame is not None and orientation is None and not problem:
        problem = (
            f"{len(per_frame)} per-frame functional groups for {number_of_frames} frames "
            "(NumberOfFrames), so the frame positions are unknown"
        )
    if problem:
        orientation = None
    position, position_problem = _image_position(ds)
    info = InstanceInfo(
        **base,
        geometry_problem=_join_problems(problem, position_problem),
        frame_index=None,
        position_xyz_mm=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing_rc_mm=spacing,  # type: ignore[arg-type]
        slice_thickness_mm=_as_float(_get(ds, "SliceThickness")),
        encoding=_encoding(ds, None),
        windows=windows,
        window_warning=window_warning,
    )
    return [info]


def _image_position(ds: HeaderSource) -> tuple[tuple[float, ...] | None, str]:
    """Return ImagePositionPatient of ``ds`` (None when unusable) and why it is unusable."""
    position = _as_floats(_get(ds, "ImagePositionPatient"), 3)
    problem = _geometry_problem(ds, "ImagePositionPatient", 3)
    return (None if problem else position), problem


def _join_problems(*problems: str) -> str:
    return "; ".join(p for p in problems if p)


def _describe_native(path: str, header: NativeHeader, size_bytes: int) -> list[InstanceInfo]:
    """Describe a file read by the native reader, reusing the work done for its series.

    Files whose attributes other than those in :data:`native.PER_IMAGE_TAGS` are equal (see
    :class:`native.SharedValues`) describe the same way in every field that comes from those
    attributes. The first such file goes through :func:`_describe`. The others copy its
    InstanceInfo and set the fields that come from their own SOPInstanceUID, InstanceNumber,
    ImagePositionPatient and pixel data. A file without a SOPInstanceUID, which
    :func:`_describe` rejects, always goes through it.
    """
    shared = header.shared
    sop_instance = _uid(header, "SOPInstanceUID")
    if shared is None or not sop_instance:
        return _describe(path, header, size_bytes)
    # One entry, so that scans in other threads see both parts or neither.
    derived: tuple[InstanceInfo, str] | None = shared.derived.get("instance")
    if derived is None:
        infos = _describe(path, header, size_bytes)
        # A private copy, so that a caller changing the returned object changes no other.
        shared.derived["instance"] = (
            dataclasses.replace(infos[0], windows=list(infos[0].windows)),
            _geometry_problem(header, "ImageOrientationPatient", 6),
        )
        return infos
    template, orientation_problem = derived
    position = header.get("ImagePositionPatient")
    if type(position) is tuple and len(position) == 3:
        # The native reader gives finite floats only (native._numbers), which _image_position
        # would return as they are, without a problem.
        position_problem = ""
    else:
        position, position_problem = _image_position(header)
    # A copy of the template's fields without dataclasses.replace, which calls __init__ with
    # every field (about 4 us per file). The equivalence tests of the native reader compare
    # every field with pydicom's result.
    info = InstanceInfo.__new__(InstanceInfo)
    info.__dict__.update(template.__dict__)
    info.path = path
    info.sop_instance_uid = sop_instance
    info.instance_number = _as_int(_get(header, "InstanceNumber"))
    info.position_xyz_mm = position
    info.geometry_problem = _join_problems(orientation_problem, position_problem)
    info.pixel_data_offset = header.pixel_data_offset
    info.pixel_data_length = header.pixel_data_length
    info.windows = list(template.windows)
    return [info]


def _describe_frame(
    ds: Dataset,
    base: dict[str, Any],
    shared: Dataset | None,
    frame_group: Dataset,
    index: int,
) -> InstanceInfo:
    """Describe one frame of an Enhanced CT image from its functional group macros."""
    position_item = _functional_group(shared, frame_group, "PlanePositionSequence")
    orientation_item = _functional_group(shared, frame_group, "PlaneOrientationSequence")
    measures_item = _functional_group(shared, frame_group, "PixelMeasuresSequence")
    transform_item = _functional_group(shared, frame_group, "PixelValueTransformationSequence")
    voi_item = _functional_group(shared, frame_group, "FrameVOILUTSequence")

    position = _as_floats(_get(position_item, "ImagePositionPatient"), 3) if position_item else None
    orientation = (
        _as_floats(_get(orientation_item, "ImageOrientationPatient"), 6)
        if orientation_item
        else None
    )
    spacing = _as_floats(_get(measures_item, "PixelSpacing"), 2) if measures_item else None
    thickness = _as_float(_get(measures_item, "SliceThickness")) if measures_item else None
    problems = [
        _geometry_problem(orientation_item, "ImageOrientationPatient", 6),
        _geometry_problem(position_item, "ImagePositionPatient", 3),
    ]
    if problems[0]:
        orientation = None
    if problems[1]:
        position = None
    windows, window_warning = read_windows(voi_item) if voi_item is not None else ([], "")
    if not windows:
        windows, window_warning = read_windows(ds)
    return InstanceInfo(
        **base,
        geometry_problem="; ".join(p for p in problems if p),
        frame_index=index,
        position_xyz_mm=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing_rc_mm=spacing,  # type: ignore[arg-type]
        slice_thickness_mm=thickness,
        encoding=_encoding(ds, transform_item),
        windows=windows,
        window_warning=window_warning,
    )


def transfer_syntax_name(uid: str) -> str:
    """Return 'Name (uid)' for a transfer syntax UID, or the UID alone when unknown."""
    name = UID(uid).name if uid else ""
    return f"{name} ({uid})" if name and name != uid else uid or "unknown transfer syntax"
