"""Adversarial series for the series templates of de-identification (deid_template).

Each series is built to make the template path differ from the full path, let an identifier
through, or break the ingest: per-slice values in odd places, file meta that the full path
completes from the dataset, undefined-length sequences, names in attributes that the basic
profile removes and in person-name attributes written with another VR, deeply nested
sequences, and one series spread over two uploads. ``run_both`` compares both paths byte for
byte; the ingest tests run ``ingest_files`` on PostgreSQL and search every stored byte.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.files.storage import default_storage
from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from tests.webapp.test_ingest_deid import all_text_in_database
from tests.webapp.test_ingest_deid_template import (
    PSEUDONYM,
    SEED,
    Edit,
    run_both,
    series,
    slice_file,
)
from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
)
from webapp.core.models import Case, Instance
from webapp.ingest.deid import Deidentifier
from webapp.ingest.deid_template import SeriesDeidentifier

NAME = "Quixote"


def _templated(files: list[bytes], expected: int) -> SeriesDeidentifier:
    fast = run_both(files)
    assert fast.templated == expected, fast.fallbacks
    return fast


# Per-slice values the template recomputes: all must give the bytes of the full path.


def _accession(ds: Dataset, index: int) -> None:
    ds.AccessionNumber = f"A{index}" * (index + 1)  # lengths and padding change


def _study_id_is_a_name(ds: Dataset, index: int) -> None:
    ds.StudyID = NAME if index > 1 else "42"


def _other_patient_ids(ds: Dataset, index: int) -> None:
    ds.OtherPatientIDs = [f"{NAME}{index}", "MRN-1"]


def _station(ds: Dataset, index: int) -> None:
    ds.StationName = f"{NAME}-ST{index}"


def _patient_address(ds: Dataset, index: int) -> None:
    ds.PatientAddress = f"{index} {NAME} Street"
    ds.RegionOfResidence = f"Region {index}"


def _issuer(ds: Dataset, index: int) -> None:
    ds.IssuerOfPatientID = f"{NAME} HOSPITAL {index}"


def _department(ds: Dataset, index: int) -> None:
    ds.InstitutionalDepartmentName = f"{NAME} ward {index}"


def _date_alone(ds: Dataset, index: int) -> None:
    ds.InstanceCreationDate = f"2024030{index + 1}"  # no InstanceCreationTime


def _time_alone(ds: Dataset, index: int) -> None:
    ds.InstanceCreationTime = f"2359{50 + index}"  # no date: dicognito leaves it


def _time_of_a_fixed_date(ds: Dataset, index: int) -> None:
    ds.InstanceCreationDate = "20240229"
    ds.InstanceCreationTime = f"2359{50 + index}"  # across midnight after the shift


def _multi_valued_dates(ds: Dataset, index: int) -> None:
    ds.add_new(0x00080012, "DA", ["20240229", f"2024030{index + 1}"])
    ds.InstanceCreationTime = ["235959", f"00000{index}"]


def _datetime_with_offset(ds: Dataset, index: int) -> None:
    ds.AcquisitionDateTime = f"2024022923{index:02d}00.000000+0100"


def _decimal_forms(ds: Dataset, index: int) -> None:
    ds.SliceThickness = [" 5.0", "5.00 ", "5", "5e0"][index % 4]


def _group_length(ds: Dataset, index: int) -> None:
    ds.add_new(0x00080000, "UL", 500 + index)
    ds.AccessionNumber = "A" * (index + 1)


def _current_location(ds: Dataset, index: int) -> None:
    ds.CurrentPatientLocation = f"{NAME} ward {index}"


@pytest.mark.parametrize(
    "edit",
    [
        _accession,
        _study_id_is_a_name,
        _other_patient_ids,
        _station,
        _patient_address,
        _issuer,
        _department,
        _date_alone,
        _time_alone,
        _time_of_a_fixed_date,
        _multi_valued_dates,
        _datetime_with_offset,
        _decimal_forms,
        _group_length,
        _current_location,
    ],
)
def test_per_slice_values_are_templated_and_identical(edit: Edit) -> None:
    files = series(4, edit)
    _templated(files, 3)
    for data in files:
        stored = Deidentifier(SEED, PSEUDONYM).deidentify_bytes(data).data
        assert NAME.encode() not in stored
        assert NAME.upper().encode() not in stored


def _smallest_value_without_representation(ds: Dataset, index: int) -> None:
    del ds.PixelRepresentation
    ds.add_new(0x00280106, "US", index)  # "US or SS", resolved from PixelRepresentation


def _smallest_value_signed(ds: Dataset, index: int) -> None:
    ds.PixelRepresentation = 1
    ds.add_new(0x00280106, "SS", -index)


@pytest.mark.parametrize("edit", [_smallest_value_without_representation, _smallest_value_signed])
def test_implicit_us_or_ss_per_slice_is_identical(edit: Edit) -> None:
    _templated(series(4, edit, syntax=ImplicitVRLittleEndian), 3)


def _name_as(vr: str) -> Edit:
    def edit(ds: Dataset, index: int) -> None:
        value = f"{NAME}^Alonso" if index > 1 else "Tech^One"
        ds.add_new(0x00081070, vr, value.encode() if vr == "UN" else value)  # OperatorsName

    return edit


@pytest.mark.parametrize("vr", ["LO", "UN"])
def test_person_name_in_another_vr_takes_the_full_path(vr: str) -> None:
    fast = run_both(series(4, _name_as(vr)))
    assert fast.fallbacks["sequence_or_name_differs"] == 2, fast.fallbacks


def test_character_set_per_slice_takes_the_full_path() -> None:
    def edit(ds: Dataset, index: int) -> None:
        ds.SpecificCharacterSet = ["ISO_IR 100", "ISO_IR 192", "ISO_IR 100", "ISO_IR 148"][index]

    fast = run_both(series(4, edit))
    assert fast.fallbacks == {"context_element_differs": 2}


def test_request_attributes_per_slice_take_the_full_path() -> None:
    def edit(ds: Dataset, index: int) -> None:
        request = Dataset()
        request.RequestedProcedureID = f"R{index}"
        request.ScheduledProcedureStepDescription = f"{NAME} head"
        ds.RequestAttributesSequence = Sequence([request])

    files = series(4, edit)
    fast = run_both(files)
    assert fast.fallbacks == {"sequence_or_name_differs": 3}
    assert all(NAME.encode() not in fast.deidentify_bytes(data).data for data in files)


def test_first_file_without_an_element_gets_its_own_template() -> None:
    def edit(ds: Dataset, index: int) -> None:
        if index == 0:
            del ds.AccessionNumber

    fast = _templated(series(5, edit), 3)  # file 1 starts the second template
    assert not fast.fallbacks


# The full path completes a file meta that lacks the SOP class or instance UID from the
# dataset (deid._complete_file_meta); the template must not copy its own file's UID.


def _without_meta_element(data: bytes, element: int) -> bytes:
    """Return ``data`` without the file meta element (0002,``element``), group length fixed."""
    position = 132
    kept: list[bytes] = []
    while data[position : position + 2] == b"\x02\x00":
        vr = data[position + 4 : position + 6]
        if vr in (b"OB", b"UN", b"UT"):
            end = position + 12 + int.from_bytes(data[position + 8 : position + 12], "little")
        else:
            end = position + 8 + int.from_bytes(data[position + 6 : position + 8], "little")
        if int.from_bytes(data[position + 2 : position + 4], "little") not in (0, element):
            kept.append(data[position:end])
        position = end
    length = sum(len(item) for item in kept).to_bytes(4, "little")
    return data[:132] + b"\x02\x00\x00\x00UL\x04\x00" + length + b"".join(kept) + data[position:]


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_file_meta_without_instance_uid_gets_each_files_uid(syntax: str) -> None:
    files = [_without_meta_element(data, 0x0003) for data in series(4, syntax=syntax)]
    assert "MediaStorageSOPInstanceUID" not in pydicom.dcmread(io.BytesIO(files[1])).file_meta

    fast = _templated(files, 3)

    stored = [pydicom.dcmread(io.BytesIO(fast.deidentify_bytes(data).data)) for data in files]
    uids = [str(item.file_meta.MediaStorageSOPInstanceUID) for item in stored]
    assert uids == [str(item.SOPInstanceUID) for item in stored]
    assert len(set(uids)) == 4


def test_meta_without_class_uid_falls_back() -> None:
    def other_class(ds: Dataset, index: int) -> None:
        if index == 2:
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT

    files = [_without_meta_element(data, 0x0002) for data in series(4, other_class)]
    fast = run_both(files)
    assert fast.fallbacks == {"completed_file_meta_differs": 1}
    assert fast.templated == 2


# Sequences of undefined length, with items of undefined length, as many scanners write them.

_ITEM = b"\xfe\xff\x00\xe0"
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = b"\xff\xff\xff\xff"


def _undefined_sequence(tag: int, items: list[bytes]) -> bytes:
    """Encode an explicit VR sequence and its items, all of undefined length."""
    head = tag.to_bytes(4, "big")
    head = head[1::-1] + head[:1:-1]  # group, then element, each little-endian
    body = b"".join(_ITEM + _UNDEFINED + item + _ITEM_END for item in items)
    return head + b"SQ\x00\x00" + _UNDEFINED + body + _SEQUENCE_END


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    head = tag.to_bytes(4, "big")
    return head[1::-1] + head[:1:-1] + vr.encode() + len(value).to_bytes(2, "little") + value


def _with_content_sequence(data: bytes, items: list[bytes]) -> bytes:
    """Insert (0040,A730) ContentSequence before the pixel data (no element lies between)."""
    pixels = data.index(b"\xe0\x7f\x10\x00")
    return data[:pixels] + _undefined_sequence(0x0040A730, items) + data[pixels:]


def test_undefined_length_sequence_that_differs_takes_the_full_path() -> None:
    files = []
    for index, data in enumerate(series(4)):
        uid = _explicit(0x00081155, "UI", b"1.2.826.0.1.3680043.8.498.77")
        text = _explicit(0x00080100, "SH", f"CODE-{index}".encode())  # Code Value
        inner = _undefined_sequence(0x0040A730, [_explicit(0x0040A040, "CS", b"TEXT")])
        files.append(_with_content_sequence(data, [uid + inner, text]))
    assert pydicom.dcmread(io.BytesIO(files[1])).ContentSequence[0].ContentSequence

    fast = run_both(files)

    assert fast.fallbacks == {"sequence_or_name_differs": 3}
    assert fast.templated == 0


def test_identical_undefined_length_sequences_are_templated() -> None:
    item = _explicit(0x00080100, "SH", b"T-A010") + _undefined_sequence(
        0x0040A730, [_explicit(0x0040A040, "CS", b"TEXT")]
    )
    files = [_with_content_sequence(data, [item]) for data in series(4)]
    _templated(files, 3)


# Attributes that PS3.15 Table E.1-1 removes (action X), once missing from deid.REMOVED_KEYWORDS.

REMOVED_BY_THE_PROFILE = (
    "ReasonForTheRequestedProcedure",
    "ReasonForTheImagingServiceRequest",
    "RequestedProcedureComments",
    "RequestedProcedureLocation",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PatientTransportArrangements",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "OrderEntererLocation",
    "PersonAddress",
    "AdmissionID",
    "ServiceEpisodeDescription",
    "VisitComments",
    "InsurancePlanIdentification",
    "Impressions",
    "TextString",
    "TopicAuthor",
)


@pytest.mark.parametrize("keyword", REMOVED_BY_THE_PROFILE)
def test_profile_removes_free_text_attributes(keyword: str) -> None:
    tag = int(tag_for_keyword(keyword) or 0)

    def edit(ds: Dataset, index: int) -> None:
        ds.add_new(tag, dictionary_VR(tag), f"{NAME} {index}")

    files = series(3, edit)
    fast = run_both(files)
    for data in files:
        assert NAME.encode() not in fast.deidentify_bytes(data).data


def test_profile_removes_original_attributes_sequence() -> None:
    def edit(ds: Dataset, index: int) -> None:
        modified = Dataset()
        modified.ReasonForTheRequestedProcedure = f"{NAME} fell"
        original = Dataset()
        original.ModifiedAttributesSequence = Sequence([modified])
        original.ReasonForTheAttributeModification = "COERCE"
        ds.OriginalAttributesSequence = Sequence([original])

    stored = Deidentifier(SEED, PSEUDONYM).deidentify_bytes(slice_file(0, edit)).data
    assert NAME.encode() not in stored


@pytest.mark.parametrize("tag", [0x00101234, 0x00189999])
def test_unknown_public_element_is_removed_in_both_paths(tag: int) -> None:
    assert not dictionary_has_tag(tag)

    def edit(ds: Dataset, index: int) -> None:
        ds.add_new(tag, "LO", f"{NAME} {index}")

    files = series(3, edit)
    fast = run_both(files)
    for data in files:
        assert NAME.encode() not in fast.deidentify_bytes(data).data


def test_profile_removes_curve_data() -> None:
    def edit(ds: Dataset, index: int) -> None:
        ds.add_new(0x50000022, "LO", f"{NAME} curve")  # Curve Description (retired)

    stored = Deidentifier(SEED, PSEUDONYM).deidentify_bytes(slice_file(0, edit)).data
    assert NAME.encode() not in stored


@pytest.mark.parametrize("vr", ["LO", "SH"])
def test_person_name_written_with_another_vr_is_replaced(vr: str) -> None:
    stored = Deidentifier(SEED, PSEUDONYM).deidentify_bytes(slice_file(2, _name_as(vr))).data
    assert NAME.encode() not in stored


# The real ingest on PostgreSQL.


def _write(folder: Path, files: list[bytes], prefix: str = "slice") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(files):
        path = folder / f"{prefix}{index:03d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _stored_bytes() -> list[bytes]:
    return [
        default_storage.open(name).read()
        for name in Instance.objects.values_list("file", flat=True)
    ]


def _names_in_later_slices(ds: Dataset, index: int) -> None:
    """The patient's name in free text of the later slices only, never in the first."""
    if index == 0:
        return
    ds.SeriesDescription = f"Head 5mm {NAME.upper()}"
    ds.ImageComments = f"{NAME} moved"
    ds.StudyID = NAME
    ds.OperatorsName = f"{NAME}^Alonso"
    ds.AccessionNumber = f"{NAME}-{index}"
    ds.OtherPatientIDs = NAME
    referenced = Dataset()
    referenced.PatientName = f"{NAME}^Alonso"
    referenced.PatientID = NAME
    ds.ReferencedPatientSequence = Sequence([referenced])
    ds.add_new(0x00191003, "UN", f"{NAME}^Alonso".encode())  # private, VR UN


@pytest.mark.usefixtures("ingest_settings")
def test_series_split_over_two_uploads(
    coordinator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from webapp.ingest.services import ingest_files

    caplog.set_level(logging.DEBUG)

    def edit(ds: Dataset, index: int) -> None:
        ds.PatientName = f"{NAME}^Alonso"
        # Letters outside hex and digits: a bare "4711" turns up by chance in UIDs and hashes.
        ds.PatientID = "MRN-QX4711"
        _names_in_later_slices(ds, index)

    files = series(8, edit)
    case = Case.objects.create(code="PSEUDO-801")
    first = ingest_files(
        case, "baseline", 3, named_files(_write(tmp_path / "a", files[:3])), coordinator
    )
    second = ingest_files(
        case, "baseline", 3, named_files(_write(tmp_path / "b", files[3:], "late")), coordinator
    )

    assert (first.instances_stored, second.instances_stored) == (3, 5), second.skipped
    instances = Instance.objects.select_related("series__study")
    assert len({item.series.series_instance_uid for item in instances}) == 1
    assert len({item.series.study.study_instance_uid for item in instances}) == 1
    database = all_text_in_database()
    reports = json.dumps([first.to_dict(), second.to_dict()])
    for secret in (NAME, NAME.upper(), "MRN-QX4711", "QX4711"):
        assert secret not in database
        assert secret not in reports
        assert secret not in caplog.text
        for stored in _stored_bytes():
            assert secret.encode() not in stored
    for item in instances:
        dataset = pydicom.dcmread(default_storage.open(item.file.name))
        assert dataset.file_meta.MediaStorageSOPInstanceUID == item.sop_instance_uid
        assert str(dataset.PatientName) == case.code


@pytest.mark.usefixtures("ingest_settings")
def test_file_meta_without_instance_uid_through_the_ingest(
    coordinator: Any, tmp_path: Path
) -> None:
    from webapp.ingest.services import ingest_files

    files = [_without_meta_element(data, 0x0003) for data in series(6)]
    case = Case.objects.create(code="PSEUDO-802")

    report = ingest_files(case, "baseline", 3, named_files(_write(tmp_path, files)), coordinator)

    assert report.instances_stored == 6, report.skipped
    for item in Instance.objects.all():
        dataset = pydicom.dcmread(default_storage.open(item.file.name))
        assert dataset.file_meta.MediaStorageSOPInstanceUID == item.sop_instance_uid


def _deeply_nested(data: bytes, depth: int) -> bytes:
    """Nest ``depth`` undefined-length ContentSequences: past Python's recursion limit."""
    opening = _undefined_sequence(0x0040A730, [b"@"]).split(b"@")[0]
    closing = _ITEM_END + _SEQUENCE_END
    pixels = data.index(b"\xe0\x7f\x10\x00")
    return data[:pixels] + opening * depth + closing * depth + data[pixels:]


@pytest.mark.usefixtures("ingest_settings")
def test_deeply_nested_file_loses_no_other_file(coordinator: Any, tmp_path: Path) -> None:
    from webapp.ingest.services import ingest_files

    files = series(5)
    files[2] = _deeply_nested(files[2], 3000)
    case = Case.objects.create(code="PSEUDO-803")

    report = ingest_files(case, "baseline", 3, named_files(_write(tmp_path, files)), coordinator)

    assert report.instances_stored == 4, report.skipped
    assert [item["path"] for item in report.skipped] == ["slice002.dcm"]


def _year_one(ds: Dataset, index: int) -> None:
    ds.AcquisitionDate = "00010101"  # shifted back by dicognito: OverflowError


def _empty_name_components(ds: Dataset, index: int) -> None:
    ds.OperatorsName = "=^^^^^^^^^=\\\\"  # dicognito's name handler: TypeError


def _two_institutions(ds: Dataset, index: int) -> None:
    ds.add_new(0x00080080, "LO", ["North", "South"])  # InstitutionName: TypeError


@pytest.mark.parametrize("edit", [_year_one, _empty_name_components, _two_institutions])
def test_dicognito_error_same_in_both_paths(edit: Edit) -> None:
    def on_third(ds: Dataset, index: int) -> None:
        if index == 2:
            edit(ds, index)

    files = series(4, on_third)
    with pytest.raises((OverflowError, TypeError)):
        Deidentifier(SEED, PSEUDONYM).deidentify_bytes(files[2])
    fast = run_both(files)
    assert fast.templated == 2, fast.fallbacks


# dicognito raises OverflowError or TypeError on these values; only that file may be skipped.
@pytest.mark.usefixtures("ingest_settings")
@pytest.mark.parametrize("edit", [_year_one, _empty_name_components, _two_institutions])
def test_value_that_breaks_dicognito_loses_no_other_file(
    coordinator: Any, tmp_path: Path, edit: Edit
) -> None:
    from webapp.ingest.services import ingest_files

    def on_third(ds: Dataset, index: int) -> None:
        if index == 2:
            edit(ds, index)

    case = Case.objects.create(code="PSEUDO-804")

    report = ingest_files(
        case, "baseline", 3, named_files(_write(tmp_path, series(5, on_third))), coordinator
    )

    assert report.instances_stored == 4, report.skipped
    assert [item["path"] for item in report.skipped] == ["slice002.dcm"]
    assert report.skipped[0]["reason"] == "deidentification_failed"
    assert NAME not in json.dumps(report.to_dict())
