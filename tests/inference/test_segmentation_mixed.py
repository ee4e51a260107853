"""Splitting a hyperdensity of two densities (staining against blood) into two lesions."""

from __future__ import annotations

import numpy as np
import pytest

from inference.segmentation.evaluation import dice_coefficient
from inference.segmentation.mixed import dense_part, fit_two_modes, split_mixed_lesions

# 0.9 x 0.9 x 5 mm voxels, as in the synthetic 256 x 256 studies.
VOXEL_ML = 0.9 * 0.9 * 5.0 / 1000.0
BRAIN_HU = 35.0
NOISE_SD_HU = 4.0


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.full((9, 40, 48), BRAIN_HU, dtype=np.float32) + rng.normal(
        0.0, NOISE_SD_HU, (9, 40, 48)
    ).astype(np.float32)


def _paint(image: np.ndarray, block: tuple[slice, slice, slice], level_hu: float) -> None:
    """Fill ``block`` with ``level_hu`` plus the noise already there.

    Its first and last slices are 60% filled, as where a lesion ends inside a 5 mm slice.
    """
    z = block[0]
    image[block] += np.float32(level_hu - BRAIN_HU)
    for end in (z.start, z.stop - 1):
        image[end, block[1], block[2]] -= np.float32(0.4 * (level_hu - BRAIN_HU))


def _mixed_lesion(blood_hu: float, stain_hu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return an image, the whole lesion and its stained part: stain against blood in x."""
    image = _image(0)
    blood = (slice(2, 7), slice(10, 30), slice(6, 24))
    stain = (slice(2, 7), slice(10, 30), slice(24, 36))
    _paint(image, blood, blood_hu)
    _paint(image, stain, stain_hu)
    lesion = np.zeros(image.shape, dtype=bool)
    lesion[2:7, 10:30, 6:36] = True
    stained = np.zeros(image.shape, dtype=bool)
    stained[stain] = True
    return image, lesion, stained


def test_two_modes_recovered():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(60.0, 4.0, 600), rng.normal(110.0, 4.0, 300)])
    modes = fit_two_modes(values)
    assert modes is not None
    assert modes.low_mean == pytest.approx(60.0, abs=1.0)
    assert modes.high_mean == pytest.approx(110.0, abs=1.0)
    assert modes.high_weight == pytest.approx(1.0 / 3.0, abs=0.03)
    assert modes.threshold_hu == pytest.approx(85.0, abs=1.0)
    assert modes.separated()


def test_one_gaussian_is_not_separated():
    rng = np.random.default_rng(2)
    modes = fit_two_modes(rng.normal(70.0, 8.0, 1000))
    assert modes is None or not modes.separated()
    assert fit_two_modes(np.full(50, 70.0)) is None


@pytest.mark.parametrize(("blood_hu", "stain_hu"), [(65.0, 110.0), (55.0, 90.0), (75.0, 170.0)])
def test_stain_against_blood_is_split(blood_hu, stain_hu):
    """The slices that both parts fill are split at half contrast.

    Both parts end in the same slices here, and there the stain's partial volume goes to
    the blood (see the NOTE in ``dense_part``), so only the full slices are checked.
    """
    image, lesion, stained = _mixed_lesion(blood_hu, stain_hu)
    dense = dense_part(image, lesion, VOXEL_ML)
    assert dense is not None
    full = slice(3, 6)
    assert dice_coefficient(dense[full], stained[full]) >= 0.97
    assert dice_coefficient((lesion & ~dense)[full], (lesion & ~stained)[full]) >= 0.97
    assert not np.any(dense[2:7, :, 6:22])


def test_stain_below_blood_keeps_its_end_slices():
    """A cap on top of the blood: the cap's last slice reads lower but stays with the cap."""
    image = _image(6)
    _paint(image, (slice(2, 6), slice(10, 30), slice(6, 36)), 62.0)
    cap = (slice(5, 8), slice(14, 26), slice(16, 30))
    image[5, 14:26, 16:30] = np.float32(112.0)  # the cap over the blood's end slice
    image[6, 14:26, 16:30] += np.float32(112.0 - BRAIN_HU)
    image[7, 14:26, 16:30] += np.float32(0.6 * (112.0 - BRAIN_HU))
    lesion = np.zeros(image.shape, dtype=bool)
    lesion[2:6, 10:30, 6:36] = True
    lesion[cap] = True
    stained = np.zeros(image.shape, dtype=bool)
    stained[cap] = True
    dense = dense_part(image, lesion, VOXEL_ML)
    assert dense is not None
    assert dice_coefficient(dense, stained) >= 0.95
    assert dice_coefficient(dense[7], stained[7]) >= 0.95


def test_one_density_is_not_split():
    """End slices and the border ring of a lesion of one density read lower than its core."""
    image = _image(3)
    block = (slice(2, 7), slice(10, 30), slice(10, 34))
    _paint(image, block, 110.0)
    lesion = np.zeros(image.shape, dtype=bool)
    lesion[block] = True
    # The ring one pixel in from the border is partial volume too.
    image[2:7, 10, 10:34] -= np.float32(30.0)
    image[2:7, 29, 10:34] -= np.float32(30.0)
    assert dense_part(image, lesion, VOXEL_ML) is None


def test_textured_clot_is_not_split():
    """A clot of one density with texture of 8 HU SD, as the generator draws hematomas."""
    image = _image(4)
    block = (slice(2, 7), slice(8, 32), slice(8, 40))
    _paint(image, block, 68.0)
    z, y, x = np.meshgrid(
        np.arange(9) * 5.0, np.arange(40) * 0.9, np.arange(48) * 0.9, indexing="ij"
    )
    texture = np.sin(0.55 * x + 0.3 * z) + np.sin(0.7 * y - 0.2 * x) + np.sin(0.5 * z + 0.25 * y)
    image[block] += (8.0 / np.sqrt(1.5) * texture[block]).astype(np.float32)
    lesion = np.zeros(image.shape, dtype=bool)
    lesion[block] = True
    assert dense_part(image, lesion, VOXEL_ML) is None


@pytest.mark.parametrize(("blood_hu", "stain_hu"), [(72.0, 86.0), (80.0, 80.0)])
def test_close_densities_are_not_split(blood_hu, stain_hu):
    image, lesion, _ = _mixed_lesion(blood_hu, stain_hu)
    assert dense_part(image, lesion, VOXEL_ML) is None


def test_small_dense_part_is_not_split():
    """A dense part under 0.1 mL (here 3 x 3 pixels on three slices, 0.1 mL is 25 voxels)."""
    image = _image(5)
    _paint(image, (slice(2, 7), slice(10, 30), slice(6, 36)), 65.0)
    image[3:6, 18:21, 33:36] += np.float32(50.0)
    lesion = np.zeros(image.shape, dtype=bool)
    lesion[2:7, 10:30, 6:36] = True
    assert dense_part(image, lesion, VOXEL_ML) is None


def test_split_gives_a_new_label_and_keeps_calcifications():
    image, lesion, stained = _mixed_lesion(65.0, 110.0)
    labels = np.zeros(image.shape, dtype=np.int32)
    labels[lesion] = 2
    labels[0, 0:3, 0:3] = -1  # a calcification marked by the segmenter
    labels[0, 35:38, 40:44] = 1  # a small lesion of one density
    assert split_mixed_lesions(labels, image, VOXEL_ML) == [(2, 3)]
    assert np.all(labels[0, 0:3, 0:3] == -1)
    assert np.all(labels[0, 35:38, 40:44] == 1)
    assert set(np.unique(labels[lesion]).tolist()) == {2, 3}
    assert dice_coefficient(labels[3:6] == 3, stained[3:6]) >= 0.97
