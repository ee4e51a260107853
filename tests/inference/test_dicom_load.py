"""Volume geometry: order, spacing, gaps, duplicates, gantry tilt, limits."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.dicom import LoadLimits, load_study, load_volume, scan_paths
from inference.errors import GeometryError, NoUsableSeriesError, VolumeTooLargeError
from tests.inference.conftest import marker_of, phantom_slice_hu


def test_series_in_reverse_position_order_is_sorted(ct_series_factory) -> None:
    paths = ct_series_factory(positions_mm=[50, 45, 40, 35, 30], instance_numbers=[1] * 5)
    volume, _ = load_study(paths[0].parent)
    # File k was written at position 50 - 5k, so ascending position reverses the markers.
    assert [marker_of(s) for s in volume.hu] == [4, 3, 2, 1, 0]
    assert volume.origin_xyz_mm == pytest.approx((-100.0, -100.0, 30.0))
    assert volume.spacing_zyx_mm == pytest.approx((5.0, 3.5, 3.5))
    assert np.allclose(volume.direction, np.eye(3))


def test_sop_uids_follow_slice_order(ct_series_factory) -> None:
    paths = ct_series_factory(positions_mm=[10, 0, 5])
    scan = scan_paths(paths[0].parent)
    volume = load_volume(scan.chosen)
    by_path = {info.path: info.sop_instance_uid for info in scan.chosen.instances}
    expected = [by_path[str(paths[i])] for i in (1, 2, 0)]
    assert volume.sop_instance_uids == expected


def test_gap_message_names_positions(ct_series_factory) -> None:
    folder = ct_series_factory("gap", positions_mm=[0, 5, 10, 20, 25])[0].parent
    with pytest.raises(GeometryError) as error:
        load_study(folder)
    assert error.value.code == "missing_slices"
    assert "between 10.0 mm (IM0003.dcm) and 20.0 mm (IM0004.dcm)" in error.value.message
    assert "1 slice(s) missing" in error.value.message
    assert "allow_gaps=True" in error.value.message


def test_gap_is_interpolated_when_allowed(ct_series_factory) -> None:
    folder = ct_series_factory("gap", positions_mm=[0, 5, 10, 20, 25])[0].parent
    volume, _ = load_study(folder, allow_gaps=True)
    assert volume.shape[0] == 6
    assert [note.code for note in volume.notes if note.code == "gap"] == ["gap"]
    # The filled slice at 15 mm is the mean of its neighbours at 10 and 20 mm.
    expected = (phantom_slice_hu(2).astype(np.float32) + phantom_slice_hu(3)) / 2
    assert np.allclose(volume.hu[3], expected)


def test_nonuniform_spacing_is_resampled(ct_series_factory) -> None:
    folder = ct_series_factory(positions_mm=[0, 2, 4, 10, 16])[0].parent
    volume, _ = load_study(folder)
    assert volume.spacing_zyx_mm[0] == pytest.approx(2.0)
    assert volume.shape[0] == 9
    resampled = [note for note in volume.notes if note.code == "resampled"]
    assert len(resampled) == 1
    assert "2 to 6 mm" in resampled[0].message
    assert marker_of(volume.hu[5]) == 3  # 10 mm is a source position


def test_exact_duplicate_with_other_uid_is_dropped(ct_series_factory, tmp_path: Path) -> None:
    paths = ct_series_factory(n_slices=4)
    # A re-export of slice 2 under a new SOPInstanceUID with the same pixels and position.
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(paths[0].parent / "copy.dcm")
    volume, _ = load_study(paths[0].parent)
    assert volume.shape[0] == 4
    notes = [note for note in volume.notes if note.code == "duplicate_dropped"]
    assert len(notes) == 1
    assert "IM0003.dcm" in notes[0].message


def test_mixed_orientation_is_rejected(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=4)
    import pydicom

    ds = pydicom.dcmread(paths[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.996, 0.087]
    ds.save_as(paths[1])
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "mixed_orientation"
    assert "IM0002.dcm" in error.value.message


def test_gantry_tilt_is_corrected(ct_series_factory) -> None:
    tilt_deg = 15.0
    # Table steps of 1 / sin(15 deg) mm shift each slice by exactly one 1 mm row.
    step_mm = 1.0 / math.sin(math.radians(tilt_deg))
    paths = ct_series_factory(
        n_slices=4, tilt_deg=tilt_deg, spacing_mm=step_mm, pixel_spacing_mm=1.0
    )
    volume, _ = load_study(paths[0].parent)
    notes = [note for note in volume.notes if note.code == "gantry_tilt"]
    assert len(notes) == 1
    assert notes[0].level == "correction"
    assert "15.00 deg" in notes[0].message
    assert volume.spacing_zyx_mm[0] == pytest.approx(step_mm * math.cos(math.radians(15)))
    assert volume.direction[:, 2] == pytest.approx(
        [0, -math.sin(math.radians(15)), math.cos(math.radians(15))]
    )
    for k in range(4):
        source = phantom_slice_hu(k).astype(np.float32)
        assert np.allclose(volume.hu[k, 10 + k : 50 + k, 10:50], source[10:50, 10:50], atol=0.01)
    # Rows shifted in from outside the image are padding.
    assert volume.padding_mask[3, :3].all()


def test_too_many_slices_rejected_up_front(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=6)[0].parent
    with pytest.raises(VolumeTooLargeError) as error:
        load_study(folder, limits=LoadLimits(max_slices=5))
    assert "6 slices of 64x64" in error.value.message
    assert "limit is 5 slices" in error.value.message


def test_too_many_voxels_rejected(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=6)[0].parent
    with pytest.raises(VolumeTooLargeError):
        load_study(folder, limits=LoadLimits(max_voxels=64 * 64 * 5))


def test_no_usable_series_lists_reasons(ct_series_factory) -> None:
    folder = ct_series_factory(n_slices=2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))[
        0
    ].parent
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(folder)
    assert "localizer" in error.value.message


def test_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(tmp_path / "absent")
    assert error.value.code == "path_not_found"


def test_large_series_loads_with_padding_mask(large_series_dir: Path) -> None:
    volume, _ = load_study(large_series_dir)
    assert volume.shape == (20, 256, 256)
    assert volume.hu.dtype == np.float32
    assert volume.padding_mask is not None
    assert not volume.padding_mask.any()


def test_copied_folder_is_duplicate(ct_series_factory, tmp_path) -> None:
    first = ct_series_factory("a", n_slices=4)[0].parent
    shutil.copytree(first, tmp_path / "b")
    scan = scan_paths([first, tmp_path / "b"])
    assert len(scan.series) == 1
    assert scan.skipped_by_reason() == {"duplicate": 4}


def test_position_jitter_keeps_typical_spacing(ct_series_factory) -> None:
    folder = ct_series_factory(positions_mm=[0, 5.1, 9.95, 15.2, 20.0, 25.0])[0].parent
    volume, _ = load_study(folder)
    assert volume.spacing_zyx_mm[0] == pytest.approx(5.0, abs=0.06)
    assert volume.shape[0] == 6
    assert "resampled" in [note.code for note in volume.notes]


def test_lossy_transfer_syntax_is_noted(ct_series_factory) -> None:
    import pydicom
    from pydicom.uid import JPEG2000, JPEG2000Lossless

    paths = ct_series_factory(
        n_slices=3, pixel_representation=1, intercept=0.0, transfer_syntax=JPEG2000Lossless
    )
    for path in paths:
        # The same codestream under the "JPEG 2000 (lossy allowed)" transfer syntax.
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEG2000
        ds.save_as(path)
    volume, _ = load_study(paths[0].parent)
    assert "lossy_compression" in [note.code for note in volume.notes]
    assert volume.hu.min() == -1000.0


def test_negative_gantry_tilt_is_corrected(ct_series_factory) -> None:
    step_mm = 1.0 / math.sin(math.radians(20.0))
    paths = ct_series_factory(n_slices=3, tilt_deg=-20.0, spacing_mm=step_mm, pixel_spacing_mm=1.0)
    volume, _ = load_study(paths[0].parent)
    note = next(note for note in volume.notes if note.code == "gantry_tilt")
    assert "20.00 deg" in note.message
    for k in range(3):
        source = phantom_slice_hu(k).astype(np.float32)
        assert np.allclose(volume.hu[k, 10 - k : 50 - k, 10:50], source[10:50, 10:50], atol=0.01)
    assert "gantry_tilt_mismatch" not in [n.code for n in volume.notes]


def test_tilt_tag_disagreeing_with_positions_is_noted(ct_series_factory) -> None:
    import pydicom

    step_mm = 1.0 / math.sin(math.radians(15.0))
    paths = ct_series_factory(n_slices=3, tilt_deg=15.0, spacing_mm=step_mm, pixel_spacing_mm=1.0)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.GantryDetectorTilt = "25"
        ds.save_as(path)
    volume, _ = load_study(paths[0].parent)
    mismatch = [n for n in volume.notes if n.code == "gantry_tilt_mismatch"]
    assert len(mismatch) == 1
    assert "25 deg" in mismatch[0].message
