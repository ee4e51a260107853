"""De-identification of uploaded DICOM instances, following the PS3.15 Annex E basic profile.

The library ``dicognito`` (0.19.0) does the bulk of the profile: it replaces every UID except
class and transfer-syntax UIDs, person names, ID attributes, addresses, institution and
station names, and shifts dates and times by a per-seed offset. It is seeded per case, so the
same input gives the same output (re-uploads are recognised as duplicates) and the baseline and
follow-up of one case keep consistent UIDs. This module then applies what dicognito leaves to
the caller: private attributes and free-text attributes that the basic profile removes, and the
case's pseudonym as PatientName and PatientID.

Kept on purpose (the profile's "Retain Descriptors" option): StudyDescription and
SeriesDescription, because the series choice reads the reconstruction kernel and plane from
them. NOTE: a site that types patient names into descriptions must clean them at the scanner.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

# DeidentificationMethod is LO: at most 64 characters.
DEIDENTIFICATION_METHOD = "PS3.15 E basic profile, dicognito 0.19.0, retain descriptors"

# Attributes that the basic profile removes (action X) or empties (Z, or X on a type 2
# attribute) and that dicognito 0.19.0 leaves in place.
REMOVED_KEYWORDS: tuple[str, ...] = (
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "Allergies",
    "DerivationDescription",
    "EthnicGroup",
    "ImageComments",
    "MedicalAlerts",
    "OtherPatientNames",
    "PatientAge",
    "PatientBirthName",
    "PatientComments",
    "PatientMotherBirthName",
    "PatientSize",
    "PatientState",
    "PatientWeight",
    "PerformedProcedureStepDescription",
    "ProtocolName",
    "RequestAttributesSequence",
    "RequestedProcedureDescription",
    "SmokingStatus",
    "SpecialNeeds",
    "StudyComments",
    "TextComments",
)
EMPTIED_KEYWORDS: tuple[str, ...] = ("PatientBirthDate", "PatientBirthTime", "PatientSex")


@dataclass(frozen=True)
class DeidentifiedInstance:
    """De-identified bytes of one instance, with the UIDs that the database stores."""

    data: bytes
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


class Deidentifier:
    """Applies the basic profile with one case's seed; reuse one object for a whole upload."""

    def __init__(self, seed: str, pseudonym: str) -> None:
        self._anonymizer = Anonymizer(seed=seed)
        self._pseudonym = pseudonym

    def apply(self, dataset: Dataset) -> None:
        """De-identify ``dataset`` in place."""
        self._anonymizer.anonymize(dataset)
        dataset.remove_private_tags()
        for keyword in REMOVED_KEYWORDS:
            if keyword in dataset:
                delattr(dataset, keyword)
        for keyword in EMPTIED_KEYWORDS:
            if keyword in dataset:
                setattr(dataset, keyword, "")
        dataset.PatientName = self._pseudonym
        dataset.PatientID = self._pseudonym
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = DEIDENTIFICATION_METHOD

    def deidentify_file(self, path: str) -> DeidentifiedInstance:
        """Read ``path``, de-identify it, and return the bytes to store.

        Raises pydicom's errors (InvalidDicomError, OSError, ValueError) on unreadable files.
        """
        # force: the scan has already accepted this file, including files without the preamble.
        dataset = pydicom.dcmread(path, force=True)
        _complete_file_meta(dataset)
        self.apply(dataset)
        return _encode(dataset)


def read_identified_file(path: str) -> DeidentifiedInstance:
    """Return the file's bytes unchanged with its UIDs, for sites that turn de-identification off."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    with open(path, "rb") as handle:
        data = handle.read()
    return DeidentifiedInstance(
        data=data,
        study_instance_uid=str(dataset.StudyInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
    )


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


def _encode(dataset: Dataset) -> DeidentifiedInstance:
    buffer = io.BytesIO()
    # enforce_file_format writes the 128-byte preamble and file meta, which some uploads lack.
    dataset.save_as(buffer, enforce_file_format=True)
    return DeidentifiedInstance(
        data=buffer.getvalue(),
        study_instance_uid=str(dataset.StudyInstanceUID),
        series_instance_uid=str(dataset.SeriesInstanceUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
    )
