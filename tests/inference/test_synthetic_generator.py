"""Synthetic cohort: determinism, DICOM headers, manifest, anatomy HU and class behaviour."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage

from inference.synthetic import generate_case_volume, load_cohort, make_cohort
from inference.synthetic.case import SyntheticCase
from inference.synthetic.cohort import _plan_cases
from inference.synthetic.lesions import HARD_REASONS

# Session fixtures shared with the other synthetic and segmentation test modules.
pytest_plugins = ["tests.inference.synthetic_fixtures"]

ONE_HT = {"HT": 1, "CE": 0, "HT+CE": 0}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _patient_index(case: SyntheticCase, x_mm: float, y_mm: float, z_mm: float) -> tuple[int, ...]:
    """Voxel index of a point given in head coordinates (before the head's shift and yaw)."""
    anatomy = case.notes["anatomy"]
    yaw = math.radians(anatomy["yaw_deg"])
    cx, cy = anatomy["center_xy_mm"]
    px = cx + math.cos(yaw) * x_mm - math.sin(yaw) * y_mm
    py = cy + math.sin(yaw) * x_mm + math.cos(yaw) * y_mm
    dz, dy, dx = case.grid.spacing_zyx_mm
    x0, y0, z0 = case.grid.origin_xyz_mm
    return (round((z_mm - z0) / dz), round((py - y0) / dy), round((px - x0) / dx))


def _roi_mean(case: SyntheticCase, hu: np.ndarray, point: tuple[float, float, float]) -> float:
    k, j, i = _patient_index(case, *point)
    return float(hu[k, j - 1 : j + 2, i - 1 : i + 2].mean())


def test_same_seed_writes_same_bytes(tmp_path):
    make_cohort(tmp_path / "a", n_cases=1, seed=5, class_counts=ONE_HT, n_normal=0)
    make_cohort(tmp_path / "b", n_cases=1, seed=5, class_counts=ONE_HT, n_normal=0)
    first = _tree_bytes(tmp_path / "a")
    second = _tree_bytes(tmp_path / "b")
    assert sorted(first) == sorted(second)
    assert len(first) > 50
    for name, content in first.items():
        assert content == second[name], name


def test_other_seed_changes_pixels_and_uids(tmp_path):
    make_cohort(tmp_path / "a", n_cases=1, seed=5, class_counts=ONE_HT, n_normal=0)
    make_cohort(tmp_path / "b", n_cases=1, seed=6, class_counts=ONE_HT, n_normal=0)
    first = pydicom.dcmread(tmp_path / "a" / "SYN-0001" / "baseline" / "IM0010.dcm")
    second = pydicom.dcmread(tmp_path / "b" / "SYN-0001" / "baseline" / "IM0010.dcm")
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.PixelData != second.PixelData


def test_baseline_headers_are_valid_ct(small_cohort):
    case = small_cohort.cases[0]
    files = sorted(case.baseline_dir.glob("IM*.dcm"))
    first = pydicom.dcmread(files[0])
    second = pydicom.dcmread(files[1])
    assert 28 <= len(files) <= 32
    assert first.SOPClassUID == CTImageStorage
    assert first.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert first.Modality == "CT"
    assert "SYNTHETIC" in str(first.PatientName)
    assert "SYNTHETIC" in first.SeriesDescription
    assert first.PatientID == case.code
    assert first.PatientBirthDate == ""
    assert float(first.RescaleIntercept) == -1024.0
    assert float(first.RescaleSlope) == 1.0
    assert first.PixelRepresentation == 0
    assert float(first.WindowCenter) == 40.0
    assert float(first.WindowWidth) == 80.0
    assert first.ConvolutionKernel == "SOFT TISSUE"
    assert float(first.SliceThickness) == 5.0
    assert (first.Rows, first.Columns) == (256, 256)
    assert float(first.PixelSpacing[0]) == pytest.approx(230.0 / 256, abs=1e-5)
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    step_mm = float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    assert step_mm == pytest.approx(5.0)
    assert first.StudyInstanceUID.startswith("2.25.")
    assert len(first.SOPInstanceUID) <= 64


def test_follow_up_is_new_study(small_cohort):
    case = small_cohort.cases[0]
    baseline = pydicom.dcmread(sorted(case.baseline_dir.glob("*.dcm"))[0])
    follow_up = pydicom.dcmread(sorted(case.follow_up_dir.glob("*.dcm"))[0])
    assert follow_up.PatientID == baseline.PatientID
    assert follow_up.StudyInstanceUID != baseline.StudyInstanceUID
    assert follow_up.SeriesInstanceUID != baseline.SeriesInstanceUID
    assert "follow-up" in follow_up.SeriesDescription
    hours_between = case.follow_up_hours - case.baseline_hours
    assert 18.0 <= hours_between <= 72.0
    assert 0.5 <= case.baseline_hours <= 6.0
    assert 24.0 <= case.follow_up_hours <= 72.0


def test_default_plan_matches_source_study():
    rng = np.random.default_rng(0)
    plan = _plan_cases(rng, {"HT": 41, "CE": 34, "HT+CE": 36}, 0, None, 39 / 111)
    labels = [label for label, _, _ in plan]
    test_labels = [label for label, split, _ in plan if split == "test"]
    assert len(plan) == 111
    assert labels.count("HT") == 41
    assert labels.count("CE") == 34
    assert labels.count("HT+CE") == 36
    assert len(test_labels) == 39
    assert test_labels.count("HT") == 14
    assert test_labels.count("CE") == 12
    assert test_labels.count("HT+CE") == 13
    assert sum(reason is not None for _, _, reason in plan) == 9


def test_normal_studies_are_added_and_split(tmp_path):
    rng = np.random.default_rng(0)
    plan = _plan_cases(rng, {"HT": 41, "CE": 34, "HT+CE": 36}, 4, 0, 39 / 111)
    normal = [split for label, split, _ in plan if label == "none"]
    assert len(plan) == 115
    assert len(normal) == 4
    assert normal.count("test") == 1
    assert sum(split == "test" for label, split, _ in plan if label != "none") == 39


def test_manifest_round_trip(small_cohort):
    loaded = load_cohort(small_cohort.root)
    data = json.loads((small_cohort.root / "cohort.json").read_text())
    assert loaded.cohort_id == small_cohort.cohort_id
    assert data["seed"] == 31
    assert data["generator_version"] == loaded.generator_version
    assert loaded.class_counts() == {"HT": 2, "CE": 2, "HT+CE": 2, "none": 1}
    assert [case.code for case in loaded.cases] == [f"SYN-{i:04d}" for i in range(1, 8)]
    assert sum(case.hard for case in loaded.cases) == 1
    for case in loaded.cases:
        assert case.baseline_dir.is_dir()
        assert case.follow_up_dir.is_dir()
        assert not data["cases"][0]["baseline_dir"].startswith("/")
        labels = case.true_labels()
        n_slices = len(list(case.baseline_dir.glob("*.dcm")))
        assert labels.shape == (n_slices, 256, 256)
        assert labels.dtype == np.int16
        assert sorted(np.unique(labels[labels > 0]).tolist()) == list(
            range(1, len(case.lesions) + 1)
        )
        voxel_ml = 5.0 * (230.0 / 256) ** 2 / 1000.0
        for lesion in case.lesions:
            count = int(np.count_nonzero(labels == lesion["label"]))
            assert lesion["volume_ml"] == pytest.approx(count * voxel_ml, abs=1e-3)
            assert lesion["component_type"] in ("HT", "CE")


def test_hard_case_has_a_reason(small_cohort):
    hard = [case for case in small_cohort.cases if case.hard]
    assert len(hard) == 1
    assert hard[0].hard_reason in HARD_REASONS
    assert hard[0].label != "none"


def test_labels_match_their_components(small_cohort):
    for case in small_cohort.cases:
        types = set(case.component_types())
        expected = {"HT": {"HT"}, "CE": {"CE"}, "HT+CE": {"HT", "CE"}, "none": set()}
        assert types == expected[case.label], case.code


def test_nifti_mask_matches_npz(small_cohort):
    case = next(case for case in small_cohort.cases if case.lesions)
    image = nib.load(case.masks_nifti)
    labels = case.true_labels()
    assert np.array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), labels)
    first = pydicom.dcmread(sorted(case.baseline_dir.glob("*.dcm"))[0])
    x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
    ras_origin = image.affine @ np.array([0, 0, 0, 1.0])
    assert ras_origin[:3] == pytest.approx([-x0, -y0, z0], abs=1e-3)
    with np.load(case.masks_npz) as data:
        assert data["component_types"].tolist() == case.component_types()


def test_normal_case_has_no_lesion(cases_by_label):
    for case in cases_by_label["none"]:
        assert case.lesions == []
        assert not case.true_labels.any()


def test_tissue_hu_is_realistic(cases_by_label):
    case = cases_by_label["none"][0]
    hu = case.baseline_hu
    contralateral = -1 if case.side == "left" else 1
    white_hu = _roi_mean(case, hu, (-30.0 * contralateral, 10.0, 40.0))
    thalamus_hu = _roi_mean(case, hu, (9.0 * contralateral, 9.0, 8.0))
    ventricle_hu = _roi_mean(case, hu, (9.0 * contralateral, -8.0, 22.0))
    assert 18.0 <= white_hu <= 32.0
    assert 32.0 <= thalamus_hu <= 46.0
    assert -5.0 <= ventricle_hu <= 17.0
    assert float(hu.max()) > 700.0
    assert float(hu[0, 0, 0]) == pytest.approx(-1000.0, abs=20.0)


def test_contrast_clears_and_blood_persists(cases_by_label):
    for case in cases_by_label["CE"]:
        mask = case.true_labels > 0
        assert case.baseline_hu[mask].mean() > 55.0
        assert case.follow_up_hu[mask].mean() < 45.0
    for case in cases_by_label["HT"]:
        mask = case.true_labels > 0
        baseline_hu = float(case.baseline_hu[mask].mean())
        follow_up_hu = float(case.follow_up_hu[mask].mean())
        assert follow_up_hu > 45.0
        assert 0.0 < baseline_hu - follow_up_hu < 12.0


def test_mixed_lesion_partly_persists(cases_by_label):
    for case in cases_by_label["HT+CE"]:
        for lesion in case.lesions:
            mask = case.true_labels == lesion.label
            if not mask.any():
                continue
            if lesion.component_type == "CE":
                assert not lesion.persists
                assert case.follow_up_hu[mask].mean() < 50.0
            else:
                assert lesion.persists
                assert case.follow_up_hu[mask].mean() > 42.0


def test_infarct_darkens_on_follow_up(cases_by_label):
    case = cases_by_label["none"][1]
    difference = case.baseline_hu - case.follow_up_hu
    k0, _, _ = _patient_index(case, 0.0, 0.0, 5.0)
    k1, _, _ = _patient_index(case, 0.0, 0.0, 25.0)
    _, j0, left = _patient_index(case, 30.0, -10.0, 0.0)
    _, j1, right = _patient_index(case, -30.0, 5.0, 0.0)
    left_mean = float(difference[k0:k1, j0:j1, left - 3 : left + 4].mean())
    right_mean = float(difference[k0:k1, j0:j1, right - 3 : right + 4].mean())
    infarct_side, other_side = (
        (left_mean, right_mean) if case.side == "left" else (right_mean, left_mean)
    )
    assert infarct_side > 3.0
    assert abs(other_side) < 1.5


def _three_way(value: float, low: float, high: float, order: tuple[str, ...]) -> str:
    if value < low:
        return order[0]
    if value < high:
        return order[1]
    return order[2]


def test_mean_hu_alone_does_not_separate_classes():
    """A two-threshold rule on lesion mean HU, fitted on the data, stays well below perfect."""
    values: list[tuple[str, float]] = []
    for label in ("HT", "CE", "HT+CE"):
        for seed in range(8):
            case = generate_case_volume(label, seed=500 + seed)
            mask = case.true_labels > 0
            values.append((label, float(case.baseline_hu[mask].mean())))
    means = np.array([value for _, value in values])
    labels = [label for label, _ in values]
    cuts = np.unique(np.round(means))
    best = 0.0
    for low, high in itertools.combinations_with_replacement(cuts, 2):
        for order in itertools.permutations(("HT", "HT+CE", "CE")):
            predicted = [_three_way(value, low, high, order) for value in means]
            best = max(
                best, float(np.mean([p == t for p, t in zip(predicted, labels, strict=True)]))
            )
    assert 0.45 <= best <= 0.85


def test_matrix_512_keeps_geometry():
    small = generate_case_volume("CE", seed=3, matrix=256)
    large = generate_case_volume("CE", seed=3, matrix=512)
    assert large.baseline_hu.shape == (small.baseline_hu.shape[0], 512, 512)
    assert large.grid.spacing_zyx_mm[1] == pytest.approx(230.0 / 512)
    small_ml = sum(lesion.volume_ml for lesion in small.lesions)
    large_ml = sum(lesion.volume_ml for lesion in large.lesions)
    assert large_ml == pytest.approx(small_ml, rel=0.15)


def test_inconsistent_counts_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="add up to 3, but n_cases is 111"):
        make_cohort(tmp_path, class_counts={"HT": 1, "CE": 1, "HT+CE": 1})
    with pytest.raises(ValueError, match="unknown labels"):
        make_cohort(tmp_path, n_cases=1, class_counts={"ICH": 1})
    with pytest.raises(ValueError, match="matrix 300 is not supported"):
        make_cohort(tmp_path, n_cases=1, class_counts=ONE_HT, matrix=300)


def test_existing_cohort_is_not_overwritten(tmp_path):
    make_cohort(tmp_path, n_cases=1, class_counts=ONE_HT, n_normal=0)
    with pytest.raises(FileExistsError, match="already exists"):
        make_cohort(tmp_path, n_cases=1, class_counts=ONE_HT, n_normal=0)
    again = make_cohort(tmp_path, n_cases=1, class_counts=ONE_HT, n_normal=0, overwrite=True)
    assert len(again.cases) == 1


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run make-cohort"):
        load_cohort(tmp_path)
