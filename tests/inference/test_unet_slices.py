"""Preprocessing, augmentation, aggregation and seeding of the slice U-Net (no training)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from inference.errors import MaskError
from inference.models.determinism import seed_everything
from inference.models.unet import (
    UNetConfig,
    aggregate_slices,
    prepare_slices,
    restore_mask,
)
from inference.models.unet.slices import head_crop_grid, window_channels
from inference.models.unet.training import augment_batch, split_validation
from inference.volume import Volume

ROWS = 100
COLUMNS = 120


def make_volume(hu: np.ndarray, padding_mask: np.ndarray | None = None) -> Volume:
    return Volume(
        hu=hu.astype(np.float32),
        spacing_zyx_mm=(5.0, 1.0, 1.0),
        origin_xyz_mm=(0.0, 0.0, 0.0),
        direction=np.eye(3),
        sop_instance_uids=[f"1.2.3.{index}" for index in range(hu.shape[0])],
        padding_mask=padding_mask,
    )


def square_head_volume(z_count: int = 4) -> np.ndarray:
    """Air everywhere except brain (30 HU) in rows 20..59 and columns 30..89."""
    hu = np.full((z_count, ROWS, COLUMNS), -1000.0, dtype=np.float32)
    hu[:, 20:60, 30:90] = 30.0
    return hu


def test_config_rejects_size_not_multiple_of_16() -> None:
    with pytest.raises(ValueError, match="image_size=100"):
        UNetConfig(image_size=100)


def test_config_rejects_wrong_feature_count() -> None:
    with pytest.raises(ValueError, match="six positive widths"):
        UNetConfig(features=(8, 16, 32))


def test_config_round_trips_through_dict() -> None:
    config = UNetConfig(image_size=64, windows_hu=((40.0, 80.0), (75.0, 215.0)), max_epochs=3)

    restored = UNetConfig.from_dict(config.to_dict())

    assert restored == config
    assert restored.windows_hu == ((40.0, 80.0), (75.0, 215.0))
    assert restored.in_channels == 2


def test_config_from_dict_rejects_unknown_field() -> None:
    values = UNetConfig().to_dict()
    values["learning_rate_schedule"] = "cosine"

    with pytest.raises(ValueError, match="learning_rate_schedule"):
        UNetConfig.from_dict(values)


def test_windows_map_edges_to_unit_range() -> None:
    hu = torch.tensor([-100.0, -10.0, 0.0, 40.0, 60.0, 80.0, 200.0, 300.0]).view(1, 1, 1, 8)

    channels = window_channels(hu, UNetConfig())

    # Brain window L40/W80 spans 0..80 HU, the wide window L100/W400 spans -100..300 HU.
    brain = channels[0, 0, 0].tolist()
    wide = channels[0, 1, 0].tolist()
    assert brain == pytest.approx([0.0, 0.0, 0.0, 0.5, 0.75, 1.0, 1.0, 1.0], abs=1e-6)
    assert wide == pytest.approx([0.0, 0.225, 0.25, 0.35, 0.4, 0.45, 0.75, 1.0], abs=1e-6)


def test_head_crop_is_square_around_head_with_margin() -> None:
    grid = head_crop_grid(make_volume(square_head_volume()), UNetConfig(crop_margin_mm=5.0))

    # The head spans 60 columns, which sets the side, plus 5 voxels of margin on each side.
    assert grid.side_px == 70
    assert grid.x0 == 25
    assert grid.y0 == 5
    assert grid.volume_shape == (4, ROWS, COLUMNS)


def test_head_crop_ignores_small_detached_object() -> None:
    hu = square_head_volume()
    hu[:, 90:93, 0:10] = 200.0

    grid = head_crop_grid(make_volume(hu), UNetConfig(crop_margin_mm=0.0))

    assert grid.side_px == 60
    assert grid.y0 == 10
    assert grid.x0 == 30


def test_prepare_slices_output_shapes_and_counts() -> None:
    hu = square_head_volume(z_count=5)
    labels = np.zeros(hu.shape, dtype=np.uint16)
    labels[2, 30:40, 50:60] = 1
    labels[3, 30:34, 50:55] = 2
    config = UNetConfig(image_size=32)

    prepared = prepare_slices(make_volume(hu), labels, config)

    assert tuple(prepared.images.shape) == (5, 2, 32, 32)
    assert prepared.masks is not None
    assert tuple(prepared.masks.shape) == (5, 1, 32, 32)
    assert prepared.lesion_area_px is not None
    assert prepared.lesion_area_px.tolist() == [0, 0, 100, 20, 0]
    assert float(prepared.images.min()) >= 0.0
    assert float(prepared.images.max()) <= 1.0


def test_prepare_slices_keeps_lesion_area_after_downsampling() -> None:
    hu = square_head_volume(z_count=1)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[0, 30:40, 50:60] = 1
    config = UNetConfig(image_size=32, crop_margin_mm=0.0)

    prepared = prepare_slices(make_volume(hu), labels, config)

    # Area down-sampling keeps the covered fraction: 100 voxels of a 60 x 60 crop on a
    # 32 x 32 grid is 100 * (32 / 60) ** 2, about 28.4 model pixels.
    assert prepared.masks is not None
    assert float(prepared.masks.sum()) == pytest.approx(100 * (32 / 60) ** 2, rel=0.02)


def test_brain_channel_reads_brain_hu() -> None:
    config = UNetConfig(image_size=32, crop_margin_mm=0.0)

    prepared = prepare_slices(make_volume(square_head_volume(z_count=1)), None, config)

    centre = prepared.images[0, :, 16, 16]
    # 30 HU in the brain window L40/W80 and the wide window L100/W400.
    assert float(centre[0]) == pytest.approx((30 - 0) / 80)
    assert float(centre[1]) == pytest.approx((30 - (-100)) / 400)


def test_padding_voxels_read_as_air() -> None:
    hu = square_head_volume(z_count=1)
    padding_mask = np.zeros(hu.shape, dtype=bool)
    padding_mask[0, 35:45, 50:70] = True
    hu[padding_mask] = 500.0
    config = UNetConfig(image_size=64, crop_margin_mm=0.0)

    prepared = prepare_slices(make_volume(hu, padding_mask), None, config)

    # The crop is rows 10..69 and columns 30..89, so the padding covers model rows 26.7..37.3
    # and columns 21.3..42.7. Inside it, both channels must read air (0).
    assert prepared.grid.y0 == 10
    assert prepared.grid.x0 == 30
    assert float(prepared.images[0, :, 28:36, 23:41].max()) == 0.0
    assert float(prepared.images[0, 0, 45, 32]) == pytest.approx(30 / 80, abs=1e-6)


def test_labels_with_wrong_shape_raise_mask_error() -> None:
    hu = square_head_volume(z_count=3)
    labels = np.zeros((2, ROWS, COLUMNS), dtype=np.uint8)

    with pytest.raises(MaskError, match=r"shape \(2, 100, 120\)") as caught:
        prepare_slices(make_volume(hu), labels, UNetConfig(image_size=32))
    assert caught.value.code == "mask_shape_mismatch"


def test_restore_mask_returns_lesion_to_its_voxels() -> None:
    hu = square_head_volume(z_count=3)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[1, 30:46, 40:56] = 1
    config = UNetConfig(image_size=64)

    prepared = prepare_slices(make_volume(hu), labels, config)
    assert prepared.masks is not None
    restored = restore_mask(prepared.masks[:, 0], prepared.grid, threshold=0.5)

    truth = labels > 0
    overlap = (restored & truth).sum() / (restored | truth).sum()
    assert restored.shape == hu.shape
    assert overlap > 0.85
    assert not restored[0].any()
    assert not restored[2].any()
    rows, columns = np.nonzero(restored[1])
    assert abs(rows.mean() - 37.5) < 1.0
    assert abs(columns.mean() - 47.5) < 1.0


def test_restore_mask_rejects_wrong_shape() -> None:
    prepared = prepare_slices(make_volume(square_head_volume(2)), None, UNetConfig(image_size=32))

    with pytest.raises(ValueError, match="expected"):
        restore_mask(torch.zeros(3, 32, 32), prepared.grid, threshold=0.5)


def test_aggregate_weights_slices_by_lesion_area() -> None:
    slice_probabilities = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    lesion_area_px = np.array([30, 10, 0])

    case, weights = aggregate_slices(slice_probabilities, lesion_area_px, empty_slice_weight=0.0)

    assert case.tolist() == [0.75, 0.25, 0.0]
    assert weights.tolist() == [0.75, 0.25, 0.0]


def test_aggregate_without_lesion_is_plain_mean() -> None:
    slice_probabilities = np.array([[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])

    case, weights = aggregate_slices(slice_probabilities, np.array([0, 0]), 1e-3)

    assert case == pytest.approx([0.4, 0.2, 0.4])
    assert weights == pytest.approx([0.5, 0.5])


def test_flip_augmentation_mirrors_image_and_mask() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((2, 2, 16, 16), generator=generator)
    masks = (torch.rand((2, 1, 16, 16), generator=generator) > 0.5).float()
    config = UNetConfig(flip_probability=1.0, max_rotation_deg=0.0, intensity_jitter_hu=0.0)

    flipped_images, flipped_masks = augment_batch(images, masks, config, generator)

    assert torch.allclose(flipped_images, images.flip(-1), atol=1e-5)
    assert torch.allclose(flipped_masks, masks.flip(-1), atol=1e-5)


def test_intensity_jitter_shifts_window_but_not_air() -> None:
    images = torch.zeros((1, 2, 16, 16))
    images[:, :, 4:12, 4:12] = 0.5
    masks = torch.zeros((1, 1, 16, 16))
    config = UNetConfig(flip_probability=0.0, max_rotation_deg=0.0, intensity_jitter_hu=8.0)

    jittered, _ = augment_batch(images, masks, config, torch.Generator().manual_seed(3))

    brain_shift = float(jittered[0, 0, 8, 8]) - 0.5
    wide_shift = float(jittered[0, 1, 8, 8]) - 0.5
    assert float(jittered[0, :, 0, 0].abs().max()) == 0.0
    assert 0.0 < abs(brain_shift) <= 8.0 / 80.0
    # One HU shift moves each channel by the inverse of its window width.
    assert wide_shift == pytest.approx(brain_shift * 80.0 / 400.0, rel=1e-4)


def test_augmentation_repeats_with_same_generator_seed() -> None:
    images = torch.rand((4, 2, 32, 32), generator=torch.Generator().manual_seed(1))
    masks = torch.zeros((4, 1, 32, 32))
    config = UNetConfig()

    first, _ = augment_batch(images, masks, config, torch.Generator().manual_seed(9))
    second, _ = augment_batch(images, masks, config, torch.Generator().manual_seed(9))
    third, _ = augment_batch(images, masks, config, torch.Generator().manual_seed(10))

    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_validation_split_is_stratified() -> None:
    labels = ["HT"] * 10 + ["CE"] * 5 + ["HT+CE"] * 1

    is_validation = split_validation(labels, fraction=0.2, seed=4)

    chosen = [label for label, held in zip(labels, is_validation, strict=True) if held]
    assert chosen.count("HT") == 2
    assert chosen.count("CE") == 1
    # A class with a single case stays in training.
    assert chosen.count("HT+CE") == 0
    assert split_validation(labels, fraction=0.2, seed=4) == is_validation


def test_seed_everything_repeats_random_streams() -> None:
    seed_everything(123)
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(123)
    second = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    assert first == second
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_everything_rejects_out_of_range_seed(seed: int) -> None:
    with pytest.raises(ValueError, match=str(seed)):
        seed_everything(seed)


def test_seed_everything_rejects_non_integer_seed() -> None:
    with pytest.raises(TypeError, match="float"):
        seed_everything(1.5)  # type: ignore[arg-type]


def test_synthetic_case_lesion_survives_preparation() -> None:
    synthetic = pytest.importorskip("inference.synthetic.case")
    case = synthetic.generate_case_volume("HT+CE", seed=5, matrix=512)
    volume = case.baseline_volume()
    config = UNetConfig()

    prepared = prepare_slices(volume, case.true_labels, config)

    truth_area_px = (case.true_labels > 0).sum(axis=(1, 2))
    assert prepared.lesion_area_px is not None
    assert prepared.masks is not None
    assert prepared.lesion_area_px.tolist() == truth_area_px.tolist()
    # Area down-sampling keeps each slice's lesion area, scaled to the 128 x 128 grid, within a
    # few percent because adaptive pooling windows overlap when the factor is not an integer.
    scale = (config.image_size / prepared.grid.side_px) ** 2
    for z in np.flatnonzero(truth_area_px):
        assert float(prepared.masks[z].sum()) == pytest.approx(truth_area_px[z] * scale, rel=0.03)
    # The crop contains the whole head, so no skull voxel lies outside it.
    skull = volume.hu > 300
    outside = skull.copy()
    grid = prepared.grid
    outside[
        :, max(grid.y0, 0) : grid.y0 + grid.side_px, max(grid.x0, 0) : grid.x0 + grid.side_px
    ] = False
    assert not outside.any()


def test_aggregate_per_slice_empty_weights() -> None:
    slice_probabilities = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])

    case, weights = aggregate_slices(slice_probabilities, np.zeros(3), np.array([0.0, 1.0, 3.0]))

    assert case.tolist() == [0.0, 0.25, 0.75]
    assert weights.tolist() == [0.0, 0.25, 0.75]
