"""Finding, grouping, classifying and choosing series from headers."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from inference.dicom import load_study, scan_paths
from inference.dicom.classify import classify_kernel
from tests.inference.conftest import marker_of


def test_junk_files_are_skipped_with_reasons(ct_series_factory, tmp_path: Path) -> None:
    folder = ct_series_factory("study", n_slices=4)[0].parent
    (folder / "notes.txt").write_text("not dicom")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "archive.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    truncated = (folder / "IM0002.dcm").read_bytes()[:-500]
    (folder / "IM_TRUNC").write_bytes(truncated)
    scan = scan_paths(folder)
    reasons = {Path(item.path).name: item.reason for item in scan.skipped}
    assert reasons == {
        "notes.txt": "not_dicom",
        "empty.dcm": "empty",
        "binary.bin": "not_dicom",
        "archive.zip": "archive",
        "IM_TRUNC": "truncated",
    }
    assert scan.chosen.n_instances == 4


def test_files_without_preamble_or_meta_are_read(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=4, preamble=False, names=["a", "b", "c", "d"])
    assert paths[0].read_bytes()[128:132] != b"DICM"
    volume, scan = load_study(paths[0].parent)
    assert scan.skipped == []
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2, 3]


def test_series_are_split_by_uid(ct_series_factory, tmp_path: Path) -> None:
    study = generate_uid()
    ct_series_factory("mix", n_slices=4, study_uid=study, series_number=2)
    ct_series_factory(
        "mix", n_slices=5, study_uid=study, series_number=3, names=[f"B{i}" for i in range(5)]
    )
    scan = scan_paths(tmp_path / "mix")
    assert len(scan.studies) == 1
    assert sorted(s.n_instances for s in scan.series) == [4, 5]


def test_thickness_closest_to_5mm_is_chosen(ct_series_factory, tmp_path: Path) -> None:
    study = generate_uid()
    ct_series_factory(
        "s",
        n_slices=20,
        spacing_mm=1.0,
        study_uid=study,
        series_number=3,
        description="Head 1mm",
        names=[f"T{i}" for i in range(20)],
    )
    ct_series_factory(
        "s", n_slices=5, spacing_mm=5.0, study_uid=study, series_number=4, description="Head 5mm"
    )
    scan = scan_paths(tmp_path / "s")
    assert scan.chosen.series_number == 4
    thin = next(s for s in scan.series if s.series_number == 3)
    assert "1 mm slices" in thin.reason
    assert "closer to the target thickness" in thin.reason


def test_more_complete_series_wins_a_tie(ct_series_factory, tmp_path: Path) -> None:
    study = generate_uid()
    ct_series_factory("s", n_slices=4, study_uid=study, series_number=2)
    ct_series_factory(
        "s", n_slices=6, study_uid=study, series_number=5, names=[f"X{i}" for i in range(6)]
    )
    scan = scan_paths(tmp_path / "s")
    assert scan.chosen.series_number == 5
    other = next(s for s in scan.series if not s.chosen)
    assert "is more complete (6)" in other.reason


def test_secondary_capture_is_never_chosen(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=4, sop_class=SecondaryCaptureImageStorage)[0].parent
    scan = scan_paths(folder)
    assert scan.chosen is None
    assert scan.series[0].kind == "secondary_capture"
    assert scan.series[0].burned_in_annotation is True


def test_derived_summary_is_never_chosen(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=4, image_type=("DERIVED", "SECONDARY", "DOSE_INFO"))[
        0
    ].parent
    scan = scan_paths(folder)
    assert scan.series[0].kind == "derived"
    assert scan.chosen is None


def test_other_modality_is_not_chosen(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=4, modality="MR")[0].parent
    scan = scan_paths(folder)
    assert scan.series[0].kind == "non_ct"
    assert "modality MR" in scan.series[0].reason


def test_sagittal_reformat_is_not_chosen(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=4, orientation=(0, 1, 0, 0, 0, -1))[0].parent
    scan = scan_paths(folder)
    assert scan.series[0].kind == "non_axial"
    assert "sagittal" in scan.series[0].reason


def test_two_images_are_too_few(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=2)[0].parent
    scan = scan_paths(folder)
    assert scan.chosen is None
    assert "only 2 image(s)" in scan.series[0].reason


@pytest.mark.parametrize(
    ("kernel", "description", "expected"),
    [
        ("BONE", "", "bone"),
        ("STANDARD", "", "soft_tissue"),
        ("H31s", "", "soft_tissue"),
        ("Hr38\\3", "", "soft_tissue"),
        ("H70h", "", "bone"),
        ("Br64", "", "bone"),
        ("UB", "", "soft_tissue"),
        ("YC", "", "bone"),
        ("", "Head 2.5mm bone", "bone"),
        ("", "CT BRAIN 5mm", "soft_tissue"),
        ("FC43", "axial", "unknown"),
    ],
)
def test_kernel_classes(kernel: str, description: str, expected: str) -> None:
    assert classify_kernel(kernel, description) == expected


def test_wrong_charset_decodes_to_valid_utf8(ct_series_factory) -> None:
    # UTF-8 bytes for "Schädel" under an ASCII declaration, and Latin-1 bytes under UTF-8.
    ascii_folder = ct_series_factory(
        "ascii", n_slices=3, charset="ISO_IR 6", raw_description="Schädel".encode()
    )[0].parent
    utf8_folder = ct_series_factory(
        "utf8", n_slices=3, charset="ISO_IR 192", raw_description="Schädel".encode("latin-1")
    )[0].parent
    for folder in (ascii_folder, utf8_folder):
        scan = scan_paths(folder)
        description = scan.series[0].description
        assert description.startswith("Sch")
        assert description.endswith("del")
        encoded = json.dumps(scan.to_dict(), ensure_ascii=False).encode("utf-8")
        assert b"Sch" in encoded


def test_unknown_charset_does_not_fail(ct_series_factory) -> None:
    with pytest.warns(UserWarning, match="ISO_IR 999"):
        folder = ct_series_factory(n_slices=3, charset="ISO_IR 999", description="Kopf")[0].parent
    scan = scan_paths(folder)
    assert scan.series[0].description == "Kopf"
    assert "charset" in [note.code for note in scan.series[0].notes]


def test_scan_result_is_json_safe(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=3, window=(["40", "400"], ["80", "1500"]))[0].parent
    data = json.loads(json.dumps(scan_paths(folder).to_dict()))
    series = data["series"][0]
    assert series["chosen"] is True
    assert series["default_window"] == {"center_hu": 40.0, "width_hu": 80.0, "name": ""}
    assert len(series["window_presets"]) == 2
    assert data["chosen_series_instance_uid"] == series["series_instance_uid"]


def test_localizer_in_other_plane_is_excluded(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=5)
    ds = pydicom.dcmread(paths[0])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.save_as(paths[0])
    scan = scan_paths(paths[0].parent)
    assert scan.chosen.n_instances == 4
    assert scan.chosen.excluded[0].reason == "non_axial"


def test_zip_entries_outside_archive_are_not_extracted(ct_series_factory, tmp_path) -> None:
    import zipfile

    paths = ct_series_factory(n_slices=3)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in paths:
            handle.write(path, f"series/{path.name}")
        handle.writestr("../escape.dcm", paths[0].read_bytes())
    volume, scan = load_study(archive)
    assert volume.shape[0] == 3
    unsafe = [item for item in scan.skipped if item.reason == "unsafe_path"]
    assert [item.path.endswith("/../escape.dcm") for item in unsafe] == [True]
    assert not (tmp_path / "escape.dcm").exists()


def test_corrupt_zip_is_skipped(tmp_path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    scan = scan_paths(tmp_path, archive_dir=tmp_path / "extract")
    assert [item.reason for item in scan.skipped] == ["archive"]
    assert "cannot be read" in scan.skipped[0].detail


def test_non_image_objects_are_skipped(tmp_path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset

    for name, modality in (("sr.dcm", "SR"), ("ct_note.dcm", "CT")):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality = modality
        ds.save_as(tmp_path / name, enforce_file_format=True)
    scan = scan_paths(tmp_path)
    reasons = {Path(item.path).name: item.reason for item in scan.skipped}
    assert reasons == {"sr.dcm": "other_modality", "ct_note.dcm": "no_pixel_data"}
    assert scan.series == []


def test_undecodable_text_is_noted_on_series(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=3, charset="ISO_IR 192", raw_description=b"Kopf \xe4 \xff")[
        0
    ].parent
    series = scan_paths(folder).series[0]
    assert series.description.startswith("Kopf")
    assert "charset" in [note.code for note in series.notes]
    series.description.encode("utf-8")


def test_nested_zip_is_extracted_and_named(ct_series_factory, tmp_path) -> None:
    import zipfile

    paths = ct_series_factory(n_slices=3)
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as handle:
        for path in paths:
            handle.write(path, f"CT/{path.name}")
        handle.writestr("CT/notes.txt", "junk")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as handle:
        handle.write(inner, "inner.zip")
    volume, scan = load_study(outer)
    assert volume.shape[0] == 3
    skipped = scan.to_dict()["skipped"]
    assert [item["path"] for item in skipped] == [f"{outer}/inner.zip/CT/notes.txt"]


def test_legacy_multiframe_without_groups_is_rejected(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.NumberOfFrames = 2
        ds.PixelData = ds.PixelData * 2
        ds.save_as(path)
    scan = scan_paths(paths[0].parent)
    assert scan.chosen is None
    assert scan.series[0].kind == "multiframe_unsupported"
    assert "not supported" in scan.series[0].reason


def test_fifo_is_skipped_without_blocking(ct_series_factory, tmp_path) -> None:
    import os

    folder = ct_series_factory("s", n_slices=3)[0].parent
    os.mkfifo(folder / "pipe")
    scan = scan_paths(folder)
    assert [(Path(item.path).name, item.reason) for item in scan.skipped] == [
        ("pipe", "unreadable")
    ]
    assert scan.chosen.n_instances == 3
