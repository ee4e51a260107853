"""Automatic segmentation of hyperdensities on a non-contrast head CT.

Steps:
1. Brain mask.
2. Candidates in a hyperdense HU window inside the brain and away from the inner table, on a
   lightly smoothed image, plus single very dense voxels.
3. Connected components, without physiological calcifications.
4. Each border redrawn at half the lesion's contrast.
5. Components below the minimum volume dropped, and measures per lesion.

Thin components (a gyral ribbon of staining about three pixels wide, small dots) take their
border from their peak rather than their mean: see ``_thin_levels``.

NOTE: on the synthetic cohort, lesions that touch no other true lesion reach a median Dice of
about 0.94 (compact) and 0.92 (thin cortical or sulcal staining) against the true masks, and
about a quarter of them stay below 0.9 (docs/benchmarks.md). One pixel of border error is a
third of a ribbon's width. The end slices of a faint hemorrhage (50-70 HU) next to edema read
as gray matter after partial volume over 5 mm, and are partly missed.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from scipy import ndimage

from inference.segmentation.brain import BrainMask, compute_brain_mask
from inference.segmentation.measures import (
    CONNECTIVITY,
    depth_mm_at,
    measure_lesions,
    midline_distance_mm,
    surrounding_csf_fraction,
)
from inference.segmentation.result import SegmentationConfig, SegmentationResult
from inference.volume import Note, Volume

logger = logging.getLogger(__name__)

# Components smaller than this keep their raw extent: a half-contrast border needs a core.
_MIN_VOXELS_TO_REFINE = 8
# Fraction of the contrast between background and lesion core where the border is drawn: a
# voxel at least half filled by lesion belongs to it, as in the synthetic true masks.
_BORDER_FRACTION = 0.5
# Refined borders never go below this many HU under the window, so a faint lesion cannot
# spread into normal gray matter (35-45 HU).
_REFINE_FLOOR_BELOW_LOW_HU = 12.0
# A component is thin when two in-plane erosions by one pixel keep less than this fraction of
# its dense part: a gyral ribbon or a dot up to about four pixels across keeps nothing.
_THIN_KEPT_FRACTION = 0.05
# The thin path needs this much contrast (HU) between core and surroundings. Below it, the
# noise (4-6 HU) raises a percentile of a few voxels more than partial volume lowers it.
_THIN_MIN_CONTRAST_HU = 30.0
_THIN_PEAK_PERCENTILE = 90.0
_THIN_BACKGROUND_PERCENTILE = 75.0


def segment_hyperdensities(
    volume: Volume, config: SegmentationConfig | None = None
) -> SegmentationResult:
    """Segment the hyperdense lesions of ``volume``.

    Returns an empty result (no lesions, with a ``no_hyperdensity`` note) when nothing
    qualifies; raises ``ValueError`` when the volume is not 3D.
    """
    config = config or SegmentationConfig()
    if volume.hu.ndim != 3:
        raise ValueError(f"volume.hu must be 3D (z, y, x), got shape {volume.hu.shape}")
    started = time.perf_counter()
    hu = volume.hu if volume.hu.dtype == np.float32 else volume.hu.astype(np.float32)
    notes: list[Note] = []

    brain = compute_brain_mask(hu, volume.spacing_zyx_mm, config, volume.padding_mask)
    labels = np.zeros(hu.shape, dtype=np.int32)
    pixel_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2])
    # The crop reaches past the brain so the skull next to it is seen by the bone margin.
    box = brain.bounding_box(int(math.ceil(config.bone_margin_mm / pixel_mm)) + 2)
    if box is None:
        notes.append(
            Note(
                "warning",
                "no_brain_found",
                "No intracranial soft tissue was found, so no lesion was searched for. Check "
                "that the series is a head CT in HU.",
            )
        )
        return SegmentationResult(labels, brain.mask, [], notes, config=config)

    crop_hu = hu[box]
    crop_brain = brain.mask[box]
    crop_padding = None if volume.padding_mask is None else volume.padding_mask[box]
    candidates = _candidates(crop_hu, crop_brain, crop_padding, volume, config)

    component_labels, count = ndimage.label(candidates, structure=CONNECTIVITY)
    objects = ndimage.find_objects(component_labels)
    kept, excluded_calcifications = _drop_calcifications(
        crop_hu, crop_brain, component_labels, count, objects, volume, config, brain, box
    )
    if excluded_calcifications:
        notes.append(
            Note(
                "info",
                "calcification_excluded",
                f"{excluded_calcifications} small dense focus(es) in CSF or on the midline were "
                "taken for physiological calcification (pineal gland, choroid plexus) and "
                "left out.",
            )
        )

    crop_labels = np.zeros(crop_hu.shape, dtype=np.int32)
    refined_count = 0
    for value in kept:
        region = objects[value - 1]
        if region is None:
            continue
        component = component_labels[region] == value
        if config.refine_borders and np.count_nonzero(component) >= _MIN_VOXELS_TO_REFINE:
            refined_count += _write_refined(
                crop_labels,
                crop_hu,
                candidates,
                crop_brain,
                region,
                component,
                value,
                volume,
                config,
            )
        else:
            target = crop_labels[region]
            target[component & (target == 0)] = value

    final = labels[box]
    small_count = _relabel_by_volume(crop_labels, final, volume.voxel_volume_ml, config)
    del crop_labels
    if small_count:
        notes.append(
            Note(
                "info",
                "below_min_volume",
                f"{small_count} hyperdense component(s) smaller than {config.min_volume_ml} mL "
                "were left out.",
            )
        )

    offset = (box[0].start, box[1].start, box[2].start)
    lesions = measure_lesions(crop_hu, final, volume, brain, config, offset_zyx=offset)
    if not lesions:
        notes.append(Note("info", "no_hyperdensity", "No hyperdensity was found in the brain."))
    elapsed_s = time.perf_counter() - started
    logger.info(
        "Segmented %d lesion(s) in %s voxels in %.2f s (%d borders refined)",
        len(lesions),
        "x".join(str(n) for n in hu.shape),
        elapsed_s,
        refined_count,
    )
    return SegmentationResult(labels, brain.mask, lesions, notes, config=config)


def smoothing_width(pixel_mm: float, config: SegmentationConfig) -> int:
    """Return the odd box width in pixels that spans about ``config.smoothing_mm``."""
    width = int(round(config.smoothing_mm / pixel_mm))
    return max(1, width | 1)


def _candidates(
    hu: np.ndarray,
    brain: np.ndarray,
    padding: np.ndarray | None,
    volume: Volume,
    config: SegmentationConfig,
) -> np.ndarray:
    """Find hyperdense voxels in the brain, away from bone."""
    pixel_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2])
    width = smoothing_width(pixel_mm, config)
    if width > 1:
        smoothed = ndimage.uniform_filter(hu, size=(1, width, width), mode="nearest")
    else:
        smoothed = hu.copy()

    candidates = smoothed >= np.float32(config.low_hu)
    del smoothed
    candidates |= hu >= np.float32(config.focus_min_hu)
    candidates &= hu <= np.float32(config.high_hu)
    candidates &= brain
    if padding is not None:
        candidates &= ~padding
    if not candidates.any():
        return candidates

    # Skull is bone outside the brain mask, so dense calcifications inside it do not count.
    skull = (hu >= np.float32(config.bone_hu)) & ~brain
    radius_px = int(math.ceil(config.bone_margin_mm / pixel_mm))
    if radius_px > 0 and skull.any():
        near = ndimage.maximum_filter1d(skull.view(np.uint8), 2 * radius_px + 1, axis=1)
        near = ndimage.maximum_filter1d(near, 2 * radius_px + 1, axis=2)
        # Through-plane partial volume: where the skull base or vertex runs obliquely through
        # a slice, a voxel whose neighbouring slice has bone at the same in-plane position may
        # hold bone in its own thickness. Only those positions are left out. Widening them
        # in-plane too cut away the cortex under the convexity, where the inner table moves
        # inwards by several millimetres from one 5 mm slice to the next.
        radius_slices = max(1, int(math.ceil(config.bone_margin_mm / volume.spacing_zyx_mm[0])))
        near |= ndimage.maximum_filter1d(skull.view(np.uint8), 2 * radius_slices + 1, axis=0)
        candidates &= near == 0
    return candidates


def _drop_calcifications(
    hu: np.ndarray,
    brain: np.ndarray,
    component_labels: np.ndarray,
    count: int,
    objects: list[tuple[slice, ...] | None],
    volume: Volume,
    config: SegmentationConfig,
    brain_mask: BrainMask,
    box: tuple[slice, slice, slice],
) -> tuple[list[int], int]:
    """Split components into lesions and physiological calcifications.

    A calcification is small, very dense and lies either deep in CSF (choroid plexus in the
    atria, pineal gland in its cistern) or on the midline.

    NOTE: a small dense focus of blood or contrast inside a ventricle or on the midline meets
    the same rule and is left out with the calcifications.
    """
    if count == 0:
        return [], 0
    # Only components with a voxel above the calcification threshold can be calcifications;
    # finding them from those voxels avoids a per-label maximum over the whole image.
    dense_values = np.unique(component_labels[hu >= np.float32(config.calcification_min_hu)])
    dense_set = {int(value) for value in dense_values if value > 0}
    max_voxels = config.calcification_max_ml / volume.voxel_volume_ml
    kept: list[int] = []
    excluded = 0
    for value in range(1, count + 1):
        if value not in dense_set:
            kept.append(value)
            continue
        region = _grow(objects[value - 1], hu.shape, 4)
        component = component_labels[region] == value
        if np.count_nonzero(component) > max_voxels:
            kept.append(value)
            continue
        csf_fraction = surrounding_csf_fraction(hu[region], component, brain[region], config)
        center = np.array(ndimage.center_of_mass(component)) + [s.start for s in region]
        center += [b.start for b in box]
        on_midline = midline_distance_mm(brain_mask, volume, center) <= config.midline_band_mm
        # Staining in a sulcus is also surrounded by CSF, but near the surface.
        in_deep_csf = (
            csf_fraction >= config.calcification_csf_fraction
            and depth_mm_at(brain_mask, volume, center) >= config.calcification_min_depth_mm
        )
        if in_deep_csf or on_midline:
            excluded += 1
        else:
            kept.append(value)
    return kept, excluded


def _write_refined(
    crop_labels: np.ndarray,
    hu: np.ndarray,
    candidates: np.ndarray,
    brain: np.ndarray,
    region: tuple[slice, ...],
    component: np.ndarray,
    value: int,
    volume: Volume,
    config: SegmentationConfig,
) -> int:
    """Redraw one component's border at half its contrast; returns 1 when it was redrawn."""
    pixel_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2])
    margin_px = max(2, int(math.ceil(4.0 / pixel_mm)))
    nz, ny, nx = hu.shape
    grown = (
        slice(max(0, region[0].start - 1), min(nz, region[0].stop + 1)),
        slice(max(0, region[1].start - margin_px), min(ny, region[1].stop + margin_px)),
        slice(max(0, region[2].start - margin_px), min(nx, region[2].stop + margin_px)),
    )
    offset = tuple(r.start - g.start for r, g in zip(region, grown, strict=True))
    inner = np.zeros(tuple(g.stop - g.start for g in grown), dtype=bool)
    inner[
        offset[0] : offset[0] + component.shape[0],
        offset[1] : offset[1] + component.shape[1],
        offset[2] : offset[2] + component.shape[2],
    ] = component

    local_brain = brain[grown]
    # Background is read in a ring 2-3 voxels out: the first ring is partial volume, and
    # further out the edema around a hematoma gives way to normal brain.
    near = ndimage.binary_dilation(inner, _in_plane_disk())
    shell = ndimage.binary_dilation(near, _in_plane_disk(), iterations=2) & ~near
    shell &= local_brain & ~candidates[grown]
    if np.count_nonzero(shell) < 4:
        target = crop_labels[region]
        target[component & (target == 0)] = value
        return 0

    raw = hu[grown]
    background_hu = float(np.median(raw[shell]))
    # Half contrast is taken against the mean of the lesion's core within about 3 mm and one
    # slice. A mixed lesion so keeps both its dense and its fainter part. A partial-volume
    # voxel counts when at least half of it is lesion, as in the true masks.
    core = ndimage.binary_erosion(inner, _in_plane_disk())
    if not core.any():
        core = inner
    reach_px = max(1, int(round(3.0 / pixel_mm)))
    window = (3, 2 * reach_px + 1, 2 * reach_px + 1)
    core_weight = ndimage.uniform_filter(core.astype(np.float32), window, mode="constant")
    # Levels are read on the unsmoothed image: smoothing lowers the peak of a structure only
    # a few pixels wide, and the mean over the window averages the noise out anyway.
    core_sum = ndimage.uniform_filter(np.where(core, raw, np.float32(0.0)), window, mode="constant")
    reached = core_weight > 1e-6
    level = np.where(reached, core_sum / np.maximum(core_weight, np.float32(1e-6)), np.float32(0.0))
    thin = _thin_levels(raw, inner, core, shell, background_hu)
    if thin is not None:
        background_hu, peak = thin
        # A ribbon's core (what survives one in-plane erosion) is a few scattered voxels
        # where the ribbon is widest. Reaching out only from them left the narrow stretches
        # in between out, up to half of a dense ribbon. One level (the peak) applies to the
        # whole thin component, so it reaches out from all of it.
        whole = ndimage.uniform_filter(inner.astype(np.float32), window, mode="constant")
        reached |= whole > 1e-6
        level = np.where(reached, np.maximum(level, np.float32(peak)), level)
    threshold = np.maximum(
        np.float32(background_hu)
        + np.float32(_BORDER_FRACTION) * (level - np.float32(background_hu)),
        np.float32(config.low_hu - _REFINE_FLOOR_BELOW_LOW_HU),
    )
    # The border is drawn on the unsmoothed image: smoothing pulls the iso-contour of a
    # convex lesion inwards. Noise then only flips voxels close to the threshold.
    allowed = (hu[grown] >= threshold) & reached & local_brain
    allowed &= candidates[grown] | ~inner
    allowed &= crop_labels[grown] == 0
    # Keep the parts of the redrawn region that touch the original component.
    pieces, n_pieces = ndimage.label(allowed, structure=CONNECTIVITY)
    touching = np.unique(pieces[inner & allowed])
    touching = touching[touching > 0]
    if n_pieces == 0 or touching.size == 0:
        target = crop_labels[region]
        target[component & (target == 0)] = value
        return 0
    redrawn = ndimage.binary_fill_holes(np.isin(pieces, touching)) & (crop_labels[grown] == 0)
    target = crop_labels[grown]
    target[redrawn] = value
    return 1


def _thin_levels(
    raw: np.ndarray,
    inner: np.ndarray,
    core: np.ndarray,
    shell: np.ndarray,
    background_hu: float,
) -> tuple[float, float] | None:
    """Return the background and lesion levels of a thin, clearly dense component, else None.

    A gyral ribbon of staining or a small dot has few voxels that are wholly lesion. The mean
    of its core is then itself a partial-volume value, and half of it falls on voxels that
    are only about a third lesion. Its peak (90th percentile) is used as the lesion's
    density instead. Its ring of surroundings mixes CSF, white and gray matter, whereas most
    voxels next to a ribbon are gray matter, so the background is read higher in that ring
    (75th percentile). The component is thin when what lies above half of that contrast
    does not survive two in-plane erosions.
    """
    if float(np.mean(raw[core])) - background_hu < _THIN_MIN_CONTRAST_HU:
        return None
    peak = float(np.percentile(raw[inner], _THIN_PEAK_PERCENTILE))
    background = max(background_hu, float(np.percentile(raw[shell], _THIN_BACKGROUND_PERCENTILE)))
    strong = inner & (raw >= np.float32(background + _BORDER_FRACTION * (peak - background)))
    kept = ndimage.binary_erosion(strong, _in_plane_disk(), iterations=2)
    if np.count_nonzero(kept) >= _THIN_KEPT_FRACTION * np.count_nonzero(strong):
        return None
    return background, peak


def _in_plane_disk() -> np.ndarray:
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    return structure


def _grow(
    region: tuple[slice, ...] | None, shape: tuple[int, ...], margin: int
) -> tuple[slice, ...]:
    assert region is not None
    return tuple(
        slice(max(0, r.start - margin), min(n, r.stop + margin))
        for r, n in zip(region, shape, strict=True)
    )


def _relabel_by_volume(
    labels: np.ndarray, output: np.ndarray, voxel_volume_ml: float, config: SegmentationConfig
) -> int:
    """Write the lesions of at least the minimum volume into ``output`` as 1..n, largest first.

    Returns how many lesions were too small. Work is done per lesion's bounding box, so the
    cost follows the lesions, not the image.
    """
    objects = ndimage.find_objects(labels)
    sizes: dict[int, int] = {}
    for value, region in enumerate(objects, start=1):
        if region is not None:
            sizes[value] = int(np.count_nonzero(labels[region] == value))
    min_voxels = config.min_volume_ml / voxel_volume_ml
    keep = [value for value, size in sizes.items() if size >= min_voxels - 1e-9]
    # Largest first; ties keep label order, so the result does not depend on the sort.
    keep.sort(key=lambda value: (-sizes[value], value))
    for new_value, value in enumerate(keep, start=1):
        region = objects[value - 1]
        assert region is not None
        output[region][labels[region] == value] = new_value
    return len(sizes) - len(keep)
