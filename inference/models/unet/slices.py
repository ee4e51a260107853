"""Configuration of the U-Net and conversion of CT volumes to windowed, cropped axial slices."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from inference.errors import MaskError
from inference.volume import Volume

logger = logging.getLogger(__name__)

# Case labels in the order of the classification head's outputs.
CLASSES: tuple[str, ...] = ("HT", "CE", "HT+CE")

AIR_HU = -1000.0
# The four max-pool stages of the U-Net halve the slice four times.
_SIZE_DIVISOR = 16
# Slices are converted in chunks, so a 512 x 512 series of a few hundred slices is never in
# memory as float32 at full resolution all at once.
_CHUNK_SLICES = 16


@dataclass(frozen=True)
class UNetConfig:
    """Preprocessing, architecture and training settings of the slice U-Net.

    ``windows_hu`` lists one (level, width) display window per input channel, in HU; each
    channel maps its window to 0..1. The defaults are the brain window (L40/W80), where blood
    and brain differ, and a wide window (L100/W400), which keeps contrast above 80 HU apart
    from blood instead of saturating it.
    """

    image_size: int = 128
    windows_hu: tuple[tuple[float, float], ...] = ((40.0, 80.0), (100.0, 400.0))
    head_threshold_hu: float = -300.0
    crop_margin_mm: float = 5.0
    min_head_fraction: float = 0.05
    # Five encoder widths and the width after the last up-sampling, as MONAI's BasicUNet takes.
    features: tuple[int, ...] = (8, 16, 32, 64, 128, 8)
    classifier_hidden: int = 32
    dropout: float = 0.1
    # Measured on 30 synthetic 256 x 256 training cases (benchmarks/bench_unet.py learning):
    # learning rate 1e-3 with batch 16 had barely moved the loss after 11 epochs. With 3e-3 and
    # batch 8 the lesion Dice reached about 0.9 by epoch 40, and the loss was still falling.
    batch_size: int = 8
    max_epochs: int = 40
    patience: int = 10
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.2
    negative_slices_per_positive: float = 0.5
    class_loss_weight: float = 1.0
    augment: bool = True
    flip_probability: float = 0.5
    max_rotation_deg: float = 10.0
    intensity_jitter_hu: float = 5.0
    mask_threshold: float = 0.5
    empty_slice_weight: float = 1e-3
    inference_batch_size: int = 32
    # Intra-op threads for training and prediction; 0 keeps PyTorch's count (by default the
    # number of physical cores). One thread is the default because a worker usually shares
    # its cores with the web server and other workers, and PyTorch's threads then wait on each
    # other: on a busy 2-core machine, 2 threads trained 3-10x slower than 1 (bench_unet.py).
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.image_size < _SIZE_DIVISOR or self.image_size % _SIZE_DIVISOR:
            raise ValueError(
                f"UNetConfig.image_size={self.image_size} is invalid: the U-Net halves the slice "
                f"four times, so use a multiple of {_SIZE_DIVISOR} such as 128 or 256"
            )
        if not self.windows_hu:
            raise ValueError("UNetConfig.windows_hu is empty; give at least one (level, width)")
        for level_hu, width_hu in self.windows_hu:
            if width_hu <= 0:
                raise ValueError(
                    f"UNetConfig.windows_hu has width {width_hu} HU at level {level_hu} HU; "
                    "window widths must be positive"
                )
        if len(self.features) != 6 or min(self.features) < 1:
            raise ValueError(
                f"UNetConfig.features={self.features} is invalid; give six positive widths "
                "(five encoder levels and the last decoder level), e.g. (8, 16, 32, 64, 128, 8)"
            )
        positive_ints: dict[str, int] = {
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "classifier_hidden": self.classifier_hidden,
            "inference_batch_size": self.inference_batch_size,
        }
        for name, value in positive_ints.items():
            if value < 1:
                raise ValueError(f"UNetConfig.{name}={value} is invalid; it must be at least 1")
        fractions: dict[str, tuple[float, float, float]] = {
            "validation_fraction": (self.validation_fraction, 0.0, 0.5),
            "dropout": (self.dropout, 0.0, 0.9),
            "flip_probability": (self.flip_probability, 0.0, 1.0),
            "mask_threshold": (self.mask_threshold, 0.0, 1.0),
            "min_head_fraction": (self.min_head_fraction, 0.0, 1.0),
        }
        for name, (fraction, low, high) in fractions.items():
            if not low <= fraction <= high:
                raise ValueError(f"UNetConfig.{name}={fraction} is outside {low}..{high}")
        non_negative: dict[str, float] = {
            "crop_margin_mm": self.crop_margin_mm,
            "negative_slices_per_positive": self.negative_slices_per_positive,
            "class_loss_weight": self.class_loss_weight,
            "max_rotation_deg": self.max_rotation_deg,
            "intensity_jitter_hu": self.intensity_jitter_hu,
            "empty_slice_weight": self.empty_slice_weight,
            "num_threads": self.num_threads,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
        }
        for name, amount in non_negative.items():
            if amount < 0:
                raise ValueError(f"UNetConfig.{name}={amount} is negative; use 0 or more")

    @property
    def in_channels(self) -> int:
        return len(self.windows_hu)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-compatible values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetConfig:
        """Build a config from ``to_dict`` output, rejecting unknown keys."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown UNetConfig fields {unknown}; the config was written by another "
                "version of this code, so retrain the model or use the matching version"
            )
        converted = dict(values)
        if "windows_hu" in converted:
            converted["windows_hu"] = tuple(
                (float(level), float(width)) for level, width in converted["windows_hu"]
            )
        if "features" in converted:
            converted["features"] = tuple(int(width) for width in converted["features"])
        return cls(**converted)


@dataclass(frozen=True)
class SliceGrid:
    """The square in-plane crop that maps volume voxels to the model's slice grid.

    The crop's top-left corner ``(y0, x0)`` and side are in voxels of the original slice and
    may reach outside it, where the crop is filled with air.
    """

    volume_shape: tuple[int, int, int]
    y0: int
    x0: int
    side_px: int
    image_size: int


@dataclass
class PreparedSlices:
    """Model inputs for every axial slice of one volume.

    ``images`` has shape (z, channels, size, size) with values 0..1. ``masks`` (when lesion
    labels were given) has shape (z, 1, size, size) and contains the fraction of each model pixel
    covered by lesion. ``lesion_area_px`` counts lesion voxels per slice at full resolution.
    ``head_fraction`` is the fraction of the crop covered by head tissue per slice.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    lesion_area_px: np.ndarray | None
    head_fraction: np.ndarray
    grid: SliceGrid = field(repr=False)


def window_channels(hu: torch.Tensor, config: UNetConfig) -> torch.Tensor:
    """Window a (slices, 1, rows, columns) HU batch into one channel per configured window.

    Each channel maps HU in [level - width/2, level + width/2] linearly to 0..1 and clips.
    """
    windows = torch.tensor(config.windows_hu, dtype=torch.float32)
    levels_hu, widths_hu = windows[:, 0], windows[:, 1]
    scale = (1.0 / widths_hu).view(1, -1, 1, 1)
    offset = (0.5 - levels_hu / widths_hu).view(1, -1, 1, 1)
    return torch.addcmul(offset, hu, scale).clamp_(0.0, 1.0)


def head_crop_grid(volume: Volume, config: UNetConfig) -> SliceGrid:
    """Find a square crop around the head, shared by all slices of the volume.

    The head is the largest connected region of the slice-wise projection of voxels above
    ``config.head_threshold_hu``, so small detached objects such as cables are left out.
    """
    z_count, rows, columns = volume.shape
    head = volume.hu > config.head_threshold_hu
    if volume.padding_mask is not None:
        head &= ~volume.padding_mask
    projection = head.any(axis=0)
    labels, region_count = ndimage.label(projection)
    if region_count == 0:
        logger.warning(
            "No voxel above %.0f HU in series %s; the U-Net uses the whole slice",
            config.head_threshold_hu,
            volume.series_instance_uid or "(no UID)",
        )
        y_min, y_max, x_min, x_max = 0, rows - 1, 0, columns - 1
    else:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        largest = labels == int(np.argmax(sizes))
        row_indices = np.flatnonzero(largest.any(axis=1))
        column_indices = np.flatnonzero(largest.any(axis=0))
        y_min, y_max = int(row_indices[0]), int(row_indices[-1])
        x_min, x_max = int(column_indices[0]), int(column_indices[-1])

    # NOTE: the crop is square in voxels. With unequal row and column spacing the head looks
    # stretched to the network, as it does in the original slice.
    pixel_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2])
    margin_px = math.ceil(config.crop_margin_mm / pixel_mm) if pixel_mm > 0 else 0
    side_px = max(y_max - y_min + 1, x_max - x_min + 1) + 2 * margin_px
    y0 = (y_min + y_max + 1) // 2 - side_px // 2
    x0 = (x_min + x_max + 1) // 2 - side_px // 2
    return SliceGrid((z_count, rows, columns), y0, x0, side_px, config.image_size)


def _overlap(grid: SliceGrid) -> tuple[slice, slice, slice, slice]:
    """Return the (volume rows, volume columns, crop rows, crop columns) that overlap."""
    _, rows, columns = grid.volume_shape
    y_start, y_stop = max(grid.y0, 0), min(grid.y0 + grid.side_px, rows)
    x_start, x_stop = max(grid.x0, 0), min(grid.x0 + grid.side_px, columns)
    return (
        slice(y_start, y_stop),
        slice(x_start, x_stop),
        slice(y_start - grid.y0, y_stop - grid.y0),
        slice(x_start - grid.x0, x_stop - grid.x0),
    )


def _crop(array: np.ndarray, grid: SliceGrid, fill: float) -> np.ndarray:
    volume_rows, volume_columns, crop_rows, crop_columns = _overlap(grid)
    cropped = np.full((array.shape[0], grid.side_px, grid.side_px), fill, dtype=np.float32)
    cropped[:, crop_rows, crop_columns] = array[:, volume_rows, volume_columns]
    return cropped


def _resize(batch: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if batch.shape[-1] == size:
        return batch
    if mode == "area":
        return F.interpolate(batch, size=(size, size), mode="area")
    # Antialiasing only acts when shrinking, where plain bilinear sampling would alias the
    # skull edge and thin cortical contrast.
    return F.interpolate(
        batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def prepare_slices(
    volume: Volume, lesion_labels: np.ndarray | None, config: UNetConfig
) -> PreparedSlices:
    """Window, crop and resize every axial slice of ``volume`` for the U-Net.

    ``lesion_labels`` is an optional array on the volume grid where any value above 0 marks a
    hyperdense lesion voxel (a binary mask or a labelled-component array both work).
    """
    if volume.hu.ndim != 3:
        raise ValueError(f"Volume.hu has shape {volume.hu.shape}; expected (z, y, x)")
    if lesion_labels is not None and lesion_labels.shape != volume.shape:
        raise MaskError(
            f"lesion labels have shape {lesion_labels.shape} but the volume has shape "
            f"{volume.shape}; pass labels on the same (z, y, x) grid as the volume",
            code="mask_shape_mismatch",
        )

    grid = head_crop_grid(volume, config)
    size = config.image_size
    z_count = volume.shape[0]
    images = torch.empty((z_count, config.in_channels, size, size), dtype=torch.float32)
    masks = None
    lesion_area_px = None
    if lesion_labels is not None:
        masks = torch.empty((z_count, 1, size, size), dtype=torch.float32)
        lesion_area_px = np.zeros(z_count, dtype=np.int64)
    head_fraction = np.zeros(z_count, dtype=np.float64)

    for start in range(0, z_count, _CHUNK_SLICES):
        stop = min(start + _CHUNK_SLICES, z_count)
        hu_chunk = volume.hu[start:stop]
        if volume.padding_mask is not None:
            hu_chunk = np.where(volume.padding_mask[start:stop], AIR_HU, hu_chunk)
        cropped_hu = _crop(np.asarray(hu_chunk, dtype=np.float32), grid, AIR_HU)
        head_fraction[start:stop] = (cropped_hu > config.head_threshold_hu).mean(axis=(1, 2))

        # Resampling HU before windowing keeps the mean attenuation of small lesions in the
        # wide window, and windowing the smaller grid is several times faster at 512 x 512.
        resized_hu = _resize(torch.from_numpy(cropped_hu).unsqueeze(1), size, "bilinear")
        images[start:stop] = window_channels(resized_hu, config)

        if lesion_labels is not None and masks is not None and lesion_area_px is not None:
            lesion_chunk = np.asarray(lesion_labels[start:stop]) > 0
            lesion_area_px[start:stop] = lesion_chunk.sum(axis=(1, 2))
            cropped_mask = torch.from_numpy(_crop(lesion_chunk, grid, 0.0)).unsqueeze(1)
            masks[start:stop] = _resize(cropped_mask, size, "area")

    return PreparedSlices(images, masks, lesion_area_px, head_fraction, grid)


def restore_mask(probabilities: torch.Tensor, grid: SliceGrid, threshold: float) -> np.ndarray:
    """Map per-slice lesion probabilities of shape (z, size, size) back to a volume mask.

    Returns a boolean array on the original (z, y, x) grid; the region outside the crop is
    False.
    """
    z_count = grid.volume_shape[0]
    if probabilities.shape != (z_count, grid.image_size, grid.image_size):
        raise ValueError(
            f"probabilities have shape {tuple(probabilities.shape)}; expected "
            f"{(z_count, grid.image_size, grid.image_size)} for this grid"
        )
    mask = np.zeros(grid.volume_shape, dtype=bool)
    volume_rows, volume_columns, crop_rows, crop_columns = _overlap(grid)
    for start in range(0, z_count, _CHUNK_SLICES):
        chunk = probabilities[start : start + _CHUNK_SLICES].unsqueeze(1)
        if grid.side_px != grid.image_size:
            chunk = F.interpolate(
                chunk, size=(grid.side_px, grid.side_px), mode="bilinear", align_corners=False
            )
        above = (chunk[:, 0] >= threshold).numpy()
        mask[start : start + chunk.shape[0], volume_rows, volume_columns] = above[
            :, crop_rows, crop_columns
        ]
    return mask
