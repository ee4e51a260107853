"""The shared fault cases and the real Philips phantom study, with their known right values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.dicom import load_study, load_volume, read_instance_hu, scan_paths
from inference.errors import GeometryError, PixelDataError
from tests.inference.conftest import marker_of
from tests.shared_data import CASES_DIR, PHILIPS_STUDY_DIR, require


def case(name: str) -> Path:
    return require(CASES_DIR / name)


def brain_median_hu(slice_hu: np.ndarray) -> float:
    """Median of the phantom's brain (noisy values around 35 HU, between 20 and 50)."""
    brain = slice_hu[(slice_hu > 20) & (slice_hu < 50)]
    return float(np.median(brain))


def manifest() -> dict:
    return json.loads((case("manifest.json")).read_text())


def test_c02_nonuniform_spacing_is_resampled() -> None:
    volume, _ = load_study(case("C02"))
    codes = [note.code for note in volume.notes]
    assert "resampled" in codes
    assert volume.spacing_zyx_mm[0] == pytest.approx(2.5)
    assert volume.shape[0] == 20  # 0 .. 47.5 mm every 2.5 mm
    assert volume.origin_xyz_mm[2] == pytest.approx(0.0)
    # Grid positions that coincide with a source slice keep its pixels exactly.
    z_positions = manifest()["C02"]["z_positions"]
    for k, z in enumerate(z_positions):
        grid_index = round(z / 2.5)
        assert marker_of(volume.hu[grid_index]) == k


def test_c04_exact_copy_is_dropped_and_counted() -> None:
    scan = scan_paths(case("C04/exact"))
    assert scan.skipped_by_reason() == {"duplicate": 1}
    assert scan.skipped[0].path.endswith("IM0003 (1).dcm")
    volume = load_volume(scan.chosen)
    assert volume.shape[0] == 6
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2, 3, 4, 5]


def test_c04_conflicting_slices_are_rejected_by_name() -> None:
    with pytest.raises(GeometryError) as error:
        load_study(case("C04/conflict"))
    assert error.value.code == "conflicting_slices"
    assert "IM0005.dcm" in error.value.message
    assert "IM0106.dcm" in error.value.message
    assert "20.0 mm" in error.value.message


def test_c05_localizer_is_left_out() -> None:
    volume, scan = load_study(case("C05"))
    assert scan.chosen.n_instances == 6
    assert [Path(item.path).name for item in scan.chosen.excluded] == ["IM0001.dcm"]
    assert scan.chosen.excluded[0].reason == "localizer"
    assert volume.shape[0] == 6


def test_c06_brain_kernel_series_is_chosen() -> None:
    scan = scan_paths(case("C06"))
    assert len(scan.series) == 2
    chosen = scan.chosen
    assert chosen.description == "Head 5mm brain"
    assert chosen.n_instances == 6
    bone = next(s for s in scan.series if not s.chosen)
    assert bone.n_instances == 12
    assert bone.kernel_class == "bone"
    assert "bone kernel" in bone.reason
    assert chosen.reason.startswith("chosen:")


def test_c07_slices_sorted_by_position_not_instance_number() -> None:
    volume, _ = load_study(case("C07"))
    assert [marker_of(s) for s in volume.hu] == list(range(8))
    assert volume.origin_xyz_mm[2] == pytest.approx(-40.0)
    assert volume.spacing_zyx_mm[0] == pytest.approx(5.0)


def test_c08_slope_half_gives_brain_35_hu() -> None:
    volume, _ = load_study(case("C08/slope_0.5"))
    assert brain_median_hu(volume.hu[2]) == pytest.approx(35.0)
    assert volume.hu.min() == pytest.approx(-1000.0)
    # A slope of 0.5 gives half-HU steps, so every value is a multiple of 0.5.
    assert np.all(np.mod(volume.hu * 2, 1) == 0)


def test_c08_missing_rescale_assumes_identity_with_warning() -> None:
    volume, _ = load_study(case("C08/no_rescale_tags"))
    assert volume.hu.min() == pytest.approx(-1000.0)
    assert brain_median_hu(volume.hu[2]) == pytest.approx(35.0)
    notes = [note for note in volume.notes if note.code == "rescale_missing"]
    assert len(notes) == 1
    assert notes[0].level == "warning"


def test_c10_signed_air_is_minus_1000() -> None:
    volume, _ = load_study(case("C10/signed_ok"))
    assert volume.hu.min() == pytest.approx(-1000.0)
    one_slice = read_instance_hu(case("C10/signed_ok") / "IM0001.dcm")
    assert one_slice[0, 63] == pytest.approx(-1000.0)


def test_c10_mislabelled_sign_is_rejected() -> None:
    with pytest.raises(PixelDataError) as error:
        load_study(case("C10/header_says_unsigned"))
    assert error.value.code == "implausible_hu"
    assert "PixelRepresentation" in error.value.message
    assert "-1000 to 1000 HU" in error.value.message
    with pytest.raises(PixelDataError):
        read_instance_hu(case("C10/header_says_unsigned") / "IM0001.dcm")


def test_c12_unsigned_with_intercept_does_not_wrap() -> None:
    volume, _ = load_study(case("C12"))
    hot = manifest()["C12"]["hot_pixel"]
    assert volume.hu.min() == pytest.approx(-1024.0)
    assert volume.hu[3, hot["row"], hot["col"]] == pytest.approx(30710.0)
    codes = [note.code for note in volume.notes]
    assert "outlier_capped" in codes


@pytest.mark.parametrize(
    "variant",
    ["jpeg_lossless_sv1", "rle_lossless", "jpeg2000_lossless", "jpeg2000_lossless_signed"],
)
def test_c14_compressed_variants_match_uncompressed(variant: str) -> None:
    reference, _ = load_study(case("C14/reference_uncompressed"))
    volume, _ = load_study(case(f"C14/{variant}"))
    assert volume.shape == reference.shape
    assert np.array_equal(volume.hu, reference.hu)


def test_c15_enhanced_ct_frames_are_sorted() -> None:
    volume, scan = load_study(case("C15"))
    assert scan.chosen.kind == "multiframe"
    assert volume.shape[0] == 6
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2, 3, 4, 5]
    expected_frames = manifest()["C15"]["frame_storage_order_k"]
    # frame_numbers[k] is the 1-based stored frame that contains slice k.
    assert [expected_frames[f - 1] for f in volume.frame_numbers] == [0, 1, 2, 3, 4, 5]
    assert volume.origin_xyz_mm[2] == pytest.approx(0.0)


def test_c17_junk_is_skipped_and_listed() -> None:
    scan = scan_paths(case("C17/tree"))
    assert scan.chosen.n_instances == 6
    reasons = scan.skipped_by_reason()
    assert reasons["truncated"] == 1
    assert reasons["dicomdir"] == 1
    assert reasons["empty"] == 1
    assert reasons["not_dicom"] == 7
    truncated = next(item for item in scan.skipped if item.reason == "truncated")
    assert truncated.path.endswith("IM_TRUNC")


def test_c17_zip_without_archive_dir_is_listed() -> None:
    scan = scan_paths(case("C17/upload.zip"))
    assert scan.skipped_by_reason() == {"archive": 1}


def test_c17_zip_upload_imports_six_slices() -> None:
    volume, scan = load_study(case("C17/upload.zip"))
    assert volume.shape[0] == 6
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2, 3, 4, 5]
    report = scan.to_dict()
    truncated = [item["path"] for item in report["skipped"] if item["reason"] == "truncated"]
    assert len(truncated) == 1
    assert truncated[0].endswith("upload.zip/export/PT000000/ST000000/SE000000/IM_TRUNC")
    assert report["skipped_by_reason"]["dicomdir"] == 1


def test_c19_first_window_is_default() -> None:
    series = scan_paths(case("C19/two_windows")).chosen
    assert (series.default_window.center_hu, series.default_window.width_hu) == (40.0, 80.0)
    presets = [(p.name, p.center_hu, p.width_hu) for p in series.window_presets]
    assert presets == [("BRAIN", 40.0, 80.0), ("BONE", 500.0, 2000.0)]


def test_c19_window_count_mismatch_is_warning() -> None:
    series = scan_paths(case("C19/mismatched_counts")).chosen
    assert [(p.center_hu, p.width_hu) for p in series.window_presets] == [
        (40.0, 80.0),
        (500.0, 2000.0),
    ]
    assert [note.code for note in series.notes] == ["window_count_mismatch"]


def test_c22_normal_head_loads() -> None:
    volume, _ = load_study(case("C22"))
    assert volume.shape == (6, 64, 64)


def test_philips_study_chooses_5mm_axial() -> None:
    scan = scan_paths(require(PHILIPS_STUDY_DIR))
    assert len(scan.studies) == 1
    assert len(scan.series) == 3
    chosen = scan.chosen
    assert chosen.description == "STD BRAIN 5MM"
    assert chosen.n_instances == 28
    kinds = {series.series_number: series.kind for series in scan.series}
    assert kinds == {100: "localizer", 201: "axial", 401: "secondary_capture"}
    for series in scan.series:
        assert series.reason
    summary = next(s for s in scan.series if s.series_number == 401)
    assert summary.burned_in_annotation is True
    assert summary.reason.startswith("not chosen")


def test_philips_volume_geometry() -> None:
    volume, _ = load_study(require(PHILIPS_STUDY_DIR))
    assert volume.shape == (28, 512, 512)
    assert volume.spacing_zyx_mm == pytest.approx((5.0, 0.451171875, 0.451171875))
    assert volume.origin_xyz_mm == pytest.approx((-115.5, -1.85, 696.21))
    assert volume.hu.min() >= -1024.0


def test_copied_case_with_renamed_files_still_sorts(tmp_path: Path) -> None:
    for index, source in enumerate(sorted(case("C07").iterdir())):
        shutil.copy(source, tmp_path / f"slice_{7 - index}")
    volume, _ = load_study(tmp_path)
    assert [marker_of(s) for s in volume.hu] == list(range(8))


def test_philips_inserts_measure_about_100_hu() -> None:
    from scipy import ndimage

    volume, _ = load_study(require(PHILIPS_STUDY_DIR))
    # Slice 12 (60 mm above the first) crosses the three dense inserts of the phantom.
    dense = ndimage.binary_opening((volume.hu[12] > 85) & (volume.hu[12] < 130), iterations=3)
    labels, count = ndimage.label(dense)
    assert count == 3
    for label in range(1, 4):
        insert_hu = volume.hu[12][labels == label]
        assert insert_hu.size > 1000
        assert 95.0 <= float(np.median(insert_hu)) <= 110.0


def test_c15_single_frame_reads_by_index() -> None:
    path = case("C15") / "enhanced_ct.dcm"
    storage_order = manifest()["C15"]["frame_storage_order_k"]
    for frame, k in enumerate(storage_order):
        assert marker_of(read_instance_hu(path, frame=frame)) == k
    with pytest.raises(PixelDataError) as error:
        read_instance_hu(path, frame=6)
    assert error.value.code == "frame_out_of_range"


def test_c15_window_from_functional_groups() -> None:
    series = scan_paths(case("C15")).chosen
    assert (series.default_window.center_hu, series.default_window.width_hu) == (40.0, 80.0)
    assert series.slice_thickness_mm == 5.0


def test_c14_single_compressed_slice_matches_reference() -> None:
    reference = read_instance_hu(case("C14/reference_uncompressed") / "IM0003.dcm")
    for variant in ("jpeg_lossless_sv1", "rle_lossless", "jpeg2000_lossless"):
        assert np.array_equal(read_instance_hu(case(f"C14/{variant}") / "IM0003.dcm"), reference)
