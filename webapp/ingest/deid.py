"""De-identification of uploaded DICOM instances, following the PS3.15 Annex E basic profile.

The library ``dicognito`` (0.19.0) does the bulk of the profile: it replaces every UID except
class and transfer-syntax UIDs, person names, ID attributes, addresses, institution and
station names, and shifts dates and times by a per-seed offset. It is seeded per case, so the
same input gives the same output (re-uploads are recognised as duplicates) and the baseline and
follow-up of one case keep consistent UIDs. This module then applies what dicognito leaves to
the caller: private attributes and free-text attributes that the basic profile removes, and the
case's pseudonym as PatientName and PatientID.

Attributes that dicognito keeps and the basic profile removes (Table E.1-1, action X or X/Z/D)
are removed here, at every nesting level: the device serial number, the study description, the
department, the radiation dose comments, the secondary capture date and time, overlay and
curve data, public elements that the data dictionary does not know, and the others in
REMOVED_KEYWORDS. A person-name attribute written with another VR
than PN (an operator's name as LO) is removed as well, because dicognito replaces names by their
VR. Options applied, as named in Table E.1-1:

- Clean Descriptors Option, for SeriesDescription only: the series choice falls back on it
  when ConvolutionKernel is not recognised, and the report shows it. So it is kept, after the
  words of the original PatientName and PatientID are cut out of it.
  StudyDescription, ProtocolName and the other descriptors are removed; nothing reads them.
- Retain Longitudinal Temporal Information with Modified Dates Option: dicognito shifts dates
  and times by a per-case offset instead of emptying them, so intervals stay right.

NOTE: the cleaning finds only the spelling of PatientName and PatientID. A site that types
patient names into series descriptions in another form must clean them at the scanner.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom import __version_info__ as _PYDICOM_VERSION_INFO
from pydicom.datadict import dictionary_has_tag, dictionary_VR, repeater_has_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

# DeidentificationMethod is LO: at most 64 characters.
DEIDENTIFICATION_METHOD = "PS3.15 E basic, clean descriptors, modified dates, dicognito"

# Attributes that the basic profile removes (action X, or X/Z, X/D, X/Z/D) and that dicognito
# 0.19.0 leaves in place or replaces by a dummy. Removed at every nesting level.
REMOVED_KEYWORDS: tuple[str, ...] = (
    "AcquisitionComments",
    "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription",
    "AdditionalPatientHistory",
    "AdmissionID",
    "AdmittingDiagnosesDescription",
    "Allergies",
    "CommentsOnRadiationDose",
    "CommentsOnThePerformedProcedureStep",
    "ContentSequence",
    "ContrastBolusStartTime",
    "ContrastBolusStopTime",
    "DateOfLastCalibration",
    "DateOfSecondaryCapture",
    "DerivationDescription",
    "DetectorID",
    "DeviceDescription",
    "DeviceSerialNumber",
    "EthnicGroup",
    "FrameComments",
    "GantryID",
    "GeneratorID",
    "IconImageSequence",
    "IdentifyingComments",
    "ImageComments",
    "ImagePresentationComments",
    "ImagingServiceRequestComments",
    "Impressions",
    "InstanceCoercionDateTime",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionalDepartmentTypeCodeSequence",
    "InsurancePlanIdentification",
    "IssuerOfPatientID",
    "MedicalAlerts",
    "ModifiedImageDescription",
    "NameOfPhysiciansReadingStudy",
    "Occupation",
    "OrderEntererLocation",
    "OriginalAttributesSequence",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAge",
    "PatientBirthName",
    "PatientComments",
    "PatientMotherBirthName",
    "PatientSize",
    "PatientState",
    "PatientTransportArrangements",
    "PatientWeight",
    "PerformedLocation",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformingPhysicianName",
    "PersonAddress",
    "PhysiciansOfRecord",
    "PregnancyStatus",
    "ProtocolName",
    "ReasonForStudy",
    "ReasonForTheImagingServiceRequest",
    "ReasonForTheRequestedProcedure",
    "ReferencedPatientSequence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "RequestAttributesSequence",
    "RequestedProcedureComments",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestedProcedureLocation",
    "RequestingPhysician",
    "RequestingService",
    "RetrieveAETitle",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepLocation",
    "ScheduledStationName",
    "ServiceEpisodeDescription",
    "ServiceEpisodeID",
    "SmokingStatus",
    "SpecialNeeds",
    "StationAETitle",
    "StudyComments",
    "StudyDescription",
    "StudyIDIssuer",
    "TextComments",
    "TextString",
    "TextValue",
    "TimeOfLastCalibration",
    "TimeOfSecondaryCapture",
    "TimezoneOffsetFromUTC",
    "TopicAuthor",
    "TopicKeywords",
    "TopicSubject",
    "TopicTitle",
    "VisitComments",
)
# Overlay Data (60xx,3000) and Overlay Comments (60xx,4000) are X in the basic profile: an
# overlay can carry text of its own. The whole overlay group goes, so that no overlay is left
# without its data; the app never displays overlays.
_OVERLAY_GROUPS = range(0x6000, 0x601F, 2)
# Curve data (50xx,xxxx, retired) is X too: curve descriptions and labels are free text.
_CURVE_GROUPS = range(0x5000, 0x501F, 2)
_PATIENT_NAME_TAG = 0x00100010
EMPTIED_KEYWORDS: tuple[str, ...] = ("PatientBirthDate", "PatientBirthTime", "PatientSex")

# File meta attributes that name the sending site or its software: the AE titles of the modality
# or PACS node (e.g. "RA_CT_04WK") and the private information block. dicognito leaves the file
# meta alone apart from the SOP instance UID.
REMOVED_FILE_META_KEYWORDS: tuple[str, ...] = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)
# The sender's Implementation Class UID and Version Name identify its vendor and software
# release; stored files carry the writer's own, which is pydicom here.
IMPLEMENTATION_CLASS_UID = PYDICOM_IMPLEMENTATION_UID
IMPLEMENTATION_VERSION_NAME = f"PYDICOM {'.'.join(_PYDICOM_VERSION_INFO)}"


@dataclass(frozen=True)
class DeidentifiedInstance:
    """De-identified bytes of one instance, with the UIDs that the database stores.

    The bytes are ``header`` followed by ``pixels``: the header is re-encoded and ``pixels``
    contains the original pixel data element unchanged (empty when the whole file was re-encoded).
    ``original_name`` and ``original_id`` are the identifiers before de-identification; they are
    only filled in when the caller asks for them (the identity mapping site setting).
    """

    header: bytes
    pixels: bytes | memoryview
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    original_name: str = ""
    original_id: str = ""
    # The descriptions as stored (after de-identification), for the database rows.
    study_description: str = ""
    series_description: str = ""
    # StudyInstanceUID as received, before de-identification: only for the keyed hash that
    # flags one study uploaded into two cases (services.study_fingerprint). Never stored.
    original_study_instance_uid: str = ""

    @property
    def size(self) -> int:
        return len(self.header) + len(self.pixels)

    @property
    def data(self) -> bytes:
        return self.header + bytes(self.pixels)


class Deidentifier:
    """Applies the basic profile with one case's seed; reuse one object for a whole upload."""

    def __init__(self, seed: str, pseudonym: str, *, keep_originals: bool = False) -> None:
        self._anonymizer = Anonymizer(seed=seed)
        self._pseudonym = pseudonym
        self._keep_originals = keep_originals

    def apply(self, dataset: Dataset) -> None:
        """De-identify ``dataset`` in place."""
        name_parts = _identifying_words(dataset)
        self._anonymizer.anonymize(dataset)
        dataset.remove_private_tags()
        dataset.walk(_remove_profile_attributes)
        for keyword in EMPTIED_KEYWORDS:
            if keyword in dataset:
                setattr(dataset, keyword, "")
        if "SeriesDescription" in dataset:
            dataset.SeriesDescription = clean_descriptor(
                str(dataset.SeriesDescription or ""), name_parts
            )
        dataset.PatientName = self._pseudonym
        dataset.PatientID = self._pseudonym
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = DEIDENTIFICATION_METHOD
        _clean_file_meta(dataset)
        if getattr(dataset, "preamble", None):
            # pydicom writes the preamble it read, and 128 free bytes can hold anything (a
            # TIFF header of a dual-format file, the sender's text). Stored files get zeros.
            dataset.preamble = bytes(128)

    def anonymize_element(self, dataset: Dataset, element: DataElement) -> None:
        """Apply dicognito's element handlers to one element, as ``Dataset.walk`` does in apply.

        For ``deid_template``: the element's dataset must hold the elements the handlers read
        (a date's time element); the profile steps of ``apply`` are not run.
        """
        self._anonymizer._anonymize_element(dataset, element)

    def deidentify_file(self, path: str) -> DeidentifiedInstance:
        """Read ``path``, de-identify it, and return the bytes to store.

        Raises pydicom's errors (InvalidDicomError, OSError, ValueError) on unreadable files.
        """
        with open(path, "rb") as handle:
            return self.deidentify_bytes(handle.read())

    def deidentify_bytes(self, data: bytes) -> DeidentifiedInstance:
        """De-identify one encoded instance.

        Only the header is parsed and re-encoded; the pixel data element is copied through
        byte for byte. Files where that is not safe (big-endian or deflated encodings, elements
        after the pixel data, a header that disagrees with its transfer syntax) are parsed and
        re-encoded whole instead.
        """
        stream = io.BytesIO(data)
        # force: the scan has already accepted this file, including files without the preamble.
        dataset = pydicom.dcmread(stream, force=True, stop_before_pixels=True)
        pixel_start = stream.tell()
        original = self._originals(dataset)
        original_study_uid = str(dataset.get("StudyInstanceUID", "") or "")
        _complete_file_meta(dataset)
        if not _pixels_can_be_copied(dataset, data, pixel_start):
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
            _complete_file_meta(dataset)
            self.apply(dataset)
            return _encode(dataset, b"", original, original_study_uid)
        self.apply(dataset)
        return _encode(dataset, memoryview(data)[pixel_start:], original, original_study_uid)

    def _originals(self, dataset: Dataset) -> tuple[str, str]:
        if not self._keep_originals:
            return "", ""
        return str(dataset.get("PatientName", "") or ""), str(dataset.get("PatientID", "") or "")


_REMOVED_TAGS = frozenset(
    tag for tag in (tag_for_keyword(keyword) for keyword in REMOVED_KEYWORDS) if tag is not None
)


def _clean_file_meta(dataset: Dataset) -> None:
    """Drop the sender's AE titles and write this application's implementation identity."""
    meta = getattr(dataset, "file_meta", None)
    if meta is None:
        return
    for keyword in REMOVED_FILE_META_KEYWORDS:
        if keyword in meta:
            delattr(meta, keyword)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME


def profile_removes(tag: int) -> bool:
    """Return whether ``apply`` removes the element ``tag`` whatever its value.

    Person names written with another VR are removed too. That depends on the VR, not on the
    tag alone, so ``deid_template`` does not reuse such elements.
    """
    group = tag >> 16
    return (
        tag in _REMOVED_TAGS
        or group in _OVERLAY_GROUPS
        or group in _CURVE_GROUPS
        or bool(group & 1)
        or _unknown_public(tag)
    )


def _unknown_public(tag: int) -> bool:
    """Return whether ``tag`` is a public attribute missing from pydicom's data dictionary.

    The content of such an element is unknown (a newer standard's attribute, or a vendor's
    misuse of a public group such as (0010,1234) with a name), so it is removed. Group lengths
    (gggg,0000) are not attributes and stay.
    """
    return (
        not (tag >> 16) & 1
        and tag & 0xFFFF != 0
        and not dictionary_has_tag(tag)
        and not repeater_has_tag(tag)
    )


def _person_name_in_other_vr(element: DataElement) -> bool:
    """Return whether a person-name attribute was written with another VR (LO, SH or UN).

    dicognito finds names by their VR, PN, so it would leave such a name unchanged. PatientName
    is replaced by the pseudonym in any VR.
    """
    if element.tag == _PATIENT_NAME_TAG or element.VR == "PN":
        return False
    return dictionary_has_tag(element.tag) and dictionary_VR(element.tag) == "PN"


def _remove_profile_attributes(dataset: Dataset, element: DataElement) -> None:
    """``Dataset.walk`` callback: delete the attributes the profile removes, at any depth."""
    if (
        element.tag in _REMOVED_TAGS
        or element.tag.group in _OVERLAY_GROUPS
        or element.tag.group in _CURVE_GROUPS
        or _unknown_public(element.tag)
        or _person_name_in_other_vr(element)
    ):
        del dataset[element.tag]


# Words shorter than this are not cut out of descriptors: "HE" or "AN" would mangle "HEAD".
_MIN_IDENTIFYING_WORD = 3


def _identifying_words(dataset: Dataset) -> list[str]:
    """Return the words of the original PatientName and PatientID, longest first."""
    text = f"{dataset.get('PatientName', '') or ''} {dataset.get('PatientID', '') or ''}"
    words = {word for word in re.split(r"[\\^\s=,]+", text) if len(word) >= _MIN_IDENTIFYING_WORD}
    return sorted(words, key=len, reverse=True)


def clean_descriptor(text: str, identifying_words: list[str]) -> str:
    """Return ``text`` without the words in ``identifying_words`` (case-insensitive), trimmed."""
    for word in identifying_words:
        text = re.sub(re.escape(word), "", text, flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", text).strip()


def read_identified_file(path: str) -> DeidentifiedInstance:
    """Return the file's bytes unchanged with its UIDs, for sites that turn de-identification off."""
    with open(path, "rb") as handle:
        data = handle.read()
    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return DeidentifiedInstance(
        header=b"",
        pixels=data,
        study_instance_uid=str(dataset.StudyInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_description=str(dataset.get("StudyDescription", "") or ""),
        series_description=str(dataset.get("SeriesDescription", "") or ""),
        original_study_instance_uid=str(dataset.StudyInstanceUID),
    )


# Tags of the three pixel data elements, as little-endian bytes; pydicom stops before any.
_PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQUENCE_END_TAG = b"\xfe\xff\xdd\xe0"
_UNDEFINED_LENGTH = 0xFFFFFFFF


def pixel_data_end(data: bytes | memoryview, start: int, implicit_vr: bool) -> int | None:
    """Return where the little-endian pixel data element at ``start`` ends, or None.

    None means the bytes at ``start`` are not a complete pixel data element: another tag, a
    value that runs past the end of ``data``, or a broken encapsulated fragment list.
    """
    if bytes(data[start : start + 4]) not in _PIXEL_TAGS:
        return None
    if implicit_vr:
        header_length = 8
        length = int.from_bytes(data[start + 4 : start + 8], "little")
    else:
        # OB, OW, OF, OD: tag, VR, two reserved bytes, 32-bit length.
        header_length = 12
        length = int.from_bytes(data[start + 8 : start + 12], "little")
    position = start + header_length
    if length != _UNDEFINED_LENGTH:
        end = position + length
        return end if end <= len(data) else None
    # Encapsulated: items (FFFE,E000) of fragments, closed by a sequence delimiter.
    while position + 8 <= len(data):
        tag = bytes(data[position : position + 4])
        item_length = int.from_bytes(data[position + 4 : position + 8], "little")
        position += 8
        if tag == _SEQUENCE_END_TAG:
            return position
        if tag != _ITEM_TAG or item_length == _UNDEFINED_LENGTH:
            return None
        position += item_length
    return None


def _pixels_can_be_copied(dataset: Dataset, data: bytes, pixel_start: int) -> bool:
    """Return whether the bytes from ``pixel_start`` are exactly one pixel data element."""
    if pixel_start >= len(data):
        return False
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is None or syntax == DeflatedExplicitVRLittleEndian:
        return False
    syntax = UID(syntax)
    if not syntax.is_transfer_syntax or not syntax.is_little_endian:
        return False
    if dataset.original_encoding != (syntax.is_implicit_VR, True):
        return False
    return pixel_data_end(data, pixel_start, syntax.is_implicit_VR) == len(data)


def _complete_file_meta(dataset: Dataset) -> None:
    """Add the file meta attributes that files written without a preamble lack."""
    meta = dataset.file_meta
    if "TransferSyntaxUID" not in meta:
        implicit, little = dataset.original_encoding
        if implicit:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if "MediaStorageSOPClassUID" not in meta:
        meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in meta:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


def _encode(
    dataset: Dataset,
    pixels: bytes | memoryview,
    original: tuple[str, str],
    original_study_uid: str,
) -> DeidentifiedInstance:
    buffer = io.BytesIO()
    # enforce_file_format writes the 128-byte preamble and file meta, which some uploads lack.
    dataset.save_as(buffer, enforce_file_format=True)
    return DeidentifiedInstance(
        header=buffer.getvalue(),
        pixels=pixels,
        study_instance_uid=str(dataset.StudyInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        original_name=original[0],
        original_id=original[1],
        study_description=str(dataset.get("StudyDescription", "") or ""),
        series_description=str(dataset.get("SeriesDescription", "") or ""),
        original_study_instance_uid=original_study_uid,
    )
