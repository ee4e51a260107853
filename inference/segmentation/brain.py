"""Brain mask (skull and scalp removed) of a head CT, built on a coarse grid for speed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.segmentation.result import SegmentationConfig

# Soft tissue lower bound: fat (about -100 HU) and air stay outside the brain.
_SOFT_TISSUE_MIN_HU = -30.0


@dataclass
class BrainMask:
    """The brain mask at full resolution, with the coarse mask and block size it came from."""

    mask: np.ndarray
    coarse: np.ndarray
    block: int

    def bounding_box(self, margin_px: int = 0) -> tuple[slice, slice, slice] | None:
        """Return the brain's (z, y, x) bounding box, grown in-plane by ``margin_px``."""
        found = ndimage.find_objects(self.coarse.astype(np.uint8))
        if not found or found[0] is None:
            return None
        z, y, x = found[0]
        b = self.block
        _, ny, nx = self.mask.shape
        return (
            z,
            slice(max(0, y.start * b - margin_px), min(ny, y.stop * b + margin_px)),
            slice(max(0, x.start * b - margin_px), min(nx, x.stop * b + margin_px)),
        )


def block_size(pixel_mm: float, grid_mm: float) -> int:
    """Pixels per side of one coarse block, so a block is about ``grid_mm`` wide."""
    return max(1, int(round(grid_mm / pixel_mm)))


def compute_brain_mask(
    hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    config: SegmentationConfig,
    padding_mask: np.ndarray | None = None,
) -> BrainMask:
    """Find the intracranial soft tissue.

    On a grid of about 2 mm blocks, soft tissue that is not bone and not next to bone is eroded
    in-plane by about 3 mm. That cuts the scalp off at every gap in the skull (foramina,
    orbits, the open skull base), and the largest 3D connected part is kept. Because the choice
    is 3D, slices through the skull base, where the bone ring is open, and tilted heads keep
    their brain. The part is dilated back to the bone and holes (calcifications, dense lesions)
    are filled slice by slice.
    """
    nz, ny, nx = hu.shape
    pixel_mm = min(spacing_zyx_mm[1], spacing_zyx_mm[2])
    block = block_size(pixel_mm, config.brain_mask_grid_mm)
    coarse_mean, coarse_bone = _coarsen(hu, block, config.bone_hu)

    soft = (coarse_mean > _SOFT_TISSUE_MIN_HU) & ~coarse_bone
    if padding_mask is not None and padding_mask.any():
        padded = _coarsen_any(padding_mask, block)
        soft &= ~padded

    coarse_mm = pixel_mm * block
    in_plane = np.zeros((1, 3, 3), dtype=bool)
    in_plane[0] = ndimage.generate_binary_structure(2, 1)
    away_from_bone = soft & ~ndimage.binary_dilation(coarse_bone, in_plane)
    erosion_steps = max(1, int(math.ceil(3.0 / coarse_mm)))
    core = ndimage.binary_erosion(away_from_bone, in_plane, iterations=erosion_steps)

    labels, count = ndimage.label(core)
    coarse = np.zeros_like(core)
    if count > 0:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        coarse = labels == int(np.argmax(sizes))
        coarse = ndimage.binary_dilation(coarse, in_plane, iterations=erosion_steps + 1, mask=soft)
        # Holes are filled slice by slice: the in-plane structure does not connect slices.
        coarse = ndimage.binary_fill_holes(coarse, structure=in_plane)

    full = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)[:, :ny, :nx]
    if full.shape != (nz, ny, nx):
        full = np.pad(full, ((0, 0), (0, ny - full.shape[1]), (0, nx - full.shape[2])))
    # Refine the blocky edge: air and fat inside edge blocks are not brain.
    full &= hu > _SOFT_TISSUE_MIN_HU
    return BrainMask(mask=full, coarse=coarse, block=block)


def _coarsen(hu: np.ndarray, block: int, bone_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Block means of HU and whether a block holds any bone voxel."""
    if block == 1:
        return hu, hu >= bone_hu
    padded = _pad_to_blocks(hu, block, fill=-1000.0)
    mean = _block_reduce(padded, block, np.add)
    mean *= np.float32(1.0 / (block * block))
    bone = _block_reduce(padded >= np.float32(bone_hu), block, np.logical_or)
    return mean, bone


def _coarsen_any(mask: np.ndarray, block: int) -> np.ndarray:
    if block == 1:
        return mask
    return _block_reduce(_pad_to_blocks(mask, block, fill=False), block, np.logical_or)


def _block_reduce(array: np.ndarray, block: int, operation: np.ufunc) -> np.ndarray:
    """Combine each block x block tile of every slice with ``operation`` (add or or).

    Combining the tile's columns, then its rows, as whole strided views takes one or two passes
    over the data, while numpy's reductions over short inner axes are several times slower.
    """
    nz, ny, nx = array.shape
    columns = array.reshape(nz, ny, nx // block, block)
    partial = operation(columns[..., 0], columns[..., 1])
    for offset in range(2, block):
        operation(partial, columns[..., offset], out=partial)
    rows = partial.reshape(nz, ny // block, block, nx // block)
    result = operation(rows[:, :, 0], rows[:, :, 1])
    for offset in range(2, block):
        operation(result, rows[:, :, offset], out=result)
    return np.asarray(result)


def _pad_to_blocks(array: np.ndarray, block: int, fill: float | bool) -> np.ndarray:
    _, ny, nx = array.shape
    pad_y = (-ny) % block
    pad_x = (-nx) % block
    if pad_y == 0 and pad_x == 0:
        return array
    return np.pad(array, ((0, 0), (0, pad_y), (0, pad_x)), constant_values=fill)
