"""De-identification of a series from one template file, byte-identical to the full path.

``Deidentifier.deidentify_bytes`` (the full path: dicognito, then this project's profile
steps) costs 2-3 ms per file in pure Python, mostly parsing, walking and re-encoding headers
that are the same in every file of a series. ``SeriesDeidentifier`` runs the full path on the
first file of each series and keeps the original and de-identified bytes of every top-level
element as a template. For a later file of the same series with the same element structure:

- an element whose bytes equal the template's original gets the template's de-identified
  bytes (or is left out where the full path removed it);
- an element that differs is decoded as pydicom decodes it in the full path. dicognito's own
  element handlers then give it its new value (UIDs, shifted dates and times), in a small
  dataset that also contains its date or time partner. The profile removes it where it removes
  that element whatever the value, and pydicom encodes the rest as the full path does.

Anything the template cannot reproduce exactly takes the full path instead: a different
element structure, preamble, file meta (other than the instance UID) or transfer syntax, a
differing SOP class where the file meta lacks it (the full path copies it there), a
differing sequence or person name, an element whose new value depends on other elements or
that changes how they are read (FALLBACK_CONTEXT_KEYWORDS), an ambiguous VR other than
"US or SS", or pixel data that cannot be copied through.
``tests/webapp/test_ingest_deid_template.py`` compares both paths byte for byte.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, replace

import dicognito
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.tag import Tag

from webapp.ingest.deid import (
    EMPTIED_KEYWORDS,
    DeidentifiedInstance,
    Deidentifier,
    pixel_data_end,
    profile_removes,
)

logger = logging.getLogger(__name__)

# Elements whose de-identified value depends on other elements, or that change how other
# elements are read or de-identified. A file where one of them differs from the template
# takes the full path.
FALLBACK_CONTEXT_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",  # decoding of every text element
    "PatientName",  # pseudonym, and its words are cut out of SeriesDescription
    "PatientID",  # pseudonym, and its words are cut out of SeriesDescription
    "PatientSex",  # dicognito picks person names by sex
    "SeriesDescription",  # cleaned with the words of PatientName and PatientID
    "InstitutionName",  # dicognito derives InstitutionAddress from it
    "InstitutionAddress",
    "BurnedInAnnotation",  # read by dicognito's PatientIdentityRemoved updater
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "PixelRepresentation",  # resolves ambiguous VRs (US or SS) when writing
    *EMPTIED_KEYWORDS,
)
_CONTEXT_TAGS = frozenset(
    int(tag_for_keyword(keyword) or 0) for keyword in FALLBACK_CONTEXT_KEYWORDS
)

# File meta elements may differ from the template only in the instance UID.
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
_META_GROUP_LENGTH = 0x00020000
# File meta elements that deid._complete_file_meta copies from the dataset when they are absent:
# meta tag -> dataset tag (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID).
_COMPLETED_META = {0x00020002: 0x00080016, _MEDIA_STORAGE_SOP_INSTANCE_UID: 0x00080018}
_PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 32-bit length.
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
# The dicognito release whose element handlers FALLBACK_CONTEXT_KEYWORDS was written for; with
# another one every file takes the full path until the rules are checked again.
VERIFIED_DICOGNITO_VERSION = "0.19.0"
# Templates kept per Deidentifier; an upload rarely has more series than this.
MAX_TEMPLATES = 64


class _Unparsable(Exception):
    """The raw header cannot be split into elements here; the full path decides."""


@dataclass(frozen=True)
class _Element:
    tag: int
    vr: bytes  # b"" in implicit VR
    start: int  # first byte of the tag
    value_start: int
    end: int  # one past the value; for undefined lengths, past the sequence delimiter
    undefined_length: bool


@dataclass(frozen=True)
class _RawHeader:
    """An encoded file split into top-level elements, up to the pixel data."""

    preamble: bytes
    meta: dict[int, _Element]
    elements: dict[int, _Element]
    implicit: bool
    pixel_start: int  # len(data) when the header has no pixel data element


def _element_at(data: bytes, position: int, implicit: bool) -> _Element:
    if position + 8 > len(data):
        raise _Unparsable("truncated element header")
    tag = int.from_bytes(data[position : position + 2], "little") << 16 | int.from_bytes(
        data[position + 2 : position + 4], "little"
    )
    if implicit or tag >> 16 == 0xFFFE:
        vr = b""
        length = int.from_bytes(data[position + 4 : position + 8], "little")
        value_start = position + 8
    else:
        vr = data[position + 4 : position + 6]
        if vr in _LONG_VRS:
            if position + 12 > len(data):
                raise _Unparsable("truncated element header")
            length = int.from_bytes(data[position + 8 : position + 12], "little")
            value_start = position + 12
        elif vr.isalpha() and vr.isupper():
            length = int.from_bytes(data[position + 6 : position + 8], "little")
            value_start = position + 8
        else:
            raise _Unparsable("not an explicit VR")
    if length == _UNDEFINED:
        if tag == _ITEM:
            # An item contains elements, not items, so _skip_items walks it up to its delimiter.
            return _Element(tag, vr, position, value_start, value_start, True)
        # The contents of UN with undefined length are implicit VR (PS3.5 6.2.2).
        end = _skip_items(data, value_start, implicit or vr == b"UN")
        return _Element(tag, vr, position, value_start, end, True)
    end = value_start + length
    if end > len(data):
        raise _Unparsable("value runs past the end")
    return _Element(tag, vr, position, value_start, end, False)


def _skip_items(data: bytes, position: int, implicit: bool) -> int:
    """Return the position after the sequence delimiter of an undefined-length value."""
    while True:
        item = _element_at(data, position, True)
        if item.tag == _SEQUENCE_END:
            return item.value_start
        if item.tag != _ITEM:
            raise _Unparsable("sequence without items")
        if not item.undefined_length:
            position = item.end
            continue
        position = item.value_start
        while True:
            element = _element_at(data, position, implicit)
            if element.tag == _ITEM_END:
                position = element.value_start
                break
            if element.tag == _ITEM:
                raise _Unparsable("item inside an item")
            position = element.end


def _parse_header(data: bytes) -> _RawHeader:
    """Split ``data`` (a file with preamble and file meta) into its top-level elements."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _Unparsable("no preamble")
    meta: dict[int, _Element] = {}
    position = 132
    while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
        element = _element_at(data, position, False)
        if element.undefined_length or (meta and element.tag <= max(meta)):
            raise _Unparsable("irregular file meta")
        meta[element.tag] = element
        position = element.end
    syntax_element = meta.get(0x00020010)
    if syntax_element is None:
        raise _Unparsable("no transfer syntax")
    syntax = pydicom.uid.UID(
        data[syntax_element.value_start : syntax_element.end].rstrip(b"\x00 ").decode("ascii")
    )
    native = syntax in (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian)
    if not syntax.is_transfer_syntax or syntax.is_deflated or not syntax.is_little_endian:
        raise _Unparsable("transfer syntax")
    if not native and not syntax.is_encapsulated:
        raise _Unparsable("transfer syntax")
    implicit = syntax.is_implicit_VR
    elements: dict[int, _Element] = {}
    last = -1
    while position < len(data):
        element = _element_at(data, position, implicit)
        if element.tag in _PIXEL_TAGS:
            break
        if element.tag <= last or element.tag >> 16 in (0x0002, 0xFFFE):
            raise _Unparsable("elements out of order")
        elements[element.tag] = last_element = element
        last = last_element.tag
        position = element.end
    return _RawHeader(bytes(data[:128]), meta, elements, implicit, position)


@dataclass(frozen=True)
class _Template:
    original: bytes  # the template file's header bytes
    header: _RawHeader
    output_meta: list[tuple[int, bytes]]
    output_elements: dict[int, bytes]
    instance: DeidentifiedInstance
    encodings: list[str]
    # Date and time elements that dicognito shifts together: tag -> partner tag.
    partners: dict[int, int]
    # A dataset holding the template's PixelRepresentation, to resolve "US or SS".
    pixel_representation: Dataset


def _structure(data: bytes, header: _RawHeader) -> tuple[object, ...]:
    """Return the template key: series, preamble, encoding and element structure."""
    series = header.elements.get(0x0020000E)
    return (
        b"" if series is None else _element_bytes(data, series),
        header.preamble,
        header.implicit,
        tuple((tag, item.vr, item.undefined_length) for tag, item in header.meta.items()),
        tuple((tag, item.vr, item.undefined_length) for tag, item in header.elements.items()),
    )


def _element_bytes(data: bytes, element: _Element) -> bytes:
    return data[element.start : element.end]


def _split_output(header: bytes) -> tuple[list[tuple[int, bytes]], dict[int, bytes]]:
    parsed = _parse_header(header)
    if parsed.pixel_start != len(header):
        raise _Unparsable("output header with pixel data")
    meta = [(tag, _element_bytes(header, item)) for tag, item in parsed.meta.items()]
    elements = {tag: _element_bytes(header, item) for tag, item in parsed.elements.items()}
    return meta, elements


def _date_time_partners(tags: list[int]) -> dict[int, int]:
    """Return DA and TM tags that dicognito shifts as one date and time, in both directions."""
    present = set(tags)
    partners: dict[int, int] = {}
    for tag in tags:
        keyword = keyword_for_tag(tag)
        if "Date" not in keyword:
            continue
        partner = tag_for_keyword(keyword.replace("Date", "Time"))
        if partner is not None and partner != tag and partner in present:
            partners[tag] = partner
            partners[partner] = tag
    return partners


def _encode_element(element: pydicom.DataElement, implicit: bool, encodings: list[str]) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()


class SeriesDeidentifier:
    """``Deidentifier`` with per-series templates; the bytes are those of the full path.

    ``fallbacks`` counts why files took the full path after a template existed (for tests and
    the log); ``templated`` counts the files de-identified from a template.
    """

    def __init__(self, deidentifier: Deidentifier) -> None:
        self._deidentifier = deidentifier
        # The element rules above were checked against this dicognito release only.
        self.enabled = dicognito.__version__ == VERIFIED_DICOGNITO_VERSION
        self._templates: dict[tuple[object, ...], _Template] = {}
        self.templated = 0
        self.fallbacks: Counter[str] = Counter()

    def deidentify_file(self, path: str) -> DeidentifiedInstance:
        with open(path, "rb") as handle:
            return self.deidentify_bytes(handle.read())

    def deidentify_bytes(self, data: bytes) -> DeidentifiedInstance:
        """De-identify one encoded instance; the result equals ``Deidentifier.deidentify_bytes``.

        Raises what the full path raises for files that it cannot read.
        """
        if not self.enabled:
            return self._deidentifier.deidentify_bytes(data)
        try:
            header = _parse_header(data)
        except (_Unparsable, ValueError, UnicodeDecodeError, RecursionError):
            return self._deidentifier.deidentify_bytes(data)
        key = _structure(data, header)
        template = self._templates.get(key)
        if template is None:
            return self._learn(data, header, key)
        try:
            instance = self._from_template(template, data, header)
        except _Fallback as fallback:
            self.fallbacks[fallback.reason] += 1
            return self._deidentifier.deidentify_bytes(data)
        except Exception as error:  # noqa: BLE001 - the full path decides what an odd value means
            # e.g. dicognito rejecting a date: the full path raises it, or handles it its way.
            if not self.fallbacks["error"]:
                # The type only: messages can quote header values.
                logger.info(
                    "Series template failed with %s; the full path de-identifies the file",
                    type(error).__name__,
                )
            self.fallbacks["error"] += 1
            return self._deidentifier.deidentify_bytes(data)
        self.templated += 1
        return instance

    def _learn(
        self, data: bytes, header: _RawHeader, key: tuple[object, ...]
    ) -> DeidentifiedInstance:
        """De-identify ``data`` by the full path and keep it as a template when it can be one."""
        instance = self._deidentifier.deidentify_bytes(data)
        if not instance.pixels or len(instance.pixels) != len(data) - header.pixel_start:
            return instance  # the whole file was re-encoded; nothing to copy from
        try:
            output_meta, output_elements = _split_output(instance.header)
            original = pydicom.dcmread(
                io.BytesIO(data[: header.pixel_start]), force=True, stop_before_pixels=True
            )
            # As Dataset.__getitem__ decodes the elements of the full path.
            character_set = original.original_character_set or original._character_set
            pixel_representation = Dataset()
            if "PixelRepresentation" in original:
                pixel_representation.PixelRepresentation = original.PixelRepresentation
        except (_Unparsable, ValueError, UnicodeDecodeError, LookupError):
            return instance
        if len(self._templates) >= MAX_TEMPLATES:
            self._templates.clear()
        self._templates[key] = _Template(
            original=bytes(data[: header.pixel_start]),
            header=header,
            output_meta=output_meta,
            output_elements=output_elements,
            instance=replace(instance, pixels=b""),  # keep no reference to the pixel data
            encodings=[character_set] if isinstance(character_set, str) else list(character_set),
            partners=_date_time_partners(list(header.elements)),
            pixel_representation=pixel_representation,
        )
        return instance

    def _from_template(
        self, template: _Template, data: bytes, header: _RawHeader
    ) -> DeidentifiedInstance:
        original = template.original
        if pixel_data_end(data, header.pixel_start, header.implicit) != len(data):
            raise _Fallback("pixels_not_copyable")

        meta_out = dict(template.output_meta)
        for tag, element in header.meta.items():
            ours = _element_bytes(data, element)
            if ours == _element_bytes(original, template.header.meta[tag]):
                continue
            if tag == _META_GROUP_LENGTH:
                continue  # recomputed below
            if tag != _MEDIA_STORAGE_SOP_INSTANCE_UID or tag not in meta_out:
                raise _Fallback("file_meta_differs")
            meta_out[tag] = self._meta_uid(data, element)

        changed: set[int] = set()
        for tag, element in header.elements.items():
            if _element_bytes(data, element) != _element_bytes(
                original, template.header.elements[tag]
            ):
                changed.add(tag)
        # The full path copies these two from the dataset into a file meta that lacks them
        # (deid._complete_file_meta): the template's copy is then the template file's value.
        for meta_tag, source in _COMPLETED_META.items():
            if meta_tag in header.meta or source not in changed:
                continue
            element = header.elements[source]
            if meta_tag not in meta_out or meta_tag != _MEDIA_STORAGE_SOP_INSTANCE_UID:
                raise _Fallback("completed_file_meta_differs")
            if element.vr not in (b"UI", b""):
                raise _Fallback("completed_file_meta_differs")
            meta_out[meta_tag] = self._meta_uid(data, element)
        if _META_GROUP_LENGTH in meta_out:
            length = sum(len(value) for tag, value in meta_out.items() if tag != _META_GROUP_LENGTH)
            meta_out[_META_GROUP_LENGTH] = b"\x02\x00\x00\x00UL\x04\x00" + length.to_bytes(
                4, "little"
            )
        changed |= {template.partners[tag] for tag in changed if tag in template.partners}
        output = dict(template.output_elements)
        if changed:
            recomputed = self._recompute(template, data, header, changed)
            for tag in changed:
                value = recomputed.get(tag)
                if (value is None) != (tag not in output):
                    raise _Fallback("element_kept_or_removed_differently")
                if value is not None:
                    output[tag] = value

        parts = [template.instance.header[:132]]
        parts.extend(meta_out[tag] for tag, _ in template.output_meta)
        parts.extend(output[tag] for tag in sorted(output))
        encoded_header = b"".join(parts)
        uids = {tag: _uid_value(output.get(tag, b"")) for tag in _UID_TAGS}
        if not all(uids.values()):
            raise _Fallback("instance_uid_missing")
        return replace(
            template.instance,
            header=encoded_header,
            pixels=memoryview(data)[header.pixel_start :],
            study_instance_uid=uids[0x0020000D],
            series_instance_uid=uids[0x0020000E],
            sop_instance_uid=uids[0x00080018],
            original_study_instance_uid=self._original_study_uid(template, data, header),
        )

    @staticmethod
    def _original_study_uid(template: _Template, data: bytes, header: _RawHeader) -> str:
        """Return StudyInstanceUID as received, decoded as pydicom decodes it in the full path."""
        element = header.elements[0x0020000D]
        value = data[element.value_start : element.end]
        known = template.header.elements[0x0020000D]
        if value == template.original[known.value_start : known.end]:
            return template.instance.original_study_instance_uid
        return str(_read_uid(data, element, 0x0020000D, implicit=header.implicit).value or "")

    def _meta_uid(self, data: bytes, element: _Element) -> bytes:
        """Return the de-identified MediaStorageSOPInstanceUID element, as the full path writes it."""
        meta = FileMetaDataset()
        meta[_MEDIA_STORAGE_SOP_INSTANCE_UID] = _read_uid(
            data, element, _MEDIA_STORAGE_SOP_INSTANCE_UID, implicit=False
        )
        # apply runs dicognito over the file meta too; its own steps leave this UID alone.
        self._deidentifier.anonymize_element(meta, meta[_MEDIA_STORAGE_SOP_INSTANCE_UID])
        return _encode_element(meta[_MEDIA_STORAGE_SOP_INSTANCE_UID], False, [])

    def _recompute(
        self, template: _Template, data: bytes, header: _RawHeader, tags: set[int]
    ) -> dict[int, bytes | None]:
        """De-identify the elements ``tags`` of ``data`` as ``Deidentifier.apply`` would.

        dicognito's element handlers run on each element in tag order, in a dataset of the
        elements in ``tags``, so a date finds its time. Then ``profile_removes`` drops what
        ``apply`` removes whatever the value. The other steps of ``apply`` touch only
        FALLBACK_CONTEXT_KEYWORDS, which never reach this point.
        Returns tag -> encoded element, or None where the element is removed.
        """
        dataset = Dataset()
        for tag in sorted(tags):
            if tag >> 16 & 1:
                continue  # private: removed whatever its value
            if tag in _CONTEXT_TAGS:
                raise _Fallback("context_element_differs")
            element = header.elements[tag]
            vr = element.vr.decode("ascii") if element.vr else None
            try:
                known_vr = dictionary_VR(tag)
            except KeyError:
                raise _Fallback("unknown_element_differs") from None
            ambiguous = " or " in known_vr and (vr is None or vr == "UN")
            if ambiguous and known_vr != "US or SS":
                # Implicit VR: pydicom resolves the VR from other elements when it reads it.
                raise _Fallback("ambiguous_vr_differs")
            if known_vr in ("SQ", "PN") or vr in ("SQ", "PN", "UN") or element.undefined_length:
                raise _Fallback("sequence_or_name_differs")
            raw = RawDataElement(
                Tag(tag),
                vr,
                element.end - element.value_start,
                data[element.value_start : element.end],
                element.value_start,
                header.implicit,
                True,
            )
            try:
                converted = convert_raw_data_element(raw, encoding=template.encodings)
                if ambiguous:
                    # As Dataset.__getitem__ does: US or SS follows PixelRepresentation, which
                    # is the template's (a context element).
                    corrected = correct_ambiguous_vr_element(
                        converted, template.pixel_representation, True
                    )
                    if not isinstance(corrected, pydicom.DataElement):
                        raise _Fallback("value_not_readable")
                    converted = corrected
                dataset[tag] = converted
            except (ValueError, TypeError, UnicodeDecodeError, LookupError, AttributeError):
                raise _Fallback("value_not_readable") from None
        for tag in sorted(tags):
            if tag in dataset:  # a handler may have removed it
                self._deidentifier.anonymize_element(dataset, dataset[tag])
        results: dict[int, bytes | None] = {}
        for tag in tags:
            if profile_removes(tag) or tag not in dataset:
                results[tag] = None
                continue
            try:
                results[tag] = _encode_element(dataset[tag], header.implicit, template.encodings)
            except (ValueError, TypeError, LookupError):
                raise _Fallback("value_not_writable") from None
        return results


def _read_uid(data: bytes, element: _Element, tag: int, *, implicit: bool) -> pydicom.DataElement:
    """Decode a UI element as pydicom does when it reads the file."""
    value = data[element.value_start : element.end]
    raw = RawDataElement(Tag(tag), "UI", len(value), value, element.value_start, implicit, True)
    return convert_raw_data_element(raw)


_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)


def _uid_value(element: bytes) -> str:
    if not element:
        return ""
    offset = 8  # tag and 32-bit length (implicit) or tag, "UI" and 16-bit length (explicit)
    return element[offset:].rstrip(b"\x00 ").decode("ascii")


class _Fallback(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
