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

The images of a series share most of their header. What they share is decoded once
(:class:`SharedValues`), and a file laid out like the previous one is read by comparing its
bytes with that file's instead of walking its elements (:class:`_Layout`).
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
# Attributes that differ between the images of a series. All other attributes usually repeat,
# so they are decoded once per distinct set of raw values and the result is cached.
PER_IMAGE_TAGS = frozenset({0x00080018, 0x00200013, 0x00200032})
MAX_CACHED_HEADERS = 256
# Nesting of undefined-length sequences beyond this is left to pydicom.
MAX_SEQUENCE_DEPTH = 8

_EXPLICIT_HEAD = struct.Struct("<HH2sH")
_IMPLICIT_HEAD = struct.Struct("<HHI")
_UINT32 = struct.Struct("<I")
_UINT16 = struct.Struct("<H")
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


class SharedValues:
    """The decoded attributes of a header other than :data:`PER_IMAGE_TAGS`.

    One instance serves every file whose other attributes have the same raw bytes, the same
    transfer syntax and SOP class, typically all images of a series. ``derived`` lets callers
    keep what they compute from these attributes alone (see ``headers._describe_native``).
    """

    __slots__ = ("values", "present", "derived")

    def __init__(self, values: dict[str, Any], present: frozenset[str]) -> None:
        self.values = values
        self.present = present
        self.derived: dict[str, Any] = {}


_shared_cache: dict[tuple[Any, ...], SharedValues] = {}


# File meta elements that differ between files: the group length and the SOP instance UID.
META_PER_FILE_ELEMENTS = (0x0000, 0x0003)


class _Layout:
    """The header of the last file parsed in full, split around the elements that differ.

    Those elements are the file meta elements of :data:`META_PER_FILE_ELEMENTS` and the
    top-level elements of :data:`PER_IMAGE_TAGS`. ``segments`` are the bytes from offset 132
    before, between and after them (the last one ends with the Pixel Data element's header).
    ``fields`` describes each such element: the bytes of its tag and explicit VR (the tag
    alone in implicit VR), whether its length takes 4 bytes, and the tag and VR under which
    its value is kept. Tag 0 marks a file meta value, which is not kept. Another image of the series
    usually differs only inside those elements. When a file contains the same segments and
    fields, walking its elements would meet the same elements with the same values in the
    same order, so it is read by comparing the segments instead (see
    :func:`_parse_like_layout`).
    """

    __slots__ = ("segments", "fields", "file_meta", "implicit", "pixel_data_length", "shared")

    def __init__(
        self,
        segments: list[bytes],
        fields: list[tuple[bytes, bool, int, bytes]],
        file_meta: dict[str, str],
        implicit: bool,
        pixel_data_length: int,
        shared: SharedValues,
    ) -> None:
        self.segments = segments
        self.fields = fields
        self.file_meta = file_meta
        self.implicit = implicit
        # Part of the last segment's bytes, so equal in every file that matches.
        self.pixel_data_length = pixel_data_length
        self.shared = shared


# One layout is kept: the files of a series usually come one after another.
_last_layout: _Layout | None = None


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
        shared: SharedValues | None = None,
    ) -> None:
        self._values = values
        self._present = present
        self.file_meta = file_meta
        self.is_implicit_VR = is_implicit_vr
        self.pixel_data_offset = pixel_data_offset
        self.pixel_data_length = pixel_data_length
        # The attributes this header shares with others (None when built by hand).
        self.shared = shared

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
    global _last_layout
    layout = _last_layout
    if layout is not None:
        header = _parse_like_layout(layout, data, size_bytes)
        if header is not None:
            return header

    end = len(data)
    file_meta: dict[str, str] = {}
    pos = 132
    # Where the bytes around the elements that differ between files start and end, and what
    # those elements are, for the next file's layout.
    segment_bounds: list[int] = [pos]
    fields: list[tuple[bytes, bool, int, bytes]] = []
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
        elif element in META_PER_FILE_ELEMENTS and value_pos == pos + 8:
            segment_bounds += (pos, value_pos + length)
            fields.append((data[pos : pos + 6], False, 0, vr))
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
    sop_class = file_meta.get("MediaStorageSOPClassUID")
    # In implicit VR the check above reads the first element's length field, so a layout
    # whose data set starts with an element that differs between files would skip a check.
    layout_possible = True
    data_set_start = pos

    # Raw values of the shared attributes, flat (tag, VR, bytes, tag, ...), and of the others.
    shared_raw: list[Any] = []
    per_image: list[tuple[int, bytes, bytes]] = []
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
            if tag in PER_IMAGE_TAGS:
                per_image.append((tag, vr, data[value_pos : value_pos + length]))
                segment_bounds += (pos, value_pos + length)
                fields.append((data[pos : pos + (4 if implicit else 6)], implicit, tag, vr))
                layout_possible = layout_possible and not (implicit and pos == data_set_start)
            else:
                shared_raw += (tag, vr, data[value_pos : value_pos + length])
        pos = value_pos + length

    key = (implicit, syntax, sop_class, *shared_raw)
    shared = _shared_cache.get(key)
    if shared is None:
        shared = _decode_shared(shared_raw, implicit)
        if len(_shared_cache) >= MAX_CACHED_HEADERS:
            _shared_cache.clear()
        _shared_cache[key] = shared
    header = _header(shared, per_image, file_meta, implicit, value_pos, length)
    segment_bounds.append(value_pos)
    _last_layout = None
    if layout_possible:
        segments = [
            data[a:b] for a, b in zip(segment_bounds[::2], segment_bounds[1::2], strict=True)
        ]
        _last_layout = _Layout(segments, fields, file_meta, implicit, length, shared)
    return header


def _header(
    shared: SharedValues,
    per_image: list[tuple[int, bytes, bytes]],
    file_meta: dict[str, str],
    implicit: bool,
    pixel_data_offset: int,
    pixel_data_length: int,
) -> NativeHeader:
    values = dict(shared.values)
    present = set(shared.present)
    for tag, vr, value in per_image:
        keyword = SCAN_ATTRIBUTES[tag][0]
        present.add(keyword)
        if value:
            values[keyword] = _decode_value(tag, vr, value)
    return NativeHeader(
        values, present, file_meta, implicit, pixel_data_offset, pixel_data_length, shared
    )


def _parse_like_layout(layout: _Layout, data: bytes, size_bytes: int) -> NativeHeader | None:
    """Read the header in ``data`` if it matches ``layout``, else return None.

    From offset 132, the file must hold every segment of the layout byte for byte, and
    between them elements that start with the layout's field bytes and have a defined length
    within ``data``. Its pixel data must end at the end of the file. Anything else (including
    a header longer than ``data``) returns None, and the caller walks the elements.
    """
    end = len(data)
    pos = 132
    per_image: list[tuple[int, bytes, bytes]] = []
    for segment, (head, long_length, tag, vr) in zip(layout.segments, layout.fields, strict=False):
        if not data.startswith(segment, pos):
            return None
        pos += len(segment)
        if pos + 8 > end or not data.startswith(head, pos):
            return None
        if long_length:
            (length,) = _UINT32.unpack_from(data, pos + 4)
        else:
            (length,) = _UINT16.unpack_from(data, pos + 6)
        value_pos = pos + 8
        if length == UNDEFINED_LENGTH or value_pos + length > end:
            return None
        if tag:
            per_image.append((tag, vr, data[value_pos : value_pos + length]))
        pos = value_pos + length
    last = layout.segments[-1]
    if not data.startswith(last, pos):
        return None
    # The last segment ends with the Pixel Data element's header, so the length is the same.
    pixel_data_offset = pos + len(last)
    if pixel_data_offset + layout.pixel_data_length != size_bytes:
        return None
    return _header(
        layout.shared,
        per_image,
        dict(layout.file_meta),
        layout.implicit,
        pixel_data_offset,
        layout.pixel_data_length,
    )


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


def _decode_shared(shared_raw: list[Any], implicit: bool) -> SharedValues:
    """Decode the raw values the way pydicom converts them, and check what needs pydicom."""
    values: dict[str, Any] = {}
    present: set[str] = set()
    for index in range(0, len(shared_raw), 3):
        tag, vr, value = shared_raw[index : index + 3]
        keyword = SCAN_ATTRIBUTES[tag][0]
        present.add(keyword)
        if value:
            values[keyword] = _decode_value(tag, vr, value)

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
    return SharedValues(values, frozenset(present))
