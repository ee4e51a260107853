"""Series templates for de-identification give exactly the bytes of the full path.

Every test de-identifies the same files twice, once file by file with ``Deidentifier`` (the full
path) and once with ``SeriesDeidentifier``, and compares the stored bytes and every field of
the result. Inputs cover per-slice UIDs, positions and times (across midnight), sequences,
private elements, non-ASCII names, other encodings and the shared fault cases and real study.
The last tests force each reason to fall back to the full path.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from tests.shared_data import CASES_DIR, PHILIPS_STUDY_DIR, require
from webapp.ingest import deid_template
from webapp.ingest.deid import DeidentifiedInstance, Deidentifier
from webapp.ingest.deid_template import SeriesDeidentifier

SEED = "7e3d" * 16
PSEUDONYM = "CASE-42"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"

Edit = Callable[[Dataset, int], None]


def slice_file(index: int, edit: Edit | None = None, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Return one encoded CT slice (8 x 8 pixels) of a series whose headers vary by slice."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    # UIDs of odd and even length, so that padding and lengths vary from slice to slice.
    sop_uid = UID(f"1.2.826.0.1.3680043.8.498.3.{10**index}")
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.SourceApplicationEntityTitle = "CT_SCANNER_7"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240229"
    ds.StudyTime = "233000"
    # Per-slice times across midnight: dicognito shifts the date with the time.
    ds.AcquisitionTime = f"{(23 + index) % 24:02d}{59 - index:02d}{index:02d}.5"
    ds.ContentTime = ["235958", "000001.25", "120000", "2359"][index % 4]
    ds.AcquisitionDateTime = f"2024022923{index:02d}00.000000"
    ds.AccessionNumber = "ACC-12345"
    ds.Modality = "CT"
    ds.Manufacturer = "Synthetic"
    ds.InstitutionName = "Hôpital Saint-Éloi"
    ds.ReferringPhysicianName = "Dr^Who"
    ds.StationName = "CTROOM2"
    ds.StudyDescription = "HEAD NCCT Müller"
    ds.SeriesDescription = "Head 5mm MÜLLER"
    ds.OperatorsName = "Tech^One"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "MRN-98765"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "M"
    ds.PatientAge = "074Y"
    ds.SliceThickness = "5"
    ds.KVP = "120"
    ds.DeviceSerialNumber = "SN-123"
    ds.ConvolutionKernel = "H30s"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4"
    ds.StudyID = "42"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1 + index // 3
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-120.0, -120.5, 5.0 * index - 0.125]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{5.0 * index - 0.125:.3f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = str(40 + index % 2), "80"
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.LargestImagePixelValue = 2000 + index
    # An identical sequence in every slice, with a UID and a date inside.
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = CTImageStorage
    referenced.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.5"
    ds.ReferencedImageSequence = Sequence([referenced])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-A0100", "SRT", "Brain"
    ds.AnatomicRegionSequence = Sequence([code])
    # Private elements, one of them different in every slice.
    ds.add_new(0x00190010, "LO", "SYNTHETIC PRIVATE")
    ds.add_new(0x00191001, "LO", f"slice {index} of Müller")
    ds.add_new(0x00191002, "DS", f"{index * 1.5}")
    # Elements the profile removes, different in every slice (a date and time among them).
    ds.ImageComments = f"slice {index}, Müller moved"
    ds.PerformedProcedureStepStartDate = "20240229"
    ds.PerformedProcedureStepStartTime = f"23{index:02d}00"
    ds.PixelData = np.full((8, 8), 1000 + index, dtype=np.uint16).tobytes()
    if edit is not None:
        edit(ds, index)
    buffer = io.BytesIO()
    if syntax == RLELossless:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series(
    count: int = 6, edit: Edit | None = None, syntax: str = ExplicitVRLittleEndian
) -> list[bytes]:
    return [slice_file(index, edit, syntax) for index in range(count)]


def assert_same(full: DeidentifiedInstance, fast: DeidentifiedInstance, label: str) -> None:
    assert fast.data == full.data, f"{label}: bytes differ"
    for field in dataclasses.fields(DeidentifiedInstance):
        if field.name in ("header", "pixels"):
            continue
        assert getattr(fast, field.name) == getattr(full, field.name), f"{label}: {field.name}"


def run_both(
    files: list[bytes], *, keep_originals: bool = False, labels: list[str] | None = None
) -> SeriesDeidentifier:
    """De-identify ``files`` by both paths, assert identical results, return the fast one."""
    full = Deidentifier(SEED, PSEUDONYM, keep_originals=keep_originals)
    fast = SeriesDeidentifier(Deidentifier(SEED, PSEUDONYM, keep_originals=keep_originals))
    for index, data in enumerate(files):
        label = labels[index] if labels else f"file {index}"
        try:
            expected = full.deidentify_bytes(data)
        except Exception as error:  # noqa: BLE001 - the fast path must fail the same way
            with pytest.raises(type(error)):
                fast.deidentify_bytes(data)
            continue
        assert_same(expected, fast.deidentify_bytes(data), label)
    return fast


def test_varied_series_is_identical_and_templated() -> None:
    files = series(8)
    fast = run_both(files, keep_originals=True)
    assert fast.templated == 7, fast.fallbacks
    assert not fast.fallbacks
    stored = pydicom.dcmread(io.BytesIO(fast.deidentify_bytes(files[3]).data))
    assert str(stored.PatientName) == PSEUDONYM
    assert b"M\xfcller" not in fast.deidentify_bytes(files[3]).data
    assert "Müller" not in str(stored.SeriesDescription)
    assert (0x0019, 0x1001) not in stored


def test_template_reproduces_midnight_and_uid_changes() -> None:
    """The slices differ exactly where the full path changes values per slice."""
    files = series(4)
    full = Deidentifier(SEED, PSEUDONYM)
    outputs = [pydicom.dcmread(io.BytesIO(full.deidentify_bytes(data).data)) for data in files]
    # ContentTime 235958 then 000001.25 on the same date: with this seed's offset the shifted
    # dates differ too, so an unchanged date element must still be recomputed.
    assert len({str(item.ContentDate) for item in outputs}) == 2
    assert len({str(item.AcquisitionDate) for item in outputs}) == 2
    assert len({str(item.SOPInstanceUID) for item in outputs}) == 4
    fast = run_both(files)
    assert fast.templated == 3


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, RLELossless])
def test_other_encodings_are_identical(syntax: str) -> None:
    fast = run_both(series(5, syntax=syntax))
    assert fast.templated == 4, fast.fallbacks


def test_sequences_with_undefined_length_are_identical() -> None:
    def undefined(ds: Dataset, index: int) -> None:
        ds.ReferencedImageSequence.is_undefined_length = True
        for item in ds.ReferencedImageSequence:
            item.is_undefined_length_sequence_item = True

    fast = run_both(series(4, undefined))
    assert fast.templated == 3, fast.fallbacks


def test_group_lengths_and_utf8_are_identical() -> None:
    def edit(ds: Dataset, index: int) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.add_new(0x00200000, "UL", 100 + index)
        ds.PatientName = "Åsa^Öberg=山田^太郎"

    fast = run_both(series(4, edit))
    assert fast.templated == 3, fast.fallbacks


def test_two_series_and_two_structures_get_their_own_templates() -> None:
    def other_series(ds: Dataset, index: int) -> None:
        ds.SeriesInstanceUID = SERIES_UID + ".9"
        ds.SeriesDescription = "Bone 1mm"

    def extra_element(ds: Dataset, index: int) -> None:
        ds.ContrastBolusAgent = "None"

    files = series(3) + series(3, other_series) + series(3, extra_element) + series(3)
    fast = run_both(files)
    assert fast.templated == 9, fast.fallbacks


def test_shared_fault_cases_are_identical() -> None:
    root = require(CASES_DIR)
    folders = sorted({path.parent for path in root.rglob("*") if path.is_file()})
    templated = 0
    for folder in folders:
        paths = sorted(path for path in folder.iterdir() if path.is_file())
        fast = run_both([path.read_bytes() for path in paths], labels=[str(path) for path in paths])
        templated += fast.templated
    assert templated > 50


def test_real_philips_study_is_identical() -> None:
    root = require(PHILIPS_STUDY_DIR)
    paths = sorted(path for path in root.rglob("*") if path.is_file())
    fast = run_both([path.read_bytes() for path in paths], keep_originals=True)
    assert fast.templated >= len(paths) // 2, (fast.templated, fast.fallbacks)


# Fallbacks: each file below differs from its template in one way the template cannot carry.


def _fallback(files: list[bytes], reason: str) -> None:
    fast = run_both(files)
    assert fast.fallbacks[reason] >= 1, fast.fallbacks


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SeriesDescription", "Head 5mm other"),
        ("PatientName", "Other^Name"),
        ("PatientID", "MRN-1"),
        ("PatientSex", "F"),
        ("InstitutionName", "Another Hospital"),
        ("PatientBirthDate", "19600101"),
    ],
)
def test_context_element_differs(keyword: str, value: str) -> None:
    def edit(ds: Dataset, index: int) -> None:
        if index == 2:
            setattr(ds, keyword, value)

    _fallback(series(3, edit), "context_element_differs")


def test_sequence_differs() -> None:
    def edit(ds: Dataset, index: int) -> None:
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = f"1.2.3.{index}"

    _fallback(series(3, edit), "sequence_or_name_differs")


def test_person_name_differs() -> None:
    def edit(ds: Dataset, index: int) -> None:
        ds.OperatorsName = f"Tech^{index}"

    _fallback(series(3, edit), "sequence_or_name_differs")


def test_file_meta_differs() -> None:
    def edit(ds: Dataset, index: int) -> None:
        ds.file_meta.ImplementationVersionName = f"SCANNER_{index}"

    _fallback(series(3, edit), "file_meta_differs")


def test_ambiguous_vr_differs_in_implicit_vr() -> None:
    tag = 0x00283006  # LUTData, "US or OW": pydicom resolves it from other elements
    assert dictionary_VR(tag) == "US or OW"

    def edit(ds: Dataset, index: int) -> None:
        ds.LUTDescriptor = [3, 0, 16]
        ds.add_new(tag, "US", [index, 2, 3])

    _fallback(series(3, edit, syntax=ImplicitVRLittleEndian), "ambiguous_vr_differs")


def test_unknown_public_element_differs() -> None:
    tag = 0x00180001
    with pytest.raises(KeyError):
        dictionary_VR(tag)

    def edit(ds: Dataset, index: int) -> None:
        ds.add_new(tag, "LO", f"value {index}")

    _fallback(series(3, edit), "unknown_element_differs")


def test_pixels_not_copyable() -> None:
    files = series(3)
    # Trailing padding after the pixel data: the full path re-encodes the whole file.
    files[2] += b"\xfc\xff\xfc\xffOB\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00"
    _fallback(files, "pixels_not_copyable")


def test_element_removed_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if a new dicognito or profile rule removed InstanceNumber for some values only.
    monkeypatch.setattr(deid_template, "profile_removes", lambda tag: tag == 0x00200013)
    _fallback(series(3), "element_kept_or_removed_differently")


def test_value_not_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    convert = deid_template.convert_raw_data_element

    def broken(raw: RawDataElement, **kwargs: Any) -> Any:
        if raw.tag == 0x00200013:  # InstanceNumber
            raise ValueError("unreadable value")
        return convert(raw, **kwargs)

    monkeypatch.setattr(deid_template, "convert_raw_data_element", broken)
    _fallback(series(3), "value_not_readable")


def test_value_not_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    write = deid_template.write_data_element

    def broken(buffer: Any, element: Any, encodings: Any = None) -> None:
        if element.tag == 0x00200013:  # InstanceNumber
            raise ValueError("unwritable value")
        write(buffer, element, encodings)

    monkeypatch.setattr(deid_template, "write_data_element", broken)
    _fallback(series(3), "value_not_writable")


def test_preamble_is_zeroed_in_both_paths() -> None:
    preamble = b"Muller^Jurgen MRN-98765 ".ljust(128, b"\x00")
    files = [preamble + data[128:] for data in series(3)]

    fast = run_both(files)

    assert fast.templated == 2
    stored = fast.deidentify_bytes(files[1]).data
    assert stored[:128] == bytes(128)
    assert b"Muller" not in stored


def test_empty_instance_uid() -> None:
    def edit(ds: Dataset, index: int) -> None:
        if index == 2:
            ds.SOPInstanceUID = ""

    _fallback(series(3, edit), "instance_uid_missing")


def test_handler_error_falls_back_to_the_full_path() -> None:
    def edit(ds: Dataset, index: int) -> None:
        if index == 2:
            ds.AcquisitionDate = "20241399"  # not a date: dicognito raises in both paths

    fast = run_both(series(3, edit))
    assert fast.fallbacks["error"] == 1, fast.fallbacks


@pytest.mark.parametrize("form", ["no_preamble", "big_endian", "truncated"])
def test_files_the_template_cannot_parse_take_the_full_path(form: str) -> None:
    files = series(3)
    if form == "no_preamble":
        files = [data[132:] for data in files]
    elif form == "big_endian":
        files = series(3, syntax=ExplicitVRBigEndian)
    else:
        files[2] = files[2][:400]
    fast = run_both(files)
    # The truncated file takes the full path (and fails there); the file before it does not.
    assert fast.templated == (1 if form == "truncated" else 0)


def test_other_dicognito_release_disables_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deid_template, "VERIFIED_DICOGNITO_VERSION", "0.0.0")
    fast = run_both(series(3))
    assert fast.templated == 0
    assert not fast.enabled
