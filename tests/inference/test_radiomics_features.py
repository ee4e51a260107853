"""Radiomics extraction: bounding-box crop equals whole volume, small lesions, provenance."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from inference.radiomics import (
    LesionFeatures,
    aggregate_lesions,
    case_feature_names,
    extract_case_features,
    extract_lesion_features,
    load_settings,
)
from inference.volume import Volume

TEXTURE_CLASSES = ["glcm", "gldm", "glrlm", "glszm", "ngtdm"]


def _volume(hu: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> Volume:
    return Volume(
        hu=hu.astype(np.float32),
        spacing_zyx_mm=spacing_zyx_mm,
        origin_xyz_mm=(-21.3, -17.9, 40.0),
        direction=np.eye(3),
        sop_instance_uids=[],
        series_instance_uid="1.2.826.0.1.3680043.8.498.1",
    )


@pytest.fixture(scope="module")
def anisotropic_case():
    """A 24 x 128 x 128 head-like volume at 0.45 x 0.45 x 5 mm with three lesions."""
    rng = np.random.default_rng(4)
    shape = (24, 128, 128)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    hu = 30.0 + 4.0 * rng.standard_normal(shape)
    hu[((y - 64) * 0.45) ** 2 + ((x - 64) * 0.45) ** 2 > 27**2] = -1000.0
    labels = np.zeros(shape, dtype=np.int32)
    # An ellipsoidal hematoma of about 65 HU with a brighter rim.
    hematoma = ((z - 11) * 5.0) ** 2 + ((y - 60) * 0.45) ** 2 + ((x - 50) * 0.45) ** 2 <= 6.5**2
    labels[hematoma] = 1
    hu[hematoma] = 65.0 + 12.0 * rng.standard_normal(int(hematoma.sum()))
    # A small bright stain touching the top slice, so the crop is clipped at the border.
    stain = (z <= 1) & (((y - 80) * 0.45) ** 2 + ((x - 80) * 0.45) ** 2 <= 3.0**2)
    labels[stain] = 2
    hu[stain] = 120.0 + 8.0 * rng.standard_normal(int(stain.sum()))
    labels[15, 40, 70] = 3
    hu[15, 40, 70] = 95.0
    return _volume(hu, (5.0, 0.45, 0.45)), labels


@pytest.fixture(scope="module")
def settings():
    return load_settings()


def _assert_features_equal(cropped: LesionFeatures, whole: LesionFeatures) -> None:
    assert cropped.features.keys() == whole.features.keys()
    for name, value in whole.features.items():
        other = cropped.features[name]
        if math.isnan(value):
            assert math.isnan(other), name
        else:
            # Identical grid and mask; the B-spline prefilter of the crop differs from the
            # whole volume's by less than float32 resolution, hence a 1e-6 relative tolerance.
            assert other == pytest.approx(value, rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("label", [1, 2])
def test_bounding_box_equals_whole_volume(anisotropic_case, settings, label):
    volume, labels = anisotropic_case
    cropped = extract_lesion_features(volume, labels, label, settings, crop=True)
    whole = extract_lesion_features(volume, labels, label, settings, crop=False)
    assert cropped.crop_zyx is not None
    assert whole.crop_zyx is None
    assert cropped.too_small == whole.too_small
    _assert_features_equal(cropped, whole)


def test_crop_is_much_smaller_than_volume(anisotropic_case, settings):
    volume, labels = anisotropic_case
    cropped = extract_lesion_features(volume, labels, 1, settings)
    (_, _), (y_low, y_high), (x_low, x_high) = cropped.crop_zyx
    # The 13 mm lesion plus 5 mm padding and a 16-voxel margin spans about 90 of 128 columns.
    assert y_high - y_low < 100
    assert x_high - x_low < 100


def test_lesion_features_have_real_values(anisotropic_case, settings):
    volume, labels = anisotropic_case
    lesion = extract_lesion_features(volume, labels, 1, settings)
    assert lesion.too_small == []
    assert lesion.features["original_firstorder_Mean"] == pytest.approx(65.0, abs=4.0)
    # Resampled to 1 mm, the 6.5 mm ellipsoid keeps roughly its analytic volume of 1150 mm3.
    assert lesion.features["original_shape_VoxelVolume"] == pytest.approx(1150, rel=0.2)
    assert lesion.volume_ml == pytest.approx(int((labels == 1).sum()) * 5.0 * 0.45 * 0.45 / 1000)


def test_single_voxel_lesion_is_kept_and_marked(anisotropic_case, settings):
    volume, labels = anisotropic_case
    lesion = extract_lesion_features(volume, labels, 3, settings)
    assert lesion.voxel_count == 1
    assert lesion.too_small == sorted(["firstorder", "shape", *TEXTURE_CLASSES])
    assert all(math.isnan(value) for value in lesion.features.values())
    assert "1 segmented voxel" in lesion.message


def test_three_voxel_lesion_marks_texture(settings):
    rng = np.random.default_rng(2)
    hu = 30.0 + 3.0 * rng.standard_normal((12, 24, 24))
    labels = np.zeros(hu.shape, dtype=np.int32)
    labels[6, 12, 10:13] = 1
    hu[6, 12, 10:13] = [80.0, 100.0, 120.0]
    lesion = extract_lesion_features(_volume(hu, (1.0, 1.0, 1.0)), labels, 1, settings)
    assert lesion.too_small == TEXTURE_CLASSES
    assert lesion.features["original_firstorder_Mean"] == pytest.approx(100.0)
    assert lesion.features["original_firstorder_Maximum"] == pytest.approx(120.0)
    assert lesion.features["original_shape_VoxelVolume"] == pytest.approx(3.0)
    assert math.isnan(lesion.features["original_glcm_Contrast"])


def test_case_features_keep_every_lesion_and_provenance(anisotropic_case, settings):
    volume, labels = anisotropic_case
    case = extract_case_features(volume, labels, settings=settings)
    assert [lesion.label for lesion in case.lesions] == [1, 2, 3]
    assert case.aggregate["n_lesions"] == 3.0
    assert case.provenance["pyradiomics_version"] == "pyradiomics-bhklab 3.1.4"
    assert case.provenance["settings_id"] == "ct-hyperdensity-v1"
    assert case.provenance["settings_sha256"] == settings.sha256
    assert len(case.provenance["image_sha256"]) == 64
    assert len(case.provenance["mask_sha256"]) == 64
    assert case.provenance["series_instance_uid"] == "1.2.826.0.1.3680043.8.498.1"
    assert list(case.aggregate) == case_feature_names(settings)
    payload = case.to_dict()
    assert payload["lesions"][2]["features"]["original_firstorder_Mean"] is None


def _lesion(label: int, voxels: int, volume_ml: float, mean_hu: float) -> LesionFeatures:
    return LesionFeatures(label, voxels, volume_ml, {"f": mean_hu}, [], "", None, 0.0)


def test_aggregate_largest_and_volume_weighted_mean():
    lesions = [_lesion(1, 10, 1.0, 60.0), _lesion(2, 30, 3.0, 100.0), _lesion(3, 5, 0.5, math.nan)]
    aggregate = aggregate_lesions(lesions, ["f"])
    assert aggregate["largest_f"] == 100.0
    # NaN lesions are left out of the weighted mean: (1 * 60 + 3 * 100) / 4 = 90.
    assert aggregate["wmean_f"] == pytest.approx(90.0)
    assert aggregate["total_volume_ml"] == pytest.approx(4.5)


def test_case_without_lesions_has_nan_features():
    aggregate = aggregate_lesions([], ["f"])
    assert aggregate["n_lesions"] == 0.0
    assert math.isnan(aggregate["largest_f"])
    assert math.isnan(aggregate["wmean_f"])


def test_settings_hash_changes_with_optional_filters(settings):
    with_log = load_settings(enable_optional=("LoG",))
    assert with_log.sha256 != settings.sha256
    assert load_settings().sha256 == settings.sha256
    assert with_log.provenance()["optional_image_types"] == ["LoG"]
    assert "LoG" in with_log.extractor_params()["imageType"]
    assert "LoG" not in settings.extractor_params()["imageType"]


def test_pyradiomics_logger_is_quiet():
    assert logging.getLogger("radiomics").level == logging.WARNING


def test_bounding_box_equals_whole_with_log(anisotropic_case):
    volume, labels = anisotropic_case
    with_log = load_settings(enable_optional=("LoG",))
    cropped = extract_lesion_features(volume, labels, 1, with_log, crop=True)
    whole = extract_lesion_features(volume, labels, 1, with_log, crop=False)
    assert any(name.startswith("log-sigma-2-0-mm-3D_glcm_") for name in whole.features)
    _assert_features_equal(cropped, whole)
