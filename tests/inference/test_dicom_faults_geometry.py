"""Faults in slice geometry: invalid numbers, shared series UIDs, near copies, hidden gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from inference.dicom import headers, load_study, load_volume, scan_paths
from inference.errors import GeometryError, NoUsableSeriesError
from tests.inference.conftest import BRAIN_HU, marker_of, phantom_slice_hu

CENTER = (32, 32)


def rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(params=[True, False], ids=["native_headers", "pydicom_headers"])
def header_reader(request, monkeypatch) -> bool:
    monkeypatch.setattr(headers, "native_headers_enabled", request.param)
    return request.param


def codes(volume) -> list[str]:
    return [note.code for note in volume.notes]


# NaN, inf and degenerate geometry -------------------------------------------------------


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_position_is_a_geometry_error(ct_series_factory, header_reader, bad) -> None:
    paths = ct_series_factory(n_slices=6)
    rewrite(paths[3], lambda ds: setattr(ds, "ImagePositionPatient", ["-100", "-100", bad]))
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "invalid_geometry"
    assert error.value.message.startswith("IM0004.dcm: ImagePositionPatient contains")
    assert f"'{bad}'" in error.value.message
    assert "Re-export the series" in error.value.message
    assert error.value.path == str(paths[3])


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (["nan", "0", "0", "0", "1", "0"], "ImageOrientationPatient contains 'nan'"),
        (["0", "0", "0", "0", "0", "0"], "ImageOrientationPatient has a zero-length direction"),
        (["1", "0", "0", "1", "0", "0"], "parallel row and column directions"),
    ],
)
def test_invalid_orientation_is_named_not_called_sagittal(
    ct_series_factory, header_reader, orientation, expected
) -> None:
    paths = ct_series_factory(n_slices=6)
    for path in paths:
        rewrite(path, lambda ds: setattr(ds, "ImageOrientationPatient", orientation))
    scan = scan_paths(paths[0].parent)
    assert scan.series[0].kind == "no_geometry"
    assert expected in scan.series[0].reason
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(paths[0].parent)
    assert expected in error.value.message
    assert "sagittal" not in error.value.message


# two reconstructions sharing one SeriesInstanceUID --------------------------------------


def bone_kernel_slice(index: int) -> np.ndarray:
    image = phantom_slice_hu(index)
    image[20:44, 20:44] = 200
    return image


def test_reconstructions_sharing_a_uid_are_not_interleaved(tmp_path, ct_series_factory) -> None:
    uid = generate_uid()
    study = generate_uid()
    ct_series_factory(
        "study", n_slices=8, series_uid=uid, study_uid=study, kernel="H30s", spacing_mm=5.0
    )
    ct_series_factory(
        "study",
        series_uid=uid,
        study_uid=study,
        kernel="H70h",
        series_number=3,
        spacing_mm=2.5,
        positions_mm=[2.5 + 5.0 * k for k in range(7)],
        names=[f"B{k}.dcm" for k in range(7)],
        hu_of=bone_kernel_slice,
    )
    volume, scan = load_study(tmp_path / "study")
    assert volume.shape[0] == 8
    assert volume.spacing_zyx_mm[0] == pytest.approx(5.0)
    assert [marker_of(s) for s in volume.hu] == list(range(8))
    assert [float(s[CENTER]) for s in volume.hu] == [BRAIN_HU] * 8
    series = scan.chosen
    assert series.n_instances == 8
    assert [item.reason for item in series.excluded] == ["other_reconstruction"] * 7
    message = {note.code: note.message for note in volume.notes}["shared_series_uid"]
    assert "Kept series 2 H30s 5 mm" in message
    assert "left out series 3 H70h 2.5 mm" in message
    assert "instances_excluded" not in codes(volume)


def test_same_kernel_other_thickness_interleaved_is_split(tmp_path, ct_series_factory) -> None:
    uid, study = generate_uid(), generate_uid()
    ct_series_factory("study", n_slices=6, series_uid=uid, study_uid=study, spacing_mm=5.0)
    ct_series_factory(
        "study",
        series_uid=uid,
        study_uid=study,
        spacing_mm=1.0,
        positions_mm=[1.0 + 5.0 * k for k in range(6)],
        names=[f"T{k}.dcm" for k in range(6)],
        hu_of=bone_kernel_slice,
    )
    volume, scan = load_study(tmp_path / "study")
    assert volume.shape[0] == 6
    assert [float(s[CENTER]) for s in volume.hu] == [BRAIN_HU] * 6
    assert len(scan.chosen.excluded) == 6
    assert "shared_series_uid" in codes(volume)


def test_thickness_changing_along_the_stack_stays_one_series(tmp_path, ct_series_factory) -> None:
    # Like shared case C02: 2.5 mm slices up to z = 10, then 7.5 mm; nothing interleaves.
    uid, study = generate_uid(), generate_uid()
    ct_series_factory(
        "study", series_uid=uid, study_uid=study, spacing_mm=2.5,
        positions_mm=[0.0, 2.5, 5.0, 7.5, 10.0],
    )  # fmt: skip
    ct_series_factory(
        "study", series_uid=uid, study_uid=study, spacing_mm=7.5,
        positions_mm=[17.5, 25.0, 32.5, 40.0, 47.5], names=[f"U{k}.dcm" for k in range(5)],
    )  # fmt: skip
    volume, scan = load_study(tmp_path / "study")
    assert scan.chosen.n_instances == 10
    assert scan.chosen.excluded == []
    assert volume.shape[0] == 20
    assert volume.spacing_zyx_mm[0] == pytest.approx(2.5)
    assert "shared_series_uid" not in codes(volume)


# near-duplicate positions and conflicts ----------------------------------------


def add_copy(paths: list[Path], index: int, z_mm: float, name: str, hu_change=None) -> Path:
    ds = pydicom.dcmread(paths[index])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImagePositionPatient = [-100.0, -100.0, z_mm]
    if hu_change is not None:
        pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(64, 64).copy()
        hu_change(pixels)
        ds.PixelData = pixels.tobytes()
    target = paths[index].parent / name
    ds.save_as(target, enforce_file_format=True)
    return target


def brighten_center(pixels: np.ndarray) -> None:
    pixels[30:34, 30:34] += 40


@pytest.mark.parametrize("offset_mm", [0.03, 0.5, 0.9])
def test_near_copy_is_dropped(ct_series_factory, offset_mm) -> None:
    paths = ct_series_factory(n_slices=8)
    add_copy(paths, 2, 10.0 + offset_mm, "IM0003 copy.dcm")
    volume, _ = load_study(paths[0].parent)
    assert volume.shape[0] == 8
    assert volume.spacing_zyx_mm[0] == pytest.approx(5.0)
    assert [marker_of(s) for s in volume.hu] == list(range(8))
    dropped = {note.code: note.message for note in volume.notes}["duplicate_dropped"]
    assert "IM0003 copy.dcm (copy of IM0003.dcm" in dropped


def test_near_position_with_other_pixels_is_a_conflict(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=8)
    add_copy(paths, 2, 10.4, "other.dcm", brighten_center)
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "conflicting_slices"
    assert "at 10.0 mm: IM0003.dcm, other.dcm" in error.value.message


def test_every_file_at_every_conflicting_position_is_named(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=8)
    add_copy(paths, 2, 10.0, "conflict_0.dcm", brighten_center)
    add_copy(paths, 2, 10.0, "conflict_1.dcm", lambda p: p.__isub__(3))
    add_copy(paths, 5, 25.0, "conflict_2.dcm", brighten_center)
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    message = error.value.message
    assert "at 10.0 mm: IM0003.dcm, conflict_0.dcm, conflict_1.dcm" in message
    assert "at 25.0 mm: IM0006.dcm, conflict_2.dcm" in message


def test_stray_close_slice_is_rejected(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=8)
    add_copy(paths, 2, 11.1, "stray.dcm", brighten_center)
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "irregular_spacing"
    assert "IM0003.dcm (10.00 mm) and stray.dcm (11.10 mm) are only 1.10 mm apart" in (
        error.value.message
    )


# gaps hidden by jitter, grids that cut off the top ------------------------------


@pytest.mark.parametrize(
    ("positions", "between"),
    [
        ([0, 5, 10, 20, 25, 30.06, 35.06, 40.06], "between 10.0 mm (IM0003.dcm) and 20.0 mm"),
        ([0, 12, 17, 22, 27, 32, 37, 42], "between 0.0 mm (IM0001.dcm) and 12.0 mm"),
        ([0, 5.1, 9.9, 15, 20.1, 29.9, 35, 40.1], "between 20.1 mm (IM0005.dcm) and 29.9 mm"),
    ],
)
def test_missing_slice_is_a_gap_despite_jitter(ct_series_factory, positions, between) -> None:
    paths = ct_series_factory(positions_mm=positions)
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "missing_slices"
    assert between in error.value.message
    assert "allow_gaps=True" in error.value.message


def test_gap_with_jitter_is_interpolated_only_when_allowed(ct_series_factory) -> None:
    paths = ct_series_factory(positions_mm=[0, 5, 10, 20, 25, 30.06, 35.06, 40.06])
    volume, _ = load_study(paths[0].parent, allow_gaps=True)
    assert volume.shape[0] == 9
    assert volume.spacing_zyx_mm[0] == pytest.approx(40.06 / 8)
    assert "gap" in codes(volume)
    assert marker_of(volume.hu[0]) == 0
    assert marker_of(volume.hu[-1]) == 7


def test_resampled_grid_ends_at_the_last_slice(ct_series_factory) -> None:
    paths = ct_series_factory(positions_mm=[0, 5, 10, 15, 20, 25, 30, 34])
    scan = scan_paths(paths[0].parent)
    volume = load_volume(scan.chosen)
    extent_mm = (volume.shape[0] - 1) * volume.spacing_zyx_mm[0]
    assert extent_mm == pytest.approx(34.0)
    assert volume.spacing_zyx_mm[0] <= 4.0
    assert marker_of(volume.hu[-1]) == 7
    assert marker_of(volume.hu[0]) == 0


def test_cli_nan_position_one_line_error(ct_series_factory, capsys) -> None:
    from inference.cli import main

    paths = ct_series_factory(n_slices=5)
    rewrite(paths[1], lambda ds: setattr(ds, "ImagePositionPatient", ["-100", "-100", "nan"]))
    status = main(["inspect", str(paths[0].parent)])
    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err
    assert "error: invalid_geometry: IM0002.dcm: ImagePositionPatient contains 'nan'" in err


# Enhanced CT frames without a position ------------------------------------------------------


def write_enhanced_ct(path: Path, n_frames: int, *, without_position: int | None = None,
                      n_groups: int | None = None) -> None:  # fmt: skip
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    def item(**values) -> Dataset:
        group = Dataset()
        for keyword, value in values.items():
            setattr(group, keyword, value)
        return group

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber, ds.ImageType = "CT", 2, ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 64
    ds.NumberOfFrames = n_frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SharedFunctionalGroupsSequence = Sequence(
        [
            item(
                PlaneOrientationSequence=Sequence(
                    [item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]
                ),
                PixelMeasuresSequence=Sequence([item(PixelSpacing=[1, 1], SliceThickness=5)]),
                PixelValueTransformationSequence=Sequence(
                    [item(RescaleIntercept=0, RescaleSlope=1, RescaleType="HU")]
                ),
            )
        ]
    )
    groups = []
    for index in range(n_groups if n_groups is not None else n_frames):
        group = Dataset()
        if index != without_position:
            group.PlanePositionSequence = Sequence(
                [item(ImagePositionPatient=[-32, -32, 5.0 * index])]
            )
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.PixelData = (
        np.stack([phantom_slice_hu(k) for k in range(n_frames)]).astype(np.int16).tobytes()
    )
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_frame_without_position_is_named(tmp_path) -> None:
    (tmp_path / "e").mkdir()
    write_enhanced_ct(tmp_path / "e" / "enhanced.dcm", 6, without_position=5)
    volume, scan = load_study(tmp_path / "e")
    excluded = scan.chosen.excluded
    assert [item.reason for item in excluded] == ["no_geometry"]
    assert excluded[0].detail.startswith("enhanced.dcm frame 6: ")
    message = {note.code: note.message for note in volume.notes}["instances_excluded"]
    assert message.endswith("left out of this series: enhanced.dcm frame 6")
    assert volume.shape[0] == 5


def test_enhanced_ct_missing_frame_groups(tmp_path) -> None:
    (tmp_path / "e").mkdir()
    write_enhanced_ct(tmp_path / "e" / "enhanced.dcm", 6, n_groups=5)
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(tmp_path / "e")
    assert "5 per-frame functional groups for 6 frames" in error.value.message


# orientation noise, skewed orientation, one position written into every file ---------------


def test_orientation_rounding_noise_is_accepted(ct_series_factory, header_reader) -> None:
    paths = ct_series_factory(n_slices=6)
    for index, path in enumerate(paths):
        noise = 0.0015 if index % 2 else -0.0015
        rewrite(
            path,
            lambda ds, noise=noise: setattr(
                ds, "ImageOrientationPatient", [1, noise, 0, -noise, 1, 0]
            ),
        )
    volume, _ = load_study(paths[0].parent)
    assert volume.shape[0] == 6
    assert [marker_of(s) for s in volume.hu] == list(range(6))


def test_skewed_orientation_is_invalid_geometry(ct_series_factory, header_reader) -> None:
    paths = ct_series_factory(n_slices=6)
    for path in paths:
        rewrite(
            path,
            lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.3, 0.953939, 0]),
        )
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(paths[0].parent)
    assert "not perpendicular (cosine 0.30" in error.value.message


def test_one_position_in_every_file_is_named(ct_series_factory) -> None:
    paths = ct_series_factory(positions_mm=[0.0] * 8)
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "same_position"
    assert error.value.message.startswith("all 8 images (IM0001.dcm")
    assert "wrote one ImagePositionPatient into every file" in error.value.message
