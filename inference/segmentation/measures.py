"""Per-lesion measures: volume, HU statistics, extent, position and compartment."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from inference.segmentation.brain import BrainMask
from inference.segmentation.result import Compartment, Lesion, SegmentationConfig
from inference.volume import Volume

# 26-connectivity: voxels that share a face, an edge or a corner belong to one lesion.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True

# A lesion whose surroundings are mostly CSF and that lies this deep is taken to be in a
# ventricle. One this close to the brain surface is taken to be in a sulcus or cistern.
_VENTRICLE_MIN_DEPTH_MM = 15.0
_SULCUS_MAX_DEPTH_MM = 10.0


def measure_lesions(
    hu: np.ndarray,
    labels: np.ndarray,
    volume: Volume,
    brain: BrainMask,
    config: SegmentationConfig,
    source_values: dict[int, int] | None = None,
    offset_zyx: tuple[int, int, int] = (0, 0, 0),
) -> list[Lesion]:
    """Measure every label 1..n of ``labels``; padding voxels are left out of HU statistics.

    ``hu`` and ``labels`` may be a block of the volume that starts at voxel ``offset_zyx``;
    positions in the lesions are always in whole-volume indices.
    """
    objects = ndimage.find_objects(labels)
    block = tuple(
        slice(start, start + size) for start, size in zip(offset_zyx, labels.shape, strict=True)
    )
    brain_block = brain.mask[block]
    padding_block = None if volume.padding_mask is None else volume.padding_mask[block]
    lesions: list[Lesion] = []
    dz, dy, dx = volume.spacing_zyx_mm
    origin = np.asarray(volume.origin_xyz_mm, dtype=np.float64)
    direction = np.asarray(volume.direction, dtype=np.float64)
    for index, region in enumerate(objects, start=1):
        if region is None:
            continue
        inside = labels[region] == index
        n_voxels = int(np.count_nonzero(inside))
        values_mask = inside
        if padding_block is not None:
            values_mask = inside & ~padding_block[region]
        values = hu[region][values_mask]
        if values.size == 0:
            values = hu[region][inside]
        p10, p50, p90 = np.percentile(values, [10, 50, 90])

        z_idx, y_idx, x_idx = np.nonzero(inside)
        z0 = region[0].start + offset_zyx[0]
        y0 = region[1].start + offset_zyx[1]
        x0 = region[2].start + offset_zyx[2]
        z_idx = z_idx + z0
        y_idx = y_idx + y0
        x_idx = x_idx + x0
        center_index = np.array([z_idx.mean(), y_idx.mean(), x_idx.mean()])
        per_slice = np.bincount(z_idx - z0)
        largest = int(z0 + int(np.argmax(per_slice)))
        patient = origin + direction @ (center_index[::-1] * np.array([dx, dy, dz]))

        lesion = Lesion(
            label=index,
            n_voxels=n_voxels,
            volume_ml=round(n_voxels * volume.voxel_volume_ml, 6),
            mean_hu=round(float(values.mean()), 2),
            max_hu=round(float(values.max()), 2),
            p10_hu=round(float(p10), 2),
            p50_hu=round(float(p50), 2),
            p90_hu=round(float(p90), 2),
            bbox_zyx=(
                z0,
                y0,
                x0,
                region[0].stop + offset_zyx[0],
                region[1].stop + offset_zyx[1],
                region[2].stop + offset_zyx[2],
            ),
            centroid_zyx_mm=tuple(  # type: ignore[arg-type]
                round(float(v), 3) for v in center_index * np.array([dz, dy, dx])
            ),
            centroid_xyz_mm=tuple(round(float(v), 3) for v in patient),  # type: ignore[arg-type]
            slices=tuple(int(k) for k in np.unique(z_idx)),
            largest_slice=largest,
            compartment="parenchymal",
            source_value=None if source_values is None else source_values.get(index),
        )
        compartment = guess_compartment(
            lesion, hu, labels, brain, brain_block, volume, config, region
        )
        lesions.append(_replace_compartment(lesion, compartment))
    return lesions


def _replace_compartment(lesion: Lesion, compartment: Compartment) -> Lesion:
    from dataclasses import replace

    return replace(lesion, compartment=compartment)


def guess_compartment(
    lesion: Lesion,
    hu: np.ndarray,
    labels: np.ndarray,
    brain: BrainMask,
    brain_block: np.ndarray,
    volume: Volume,
    config: SegmentationConfig,
    region: tuple[slice, ...],
) -> Compartment:
    """Guess the compartment from the lesion's surroundings and its depth in the brain.

    Mostly CSF around and deep: intraventricular; partly CSF around and near the surface:
    subarachnoid; otherwise parenchymal. A guess for display, not a diagnosis.
    """
    grown = tuple(
        slice(max(0, r.start - margin), min(n, r.stop + margin))
        for r, n, margin in zip(region, hu.shape, (1, 4, 4), strict=True)
    )
    inside = labels[grown] == lesion.label
    others = (labels[grown] != 0) & ~inside
    csf_fraction = surrounding_csf_fraction(hu[grown], inside, brain_block[grown] & ~others, config)
    depth_mm = _depth_mm(brain, volume, lesion)
    if csf_fraction >= 0.5 and depth_mm >= _VENTRICLE_MIN_DEPTH_MM:
        return "intraventricular"
    if csf_fraction >= 0.35 and depth_mm <= _SULCUS_MAX_DEPTH_MM:
        return "subarachnoid"
    return "parenchymal"


def surrounding_csf_fraction(
    hu: np.ndarray, inside: np.ndarray, allowed: np.ndarray, config: SegmentationConfig
) -> float:
    """Fraction of the ring 2-3 voxels in-plane around a lesion that is CSF (raw HU).

    The first ring is skipped because partial volume with the lesion raises its HU.
    """
    near = ndimage.binary_dilation(inside, _IN_PLANE)
    ring = ndimage.binary_dilation(near, _IN_PLANE, iterations=2) & ~near & allowed
    if not ring.any():
        return 0.0
    return float(np.mean(hu[ring] <= config.csf_max_hu))


def _depth_mm(brain: BrainMask, volume: Volume, lesion: Lesion) -> float:
    """In-plane distance (mm) from the lesion centroid to the edge of the brain."""
    _, cy_mm, cx_mm = lesion.centroid_zyx_mm
    center = np.array(
        [lesion.largest_slice, cy_mm / volume.spacing_zyx_mm[1], cx_mm / volume.spacing_zyx_mm[2]]
    )
    return depth_mm_at(brain, volume, center)


def depth_mm_at(brain: BrainMask, volume: Volume, center_zyx: np.ndarray) -> float:
    """In-plane distance (mm) from a voxel position to the edge of the brain in its slice."""
    k = min(max(int(round(float(center_zyx[0]))), 0), brain.coarse.shape[0] - 1)
    coarse_slice = brain.coarse[k]
    if not coarse_slice.any():
        return 0.0
    coarse_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2]) * brain.block
    distance = ndimage.distance_transform_edt(coarse_slice, sampling=coarse_mm)
    row = min(int(center_zyx[1]) // brain.block, coarse_slice.shape[0] - 1)
    column = min(int(center_zyx[2]) // brain.block, coarse_slice.shape[1] - 1)
    return float(distance[row, column])


def midline_distance_mm(brain: BrainMask, volume: Volume, center_zyx: np.ndarray) -> float:
    """Distance (mm) from a voxel position to the midsagittal line of its slice.

    The midline is the long (anteroposterior) principal axis through the centroid of the
    slice's brain mask, so a head turned in-plane keeps its midline.
    """
    k = int(round(float(center_zyx[0])))
    k = min(max(k, 0), brain.coarse.shape[0] - 1)
    rows, columns = np.nonzero(brain.coarse[k])
    if rows.size < 10:
        return float("inf")
    pixel_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2]) * brain.block
    points = np.stack([rows, columns], axis=1).astype(np.float64) * pixel_mm
    centroid = points.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((points - centroid).T))
    axis = eigenvectors[:, int(np.argmax(eigenvalues))]
    # Position of the voxel in the same coarse millimetre frame (block centres).
    fine_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2])
    point = np.array([center_zyx[1], center_zyx[2]]) * fine_mm - (brain.block - 1) / 2 * fine_mm
    offset = point - centroid
    return float(abs(offset[0] * axis[1] - offset[1] * axis[0]))
