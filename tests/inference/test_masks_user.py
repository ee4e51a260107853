"""User-supplied lesion masks: NIfTI and DICOM SEG, other grids, label values and bad files."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from inference.errors import MaskError
from inference.segmentation import load_user_mask
from inference.synthetic import generate_case_volume
from inference.synthetic.case import SyntheticCase
from inference.synthetic.writer import SeriesInfo, nifti_affine, write_series
from inference.volume import Volume


@pytest.fixture(scope="module")
def mixed_case() -> SyntheticCase:
    case = generate_case_volume("HT+CE", seed=1)
    assert sorted(np.unique(case.true_labels).tolist()) == [0, 1, 2]
    return case


def _write_nifti(path: Path, labels_zyx: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(np.ascontiguousarray(labels_zyx.transpose(2, 1, 0)), affine)
    nib.save(image, path)
    return path


def _blob_mask(shape: tuple[int, int, int], value: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[12, 100:104, 100:104] = value
    mask[14, 150:152, 140:143] = value
    return mask


def test_true_mask_on_same_grid(mixed_case, tmp_path):
    path = _write_nifti(
        tmp_path / "m.nii.gz", mixed_case.true_labels, nifti_affine(mixed_case.grid)
    )
    result = load_user_mask(path, mixed_case.baseline_volume())
    assert result.source == "user_mask"
    assert len(result.lesions) == 2
    assert [lesion.source_value for lesion in result.lesions] == [1, 2]
    for lesion in result.lesions:
        expected = int(np.count_nonzero(mixed_case.true_labels == lesion.source_value))
        assert lesion.n_voxels == expected
    assert not any(note.code == "mask_resampled" for note in result.notes)


def test_binary_255_mask_splits_into_pieces(mixed_case, tmp_path):
    mask = _blob_mask(mixed_case.true_labels.shape, 255)
    path = _write_nifti(tmp_path / "m.nii", mask, nifti_affine(mixed_case.grid))
    result = load_user_mask(path, mixed_case.baseline_volume())
    assert [lesion.n_voxels for lesion in result.lesions] == [16, 6]
    assert [lesion.source_value for lesion in result.lesions] == [255, 255]
    assert result.lesions[0].bbox_zyx == (12, 100, 100, 13, 104, 104)


def test_each_label_value_stays_one_lesion(mixed_case, tmp_path):
    mask = _blob_mask(mixed_case.true_labels.shape, 3)
    mask[20, 60:62, 60:62] = 1
    mask[8, 120, 120] = 2
    path = _write_nifti(tmp_path / "m.nii.gz", mask, nifti_affine(mixed_case.grid))
    result = load_user_mask(path, mixed_case.baseline_volume())
    by_value = {lesion.source_value: lesion for lesion in result.lesions}
    assert sorted(by_value) == [1, 2, 3]
    assert by_value[3].n_voxels == 22
    assert by_value[3].slices == (12, 14)
    assert by_value[2].n_voxels == 1
    assert by_value[1].n_voxels == 4


def test_mask_on_coarser_grid_is_resampled(mixed_case, tmp_path):
    truth = mixed_case.true_labels
    coarse = truth[:, ::2, ::2]
    affine = nifti_affine(mixed_case.grid)
    affine[:3, :2] *= 2.0
    # Voxel (0, 0) of the coarse grid covers fine voxels (0..1, 0..1): its centre is half a
    # fine voxel further along x and y.
    affine[:3, 3] += affine[:3, 0] / 4.0 + affine[:3, 1] / 4.0
    path = _write_nifti(tmp_path / "coarse.nii.gz", coarse, affine)
    result = load_user_mask(path, mixed_case.baseline_volume())
    note = next(note for note in result.notes if note.code == "mask_resampled")
    assert note.level == "correction"
    assert "nearest neighbour" in note.message
    assert result.labels.shape == truth.shape
    total = sum(lesion.n_voxels for lesion in result.lesions)
    assert total == pytest.approx(int(np.count_nonzero(truth)), rel=0.2)


def test_tiny_header_difference_is_accepted(mixed_case, tmp_path):
    affine = nifti_affine(mixed_case.grid)
    affine[0, 3] += 0.01
    path = _write_nifti(tmp_path / "m.nii.gz", mixed_case.true_labels, affine)
    result = load_user_mask(path, mixed_case.baseline_volume())
    codes = [note.code for note in result.notes]
    assert "mask_header_rounding" in codes
    assert "mask_resampled" not in codes
    assert np.array_equal(result.labels > 0, mixed_case.true_labels > 0)


def test_mask_elsewhere_in_space_is_rejected(mixed_case, tmp_path):
    affine = nifti_affine(mixed_case.grid)
    affine[2, 3] += 1000.0
    path = _write_nifti(tmp_path / "far.nii.gz", mixed_case.true_labels, affine)
    with pytest.raises(MaskError, match="does not overlap the volume"):
        load_user_mask(path, mixed_case.baseline_volume())


def test_probability_map_is_rejected(mixed_case, tmp_path):
    probabilities = (mixed_case.true_labels > 0).astype(np.float32) * 0.7
    path = _write_nifti(tmp_path / "p.nii.gz", probabilities, nifti_affine(mixed_case.grid))
    with pytest.raises(MaskError, match="non-integer values"):
        load_user_mask(path, mixed_case.baseline_volume())


def test_four_dimensional_mask_is_rejected(mixed_case, tmp_path):
    stacked = np.stack([mixed_case.true_labels.transpose(2, 1, 0)] * 2, axis=-1)
    path = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(stacked, nifti_affine(mixed_case.grid)), path)
    with pytest.raises(MaskError, match="a 3D label image is needed"):
        load_user_mask(path, mixed_case.baseline_volume())


def test_junk_and_missing_files_are_rejected(mixed_case, tmp_path):
    junk = tmp_path / "mask.seg"
    junk.write_bytes(b"not a mask")
    with pytest.raises(MaskError, match="neither NIfTI"):
        load_user_mask(junk, mixed_case.baseline_volume())
    with pytest.raises(MaskError, match="not found"):
        load_user_mask(tmp_path / "absent.nii.gz", mixed_case.baseline_volume())


def test_mask_voxels_in_padding_are_dropped(mixed_case, tmp_path):
    path = _write_nifti(
        tmp_path / "m.nii.gz", mixed_case.true_labels, nifti_affine(mixed_case.grid)
    )
    volume = mixed_case.baseline_volume()
    padding = np.zeros(volume.shape, dtype=bool)
    first_z = int(np.nonzero(mixed_case.true_labels)[0].min())
    padding[first_z] = True
    padded = Volume(
        hu=np.where(padding, np.float32(-1000.0), volume.hu),
        spacing_zyx_mm=volume.spacing_zyx_mm,
        origin_xyz_mm=volume.origin_xyz_mm,
        direction=volume.direction,
        sop_instance_uids=[],
        padding_mask=padding,
    )
    result = load_user_mask(path, padded)
    note = next(note for note in result.notes if note.code == "mask_in_padding")
    dropped = int(np.count_nonzero(mixed_case.true_labels[first_z]))
    assert note.message.startswith(f"{dropped} mask voxel(s)")
    assert not result.labels[first_z].any()
    assert all(lesion.mean_hu > 0.0 for lesion in result.lesions)


def test_dicom_seg_segments_become_lesions(mixed_case, tmp_path):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from inference.dicom import load_study

    info = SeriesInfo(
        cohort_seed=0,
        code="SYN-SEG-01",
        role="baseline",
        acquired_at=datetime(2026, 1, 2, 3, 4, 5),
        series_number=2,
        generator_version="test",
        patient_sex="O",
        patient_age_years=70,
    )
    paths = write_series(mixed_case.baseline_hu, mixed_case.grid, tmp_path / "study", info)
    sources = [pydicom.dcmread(path) for path in paths]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, name in ((1, "HT"), (2, "CE"))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mixed_case.true_labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=10,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg_path = tmp_path / "seg.dcm"
    seg.save_as(seg_path)

    volume, _ = load_study(tmp_path / "study")
    result = load_user_mask(seg_path, volume)
    assert [lesion.source_value for lesion in result.lesions] == [1, 2]
    for lesion in result.lesions:
        expected = int(np.count_nonzero(mixed_case.true_labels == lesion.source_value))
        assert lesion.n_voxels == expected


def test_dicom_that_is_not_seg_is_rejected(mixed_case, tmp_path):
    info = SeriesInfo(0, "SYN-SEG-02", "baseline", datetime(2026, 1, 2), 2, "test", "O", 70)
    paths = write_series(mixed_case.baseline_hu[:2], mixed_case.grid, tmp_path / "s", info)
    with pytest.raises(MaskError, match="not a Segmentation"):
        load_user_mask(paths[0], mixed_case.baseline_volume())
