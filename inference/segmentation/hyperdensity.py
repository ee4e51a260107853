"""Automatic segmentation of hyperdensities on a non-contrast head CT.

Steps:
1. Brain mask.
2. Candidates in a hyperdense HU window inside the brain and away from the inner table, on a
   lightly smoothed image, plus single very dense voxels.
3. Connected components, without physiological calcifications.
4. Each border redrawn at half the lesion's contrast, then grown in two more passes that
   read the lesion's level again from the region drawn so far (hysteresis).
5. A lesion of two clearly different densities (staining against blood) split into two
   lesions: see ``inference.segmentation.mixed``.
6. Components below the minimum volume dropped.
7. With ``SegmentationConfig.refine_with_model`` (off by default), each lesion's border
   redrawn by the learned refiner (``inference.segmentation.refine``) when its weights file
   is present, except split pairs and dense thin components. Then measures per lesion.
   ``SegmentationResult.threshold_labels`` keeps the borders of step 6 for the classifiers'
   features.

Dense thin components (a gyral ribbon of staining about three pixels wide, small dots) take
their border from their peak rather than their mean: see ``_thin_levels``. A lesion that
touches a calcification keeps the part of the component away from it.

NOTE: on the default synthetic cohort, 82% of the lesions that touch no other true lesion
reach a Dice of 0.9 against the true masks (median 0.94), and 73% on a cohort drawn with
another seed (docs/benchmarks.md). One pixel of border error is a third of a ribbon's width.
Faint petechiae (50-65 HU) in edema are still partly missed. Of the lesions that touch another
true lesion, 36% reach 0.9 (29% on the other cohort): parts of about the same density stay
one lesion.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

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
from inference.segmentation.mixed import in_plane_disk, split_mixed_lesions
from inference.segmentation.refine import Refiner, load_refiner, refine_labels
from inference.segmentation.result import Lesion, SegmentationConfig, SegmentationResult
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
_THIN_PEAK_PERCENTILE = 99.0
_THIN_BACKGROUND_PERCENTILE = 75.0
# A thin component takes its peak as its level only from this density up (dense staining).
_THIN_MIN_PEAK_HU = 80.0
# A fainter thin component is taken for staining along a sulcus when at least this fraction
# of its ring is CSF; its level is then this percentile of its voxels.
_THIN_FAINT_CSF_FRACTION = 0.2
_THIN_FAINT_PEAK_PERCENTILE = 90.0
# Border passes per component (see ``_write_refined``).
_PASSES = 3


def segment_hyperdensities(
    volume: Volume, config: SegmentationConfig | None = None, refiner: Refiner | None = None
) -> SegmentationResult:
    """Segment the hyperdense lesions of ``volume``.

    With ``config.refine_with_model`` (off by default), each lesion's border is then redrawn
    by ``refiner``, or by the shipped refiner when ``refiner`` is None; without a refiner file
    the threshold borders are kept. ``SegmentationResult.threshold_labels`` gives the borders
    before the refiner. Returns an empty result (no lesions, with a ``no_hyperdensity`` note)
    when nothing qualifies; raises ``ValueError`` when the volume is not 3D.
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
    candidates, near_bone = _candidates(crop_hu, crop_brain, crop_padding, volume, config)

    component_labels, count = ndimage.label(candidates, structure=CONNECTIVITY)
    objects = ndimage.find_objects(component_labels)
    kept, excluded_values = _drop_calcifications(
        crop_hu, crop_brain, component_labels, count, objects, volume, config, brain, box
    )
    excluded_calcifications = len(excluded_values)
    crop_labels = np.zeros(crop_hu.shape, dtype=np.int32)
    kept += _split_off_calcifications(
        crop_hu, component_labels, objects, excluded_values, crop_labels, config
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

    refined_count = 0
    # Dense thin components (ribbons, dots) take their border from their peak; the learned
    # refiner leaves them as drawn (see ``inference.segmentation.refine``).
    dense_thin: set[int] = set()
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
                near_bone,
                crop_brain,
                region,
                component,
                value,
                volume,
                config,
                dense_thin,
            )
        else:
            target = crop_labels[region]
            target[component & (target == 0)] = value

    pairs: list[tuple[int, int]] = []
    if config.split_two_densities:
        pairs = split_mixed_lesions(crop_labels, crop_hu, volume.voxel_volume_ml)
        if pairs:
            notes.append(
                Note(
                    "info",
                    "two_densities_split",
                    f"Split {len(pairs)} of the hyperdensities, each of two clearly "
                    "different densities, into a denser and a less dense lesion.",
                )
            )

    # Calcifications were marked -1 so that no lesion's border reached into them.
    calcified = crop_labels < 0
    crop_labels[calcified] = 0
    final = labels[box]
    small_count, new_values = _relabel_by_volume(crop_labels, final, volume.voxel_volume_ml, config)
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
    threshold_changes = None
    model = None
    if config.refine_with_model and new_values:
        model = refiner if refiner is not None else load_refiner()
    if model is not None:
        # Split pairs and dense thin components keep their threshold borders: refining them
        # lowered their Dice (docs/benchmarks.md, learned border refiner).
        kept_as_drawn = {new_values[value] for value in dense_thin if value in new_values}
        kept_as_drawn.update(_pair_partners(pairs, new_values))
        to_refine = [value for value in range(1, len(new_values) + 1) if value not in kept_as_drawn]
        blocked = calcified if near_bone is None else calcified | near_bone
        indices, previous = refine_labels(
            crop_hu, final, crop_brain, to_refine, volume.spacing_zyx_mm, model, blocked
        )
        # Flat indices into the crop, turned into flat indices into the whole label image.
        crop_index = np.unravel_index(indices, final.shape)
        threshold_changes = (
            np.ravel_multi_index(
                tuple(axis + start for axis, start in zip(crop_index, offset, strict=True)),
                labels.shape,
            ),
            previous,
        )
    lesions = measure_lesions(crop_hu, final, volume, brain, config, offset_zyx=offset)
    lesions = _mark_pairs(lesions, pairs, new_values)
    if not lesions:
        notes.append(Note("info", "no_hyperdensity", "No hyperdensity was found in the brain."))
    elapsed_s = time.perf_counter() - started
    logger.info(
        "Segmented %d lesion(s) in %s voxels in %.2f s (%d borders refined, refiner %s)",
        len(lesions),
        "x".join(str(n) for n in hu.shape),
        elapsed_s,
        refined_count,
        "on" if model is not None else "off",
    )
    return SegmentationResult(
        labels,
        brain.mask,
        lesions,
        notes,
        config=config,
        threshold_changes=threshold_changes,
        refined=model is not None,
    )


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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Find hyperdense voxels in the brain, away from bone; also return the bone margin."""
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
        return candidates, None

    near = _bone_margin(hu, brain, pixel_mm, volume.spacing_zyx_mm[0], config)
    if near is not None:
        candidates &= ~near
    return candidates, near


def _bone_margin(
    hu: np.ndarray, brain: np.ndarray, pixel_mm: float, slice_mm: float, config: SegmentationConfig
) -> np.ndarray | None:
    """Voxels within ``config.bone_margin_mm`` of the skull, or None when there is none."""
    # Skull is bone outside the brain mask, so dense calcifications inside it do not count.
    skull = (hu >= np.float32(config.bone_hu)) & ~brain
    radius_px = int(math.ceil(config.bone_margin_mm / pixel_mm))
    if radius_px <= 0 or not skull.any():
        return None
    near = ndimage.maximum_filter1d(skull.view(np.uint8), 2 * radius_px + 1, axis=1)
    near = ndimage.maximum_filter1d(near, 2 * radius_px + 1, axis=2)
    # Through-plane partial volume: where the skull base or vertex runs obliquely through
    # a slice, a voxel whose neighbouring slice has bone at the same in-plane position may
    # hold bone in its own thickness. Only those positions are left out. Widening them
    # in-plane too cut away the cortex under the convexity, where the inner table moves
    # inwards by several millimetres from one 5 mm slice to the next.
    radius_slices = max(1, int(math.ceil(config.bone_margin_mm / slice_mm)))
    near |= ndimage.maximum_filter1d(skull.view(np.uint8), 2 * radius_slices + 1, axis=0)
    result: np.ndarray = near.view(bool)
    return result


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
) -> tuple[list[int], list[int]]:
    """Split components into lesions and physiological calcifications.

    A calcification is small, very dense and lies either deep in CSF (choroid plexus in the
    atria, pineal gland in its cistern) or on the midline.

    NOTE: a small dense focus of blood or contrast inside a ventricle or on the midline meets
    the same rule and is left out with the calcifications.
    """
    if count == 0:
        return [], []
    # Only components with a voxel above the calcification threshold can be calcifications;
    # finding them from those voxels avoids a per-label maximum over the whole image.
    dense_values = np.unique(component_labels[hu >= np.float32(config.calcification_min_hu)])
    dense_set = {int(value) for value in dense_values if value > 0}
    max_voxels = config.calcification_max_ml / volume.voxel_volume_ml
    kept: list[int] = []
    excluded: list[int] = []
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
            excluded.append(value)
        else:
            kept.append(value)
    return kept, excluded


def _split_off_calcifications(
    hu: np.ndarray,
    component_labels: np.ndarray,
    objects: list[tuple[slice, ...] | None],
    excluded: list[int],
    crop_labels: np.ndarray,
    config: SegmentationConfig,
) -> list[int]:
    """Mark calcifications as -1 in ``crop_labels``; return label values of lesions beside them.

    A lesion can touch a calcification (petechiae next to a calcified choroid plexus), and
    the two then form one component that is left out whole. The calcification is its voxels
    of at least ``calcification_min_hu`` and two pixels around them in-plane (one slice
    along z), which contains their partial volume. What is left of the component, in pieces of
    at least ``_MIN_VOXELS_TO_REFINE`` voxels, is kept as new components (appended to
    ``objects``). The -1 voxels keep every lesion's border out of the calcification.
    """
    new_values: list[int] = []
    next_value = len(objects) + 1
    for value in excluded:
        region = _grow(objects[value - 1], hu.shape, 3)
        component = component_labels[region] == value
        dense = component & (hu[region] >= np.float32(config.calcification_min_hu))
        halo = ndimage.binary_dilation(dense, in_plane_disk(), iterations=2)
        halo = ndimage.binary_dilation(halo, _through_plane_line())
        crop_labels[region][halo] = -1
        rest, n_rest = ndimage.label(component & ~halo, structure=CONNECTIVITY)
        if n_rest == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(rest), rest, index=np.arange(1, n_rest + 1))
        for piece, size in enumerate(sizes, start=1):
            if size < _MIN_VOXELS_TO_REFINE:
                continue
            local = component_labels[region]
            local[rest == piece] = next_value
            found = ndimage.find_objects((rest == piece).astype(np.int32))[0]
            assert found is not None
            objects.append(
                tuple(
                    slice(r.start + f.start, r.start + f.stop)
                    for r, f in zip(region, found, strict=True)
                )
            )
            new_values.append(next_value)
            next_value += 1
    return new_values


def _write_refined(
    crop_labels: np.ndarray,
    hu: np.ndarray,
    candidates: np.ndarray,
    near_bone: np.ndarray | None,
    brain: np.ndarray,
    region: tuple[slice, ...],
    component: np.ndarray,
    value: int,
    volume: Volume,
    config: SegmentationConfig,
    dense_thin: set[int],
) -> int:
    """Redraw one component's border at half its contrast; returns 1 when it was redrawn.

    Adds ``value`` to ``dense_thin`` when the component took the peak of a dense thin one.
    """
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
    raw = hu[grown]
    free = crop_labels[grown] == 0
    # Voxels of the component itself must be candidates; the border may reach out of it.
    permitted = (candidates[grown] | ~inner) & free
    drawn = inner
    redrawn = None
    # Growing passes stay out of the band next to the skull, as candidates do: through the
    # beam-hardening band a faint ribbon under the convexity grew into the inner table.
    growing = permitted if near_bone is None else permitted & ~near_bone[grown]
    # Hysteresis: the first pass redraws the candidate component. Each further pass reads
    # the lesion's level and background again from the region drawn so far, and grows it.
    # The candidate component (smoothed image at or above the window) contains only the
    # denser part of a faint lesion, so the first level is too high and the first border
    # too tight. The end slices of a hemorrhage of 50-65 HU in edema were lost that way.
    # Two more passes bring the level towards the whole lesion's mean. A fourth did not
    # help on the synthetic cohort.
    for step in range(_PASSES):
        outcome = _redraw_once(
            raw,
            drawn,
            inner,
            local_brain,
            candidates[grown],
            permitted if step == 0 else growing,
            pixel_mm,
            config,
            first=step == 0,
        )
        if outcome is None:
            break
        grown_region, thin = outcome
        if thin == "dense":
            dense_thin.add(value)
        if step > 0:
            # Later passes only add: on a dense compact lesion, re-reading the level from
            # the purer region raised it and shrank the border below the true one.
            grown_region |= drawn
        redrawn = drawn = grown_region
        if thin:
            # A ribbon or a dot is drawn once: growing it again reaches into the gray
            # matter next to it.
            break
    if redrawn is None:
        target = crop_labels[region]
        target[component & (target == 0)] = value
        return 0
    redrawn &= free
    target = crop_labels[grown]
    target[redrawn] = value
    return 1


def _redraw_once(
    raw: np.ndarray,
    drawn: np.ndarray,
    inner: np.ndarray,
    local_brain: np.ndarray,
    candidates: np.ndarray,
    permitted: np.ndarray,
    pixel_mm: float,
    config: SegmentationConfig,
    first: bool,
) -> tuple[np.ndarray, str | None] | None:
    """Draw a border at half contrast around ``drawn``, kept where it touches ``inner``.

    Returns the new region and, on the first pass, "dense" or "faint" when the component was
    found thin (None otherwise), or None when no border can be drawn.
    """
    # Background is read in a ring 2-3 voxels out: the first ring is partial volume, and
    # further out the edema around a hematoma gives way to normal brain.
    near = ndimage.binary_dilation(drawn, in_plane_disk())
    shell = ndimage.binary_dilation(near, in_plane_disk(), iterations=2) & ~near
    shell &= local_brain & ~candidates
    if np.count_nonzero(shell) < 4:
        return None
    background_hu = float(np.median(raw[shell]))
    # Half contrast is taken against the mean of the lesion's core within about 3 mm and one
    # slice. A mixed lesion so keeps both its dense and its fainter part. A partial-volume
    # voxel counts when at least half of it is lesion, as in the true masks.
    core = ndimage.binary_erosion(drawn, in_plane_disk())
    if not core.any():
        core = drawn
    reach_px = max(1, int(round(3.0 / pixel_mm)))
    window = (3, 2 * reach_px + 1, 2 * reach_px + 1)
    core_weight = ndimage.uniform_filter(core.astype(np.float32), window, mode="constant")
    # Levels are read on the unsmoothed image: smoothing lowers the peak of a structure only
    # a few pixels wide, and the mean over the window averages the noise out anyway.
    core_sum = ndimage.uniform_filter(np.where(core, raw, np.float32(0.0)), window, mode="constant")
    # Near the region but out of reach of its core (an end slice next to a slice with no
    # core, a narrow stretch), the level is the mean of the whole core.
    level = np.where(
        core_weight > 1e-6,
        core_sum / np.maximum(core_weight, np.float32(1e-6)),
        np.float32(np.mean(raw[core])),
    )
    reached = ndimage.uniform_filter(drawn.astype(np.float32), window, mode="constant") > 1e-6
    thin = _thin_levels(raw, inner, core, shell, background_hu) if first else None
    if thin is not None and thin[1] >= _THIN_MIN_PEAK_HU:
        # A ribbon's core (what survives one in-plane erosion) is a few scattered voxels
        # where the ribbon is widest. One level (the peak) applies to the whole thin
        # component, so the border reaches out from all of it.
        background_hu, peak = thin
        level = np.maximum(level, np.float32(peak))
    elif thin is not None:
        # Below _THIN_MIN_PEAK_HU the 99th percentile is mostly noise. Petechiae of 55-70 HU
        # in edema keep the core's level. Faint staining along a sulcus (CSF in its ring)
        # takes the 90th percentile and the ribbon's background: with the core's level and
        # the ring's median, its border took in the gray matter beside it.
        csf_fraction = float(np.mean(raw[shell] <= np.float32(config.csf_max_hu)))
        if csf_fraction >= _THIN_FAINT_CSF_FRACTION:
            background_hu = thin[0]
            faint_peak = np.percentile(raw[inner], _THIN_FAINT_PEAK_PERCENTILE)
            level = np.maximum(level, np.float32(faint_peak))
    threshold = np.maximum(
        np.float32(background_hu)
        + np.float32(_BORDER_FRACTION) * (level - np.float32(background_hu)),
        np.float32(config.low_hu - _REFINE_FLOOR_BELOW_LOW_HU),
    )
    # The border is drawn on the unsmoothed image: smoothing pulls the iso-contour of a
    # convex lesion inwards. Noise then only flips voxels close to the threshold.
    allowed = (raw >= threshold) & reached & local_brain & permitted
    # Keep the parts of the redrawn region that touch the original component.
    pieces, n_pieces = ndimage.label(allowed, structure=CONNECTIVITY)
    touching = np.unique(pieces[inner & allowed])
    touching = touching[touching > 0]
    if n_pieces == 0 or touching.size == 0:
        return None
    kind = None
    if thin is not None:
        kind = "dense" if thin[1] >= _THIN_MIN_PEAK_HU else "faint"
    return ndimage.binary_fill_holes(np.isin(pieces, touching)), kind


def _thin_levels(
    raw: np.ndarray,
    inner: np.ndarray,
    core: np.ndarray,
    shell: np.ndarray,
    background_hu: float,
) -> tuple[float, float] | None:
    """Return the background and peak of a thin component with clear contrast, else None.

    A gyral ribbon of staining or a small dot has few voxels that are wholly lesion. The mean
    of its core is then itself a partial-volume value, and half of it falls on voxels that
    are only about a third lesion. Its peak (99th percentile) is used as the lesion's
    density instead; the 90th percentile still held partial-volume voxels of a dense ribbon
    and drew its border about one pixel outside the true one. Its ring of surroundings mixes
    CSF, white and gray matter, whereas most voxels next to a ribbon are gray matter, so the
    background is read higher in that ring (75th percentile). The component is thin when
    what lies above half of that contrast does not survive two in-plane erosions. Whether a
    thin component's peak is used is decided by the caller (``_THIN_MIN_PEAK_HU``).
    """
    if float(np.mean(raw[core])) - background_hu < _THIN_MIN_CONTRAST_HU:
        return None
    peak = float(np.percentile(raw[inner], _THIN_PEAK_PERCENTILE))
    background = max(background_hu, float(np.percentile(raw[shell], _THIN_BACKGROUND_PERCENTILE)))
    strong = inner & (raw >= np.float32(background + _BORDER_FRACTION * (peak - background)))
    kept = ndimage.binary_erosion(strong, in_plane_disk(), iterations=2)
    if np.count_nonzero(kept) >= _THIN_KEPT_FRACTION * np.count_nonzero(strong):
        return None
    return background, peak


def _through_plane_line() -> np.ndarray:
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, 1, 1] = True
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
) -> tuple[int, dict[int, int]]:
    """Write the lesions of at least the minimum volume into ``output`` as 1..n, largest first.

    Returns how many lesions were too small and the new value of each kept value. Work is
    done per lesion's bounding box, so the cost follows the lesions, not the image.
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
    return len(sizes) - len(keep), {value: index for index, value in enumerate(keep, start=1)}


def _pair_partners(pairs: list[tuple[int, int]], new_values: dict[int, int]) -> dict[int, int]:
    """Map each part of a split hyperdensity that kept both parts to the other part's label."""
    partner: dict[int, int] = {}
    for light, dense in pairs:
        if light in new_values and dense in new_values:
            partner[new_values[light]] = new_values[dense]
            partner[new_values[dense]] = new_values[light]
    return partner


def _mark_pairs(
    lesions: list[Lesion], pairs: list[tuple[int, int]], new_values: dict[int, int]
) -> list[Lesion]:
    """Set ``paired_with`` on both parts of every split hyperdensity that kept both parts."""
    partner = _pair_partners(pairs, new_values)
    if not partner:
        return lesions
    return [replace(lesion, paired_with=partner.get(lesion.label)) for lesion in lesions]
