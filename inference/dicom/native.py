"""A fast header reader for the common case: uncompressed little endian single-frame files.

pydicom builds a full dataset for every file, which costs about 1 ms per header. Here the data
elements of a file are walked with :mod:`struct`, and only the attributes that
:func:`inference.dicom.headers.read_header` uses are decoded. Parsing stops at Pixel Data,
whose offset and length are recorded.

Unusual files raise :class:`NeedsPydicom`, and the caller reads them with pydicom. These are
files without a preamble, big endian, compressed or deflated transfer syntaxes, multi-frame
images and functional groups, undefined lengths outside sequences, values pydicom might parse
differently, non-ASCII text, character sets outside :data:`ASCII_CHARSETS`, data after the
pixel data, and truncated files. Values are returned in the forms pydicom returns (str, float,
int, or a tuple of them), so the describing code in :mod:`inference.dicom.headers` turns a
header read here into the same InstanceInfo as a pydicom dataset.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from typing import IO, Any

logger = logging.getLogger(__name__)

# Bytes read first. CT headers are usually 2-20 KiB (an estimate), and longer ones are read in
# larger steps.
HEAD_BYTES = 16 * 1024

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA_TAG = 0x7FE00010
ITEM_TAG = 0xFFFEE000
ITEM_DELIMITER_TAG = 0xFFFEE00D
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# Character sets in which ASCII bytes decode to the same text, so ASCII-only values need no
# decoding step and pydicom would warn about nothing.
ASCII_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})
# Decoded values are cached by their bytes: most attributes repeat across a series' files.
MAX_CACHED_VALUES = 4096
_MISSING = object()
_decoded_cache: dict[tuple[int, bytes, bytes], Any] = {}
# Nesting of undefined-length sequences beyond this is left to pydicom.
MAX_SEQUENCE_DEPTH = 8

_EXPLICIT_HEAD = struct.Struct("<HH2sH")
_IMPLICIT_HEAD = struct.Struct("<HHI")
_UINT32 = struct.Struct("<I")
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
        b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_DS_ITEM = re.compile(r" *[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)? *")
_IS_ITEM = re.compile(r" *[+-]?\d+ *")

# Attributes read from the data set: tag -> (keyword, VR, how the value is decoded).
# "text" splits like pydicom's SH/LO (each value right-stripped); "code" like CS (the whole
# string right-stripped, then split); "single" must hold one value (UIDs and the like).
SCAN_ATTRIBUTES: dict[int, tuple[str, bytes, str]] = {
    0x00080005: ("SpecificCharacterSet", b"CS", "code"),
    0x00080008: ("ImageType", b"CS", "code"),
    0x00080016: ("SOPClassUID", b"UI", "uid"),
    0x00080018: ("SOPInstanceUID", b"UI", "uid"),
    0x00080060: ("Modality", b"CS", "code_single"),
    0x00081030: ("StudyDescription", b"LO", "text_single"),
    0x0008103E: ("SeriesDescription", b"LO", "text_single"),
    0x00180050: ("SliceThickness", b"DS", "ds"),
    0x00181120: ("GantryDetectorTilt", b"DS", "ds"),
    0x00181210: ("ConvolutionKernel", b"SH", "text"),
    0x0020000D: ("StudyInstanceUID", b"UI", "uid"),
    0x0020000E: ("SeriesInstanceUID", b"UI", "uid"),
    0x00200011: ("SeriesNumber", b"IS", "is"),
    0x00200013: ("InstanceNumber", b"IS", "is"),
    0x00200032: ("ImagePositionPatient", b"DS", "ds"),
    0x00200037: ("ImageOrientationPatient", b"DS", "ds"),
    0x00280002: ("SamplesPerPixel", b"US", "us"),
    0x00280004: ("PhotometricInterpretation", b"CS", "code_single"),
    0x00280008: ("NumberOfFrames", b"IS", "is"),
    0x00280010: ("Rows", b"US", "us"),
    0x00280011: ("Columns", b"US", "us"),
    0x00280030: ("PixelSpacing", b"DS", "ds"),
    0x00280100: ("BitsAllocated", b"US", "us"),
    0x00280101: ("BitsStored", b"US", "us"),
    0x00280102: ("HighBit", b"US", "us"),
    0x00280103: ("PixelRepresentation", b"US", "us"),
    0x00280120: ("PixelPaddingValue", b"US or SS", "us_or_ss"),
    0x00280121: ("PixelPaddingRangeLimit", b"US or SS", "us_or_ss"),
    0x00280301: ("BurnedInAnnotation", b"CS", "code_single"),
    0x00281050: ("WindowCenter", b"DS", "ds"),
    0x00281051: ("WindowWidth", b"DS", "ds"),
    0x00281052: ("RescaleIntercept", b"DS", "ds"),
    0x00281053: ("RescaleSlope", b"DS", "ds"),
    0x00281055: ("WindowCenterWidthExplanation", b"LO", "text"),
    0x00282110: ("LossyImageCompression", b"CS", "code_single"),
    0x00282112: ("LossyImageCompressionRatio", b"DS", "ds"),
    0x00282114: ("LossyImageCompressionMethod", b"CS", "code"),
}
# Elements whose presence needs pydicom: a DICOMDIR index and the functional groups of an
# Enhanced CT image, which are nested sequences.
NEEDS_PYDICOM_TAGS = frozenset({0x00041220, 0x52009229, 0x52009230})
RESCALE_TAGS = ("RescaleIntercept", "RescaleSlope")


class NeedsPydicom(Exception):
    """The file is valid or invalid in a way only pydicom decides; carries the reason."""


class _NeedMoreBytes(Exception):
    """The header runs past the bytes read so far; carries the number of bytes needed."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class NativeHeader:
    """The attributes of one native little endian file that the scan needs.

    Implements ``get(keyword)``, ``keyword in header`` and ``file_meta.get(keyword)`` with the
    values pydicom would give, so that the code describing a pydicom dataset describes this
    too. Values that are absent or empty read as None.
    """

    def __init__(
        self,
        values: dict[str, Any],
        present: set[str],
        file_meta: dict[str, str],
        is_implicit_vr: bool,
        pixel_data_offset: int,
        pixel_data_length: int,
    ) -> None:
        self._values = values
        self._present = present
        self.file_meta = file_meta
        self.is_implicit_VR = is_implicit_vr
        self.pixel_data_offset = pixel_data_offset
        self.pixel_data_length = pixel_data_length

    def get(self, keyword: str, default: Any = None) -> Any:
        return self._values.get(keyword, default)

    def __contains__(self, key: object) -> bool:
        if key == PIXEL_DATA_TAG:
            return True
        return key in self._present


def parse_native_header(handle: IO[bytes], head: bytes, size_bytes: int) -> NativeHeader:
    """Read the header of an open file whose first bytes are ``head``.

    Raises :class:`NeedsPydicom` with a reason when the file is not the common case.
    """
    if len(head) < 132 or head[128:132] != b"DICM":
        raise NeedsPydicom("no DICM preamble")
    data = head
    while True:
        try:
            return _parse(data, size_bytes)
        except _NeedMoreBytes as more:
            if len(data) >= size_bytes:
                raise NeedsPydicom("file ends inside the header") from None
            want = min(size_bytes, max(2 * len(data), more.needed + HEAD_BYTES))
            handle.seek(len(data))
            data = data + handle.read(want - len(data))
            if len(data) < want:
                raise NeedsPydicom("file shorter than its size") from None


def _parse(data: bytes, size_bytes: int) -> NativeHeader:
    end = len(data)
    file_meta: dict[str, str] = {}
    pos = 132
    # File meta information (group 0002) is always explicit VR little endian.
    while True:
        if pos + 8 > end:
            raise _NeedMoreBytes(pos + 8)
        group, element, vr, length = _EXPLICIT_HEAD.unpack_from(data, pos)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise _NeedMoreBytes(pos + 12)
            (length,) = _UINT32.unpack_from(data, pos + 8)
            value_pos = pos + 12
        elif vr in _SHORT_VRS:
            value_pos = pos + 8
        else:
            raise NeedsPydicom("file meta element with an unknown VR")
        if length == UNDEFINED_LENGTH:
            raise NeedsPydicom("file meta element of undefined length")
        if value_pos + length > end:
            raise _NeedMoreBytes(value_pos + length)
        if element in (0x0002, 0x0010):
            keyword = "MediaStorageSOPClassUID" if element == 0x0002 else "TransferSyntaxUID"
            file_meta[keyword] = _uid(data[value_pos : value_pos + length])
        pos = value_pos + length

    syntax = file_meta.get("TransferSyntaxUID", "")
    if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
        implicit = False
    elif syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        implicit = True
        # pydicom switches to explicit VR when the first element looks explicit.
        if data[pos + 4 : pos + 6] in _LONG_VRS | _SHORT_VRS:
            raise NeedsPydicom("implicit VR declared, but the first element looks explicit")
    else:
        raise NeedsPydicom(f"transfer syntax {syntax or 'absent'}")

    raw: dict[int, tuple[bytes, bytes]] = {}
    last_tag = -1
    while True:
        if pos + 8 > end:
            if pos >= size_bytes:
                raise NeedsPydicom("no pixel data")
            raise _NeedMoreBytes(pos + 8)
        if implicit:
            group, element, length = _IMPLICIT_HEAD.unpack_from(data, pos)
            tag = group << 16 | element
            vr = SCAN_ATTRIBUTES[tag][1] if tag in SCAN_ATTRIBUTES else b""
            value_pos = pos + 8
        else:
            group, element, vr, length = _EXPLICIT_HEAD.unpack_from(data, pos)
            tag = group << 16 | element
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise _NeedMoreBytes(pos + 12)
                (length,) = _UINT32.unpack_from(data, pos + 8)
                value_pos = pos + 12
            elif vr in _SHORT_VRS:
                value_pos = pos + 8
            else:
                raise NeedsPydicom(f"unknown VR at ({group:04X},{element:04X})")
        if tag <= last_tag or group == 0x0002 or group == 0xFFFE:
            raise NeedsPydicom(f"element ({group:04X},{element:04X}) out of order")
        last_tag = tag
        if tag == PIXEL_DATA_TAG:
            if length == UNDEFINED_LENGTH:
                raise NeedsPydicom("encapsulated pixel data")
            if value_pos + length != size_bytes:
                # A truncated file, or elements after the pixel data: pydicom reports both.
                raise NeedsPydicom("pixel data does not end at the end of the file")
            break
        if tag in NEEDS_PYDICOM_TAGS or tag > PIXEL_DATA_TAG:
            raise NeedsPydicom(f"element ({group:04X},{element:04X})")
        if length == UNDEFINED_LENGTH:
            if not implicit and vr != b"SQ":
                raise NeedsPydicom(f"undefined length {vr!r} element")
            if tag in SCAN_ATTRIBUTES:
                raise NeedsPydicom(f"undefined length ({group:04X},{element:04X})")
            pos = _skip_sequence(data, value_pos, implicit, 1)
            continue
        if tag in SCAN_ATTRIBUTES:
            expected_vr = SCAN_ATTRIBUTES[tag][1]
            if vr != expected_vr and not (expected_vr == b"US or SS" and vr in (b"US", b"SS")):
                raise NeedsPydicom(f"({group:04X},{element:04X}) has VR {vr!r}")
            if value_pos + length > end:
                raise _NeedMoreBytes(value_pos + length)
            raw[tag] = (vr, data[value_pos : value_pos + length])
        pos = value_pos + length

    values, present = _decode(raw, implicit)
    return NativeHeader(values, present, file_meta, implicit, value_pos, length)


def _skip_sequence(data: bytes, pos: int, implicit: bool, depth: int) -> int:
    """Return the position after the undefined-length sequence whose items start at ``pos``."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise NeedsPydicom("sequences nested too deeply")
    end = len(data)
    while True:
        if pos + 8 > end:
            raise _NeedMoreBytes(pos + 8)
        group, element, length = _IMPLICIT_HEAD.unpack_from(data, pos)
        tag = group << 16 | element
        pos += 8
        if tag == SEQUENCE_DELIMITER_TAG:
            return pos
        if tag != ITEM_TAG:
            raise NeedsPydicom("sequence item expected")
        if length != UNDEFINED_LENGTH:
            pos += length
            continue
        # An undefined-length item: walk its elements up to the item delimiter.
        while True:
            if pos + 8 > end:
                raise _NeedMoreBytes(pos + 8)
            if implicit:
                group, element, length = _IMPLICIT_HEAD.unpack_from(data, pos)
                vr = b""
                value_pos = pos + 8
            else:
                group, element, vr, length = _EXPLICIT_HEAD.unpack_from(data, pos)
                if group == 0xFFFE:
                    value_pos = pos + 8
                    (length,) = _UINT32.unpack_from(data, pos + 4)
                elif vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise _NeedMoreBytes(pos + 12)
                    (length,) = _UINT32.unpack_from(data, pos + 8)
                    value_pos = pos + 12
                elif vr in _SHORT_VRS:
                    value_pos = pos + 8
                else:
                    raise NeedsPydicom("unknown VR inside a sequence")
            tag = group << 16 | element
            if tag == ITEM_DELIMITER_TAG:
                pos = value_pos
                break
            if length == UNDEFINED_LENGTH:
                if not implicit and vr != b"SQ":
                    raise NeedsPydicom(f"undefined length {vr!r} element inside a sequence")
                pos = _skip_sequence(data, value_pos, implicit, depth + 1)
            else:
                pos = value_pos + length


def _decode_value(tag: int, vr: bytes, value: bytes) -> Any:
    """Decode one non-empty value; several values become a tuple, as pydicom's MultiValue."""
    keyword, _, kind = SCAN_ATTRIBUTES[tag]
    decoded: Any
    if kind == "uid":
        return _uid(value)
    if kind in ("code", "code_single"):
        decoded = _split(_ascii(value).rstrip(" \x00"))
    elif kind in ("text", "text_single"):
        items = tuple(item.rstrip("\x00 ") for item in _ascii(value).split("\\"))
        decoded = items[0] if len(items) == 1 else items
    elif kind == "ds":
        decoded = _numbers(value, _DS_ITEM, float)
    elif kind == "is":
        decoded = _numbers(value, _IS_ITEM, int)
    else:  # "us" and "us_or_ss": binary 16-bit values
        if len(value) != 2:
            raise NeedsPydicom(f"{keyword} does not hold one 16-bit value")
        decoded = int.from_bytes(value, "little", signed=vr == b"SS")
    if kind.endswith("_single") and isinstance(decoded, tuple):
        raise NeedsPydicom(f"{keyword} has several values")
    return decoded


def _ascii(value: bytes) -> str:
    if not value.isascii():
        raise NeedsPydicom("non-ASCII text")
    return value.decode("ascii")


def _uid(value: bytes) -> str:
    text = _ascii(value).rstrip("\x00 ")
    if "\\" in text:
        raise NeedsPydicom("a UID with several values")
    return text


def _split(text: str) -> Any:
    items = text.split("\\")
    return items[0] if len(items) == 1 else tuple(items)


def _numbers(value: bytes, pattern: re.Pattern[str], convert: type) -> Any:
    text = _ascii(value).strip(" ")
    items = text.split("\\")
    numbers = []
    for item in items:
        if pattern.fullmatch(item) is None:
            raise NeedsPydicom("a number pydicom might read differently")
        number = convert(item)
        if not math.isfinite(number):
            # "1e400" overflows to inf; the pydicom path reports such values by their text.
            raise NeedsPydicom("a number too large for a float")
        numbers.append(number)
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def _decode(raw: dict[int, tuple[bytes, bytes]], implicit: bool) -> tuple[dict[str, Any], set[str]]:
    """Decode the raw values the way pydicom converts them."""
    values: dict[str, Any] = {}
    present: set[str] = set()
    cache = _decoded_cache
    if len(cache) > MAX_CACHED_VALUES:
        cache.clear()
    for tag, (vr, value) in raw.items():
        keyword = SCAN_ATTRIBUTES[tag][0]
        present.add(keyword)
        if not value:
            continue
        key = (tag, vr, value)
        decoded = cache.get(key, _MISSING)
        if decoded is _MISSING:
            decoded = cache[key] = _decode_value(tag, vr, value)
        values[keyword] = decoded

    for keyword in RESCALE_TAGS:
        if keyword in present and not isinstance(values.get(keyword), float):
            # An empty or multi-valued rescale value needs the checks and messages of
            # headers._parse_rescale, which read the raw text through pydicom.
            raise NeedsPydicom(f"{keyword} is empty or has several values")
    charset = values.get("SpecificCharacterSet") or ""
    if not isinstance(charset, str) or charset.strip() not in ASCII_CHARSETS:
        raise NeedsPydicom(f"character set {charset!r}")
    frames = values.get("NumberOfFrames")
    if "NumberOfFrames" in present and frames != 1:
        raise NeedsPydicom("multi-frame image")
    if implicit and "PixelPaddingValue" in present and "PixelRepresentation" not in present:
        # pydicom chooses US or SS from PixelRepresentation; without it, leave it to pydicom.
        raise NeedsPydicom("PixelPaddingValue without PixelRepresentation")
    return values, present
