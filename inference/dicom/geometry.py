"""Slice geometry: order along the slice normal, spacing, duplicates, gaps and gantry tilt.

Positions come from ImagePositionPatient of every slice, projected on the normal of
ImageOrientationPatient. InstanceNumber, file names and SliceThickness are never used for
order or spacing because exporters rewrite them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import GeometryError
from ..volume import Note
from .classify import MIN_SLICES, slice_normal
from .headers import InstanceInfo

# DICOM writers round ImageOrientationPatient to a few decimals, and some recompute it per
# slice with noise of about 1e-3. 5e-3 per direction cosine is about 0.3 degrees, below any
# real difference between acquisitions (an estimate: tilts differ by whole degrees).
ORIENTATION_TOLERANCE = 5e-3
# Positions are usually written with 2-3 decimals (0.01 mm or better).
POSITION_TOLERANCE_MM = 0.02
# Two positions closer than this fraction of the median step are one position seen twice (a
# copy with differently rounded coordinates): no scanner reconstructs overlapping slices
# with steps below a fifth of the series' usual step (an estimate).
NEAR_DUPLICATE_FRACTION = 0.2
# A remaining step below this fraction of the median step would force a grid that many times
# finer than the series, so such a series is rejected instead.
MIN_STEP_FRACTION = 0.25
# A step longer than this multiple of the median step leaves out anatomy: a gap.
GAP_STEP_FACTOR = 1.5
# In-plane shift between slices below this is rounding, not a tilt.
SHEAR_TOLERANCE_MM = 0.05
# A tilted stack shifts each slice in proportion to its distance along the normal. Positions
# that stray further than this from that line do not belong to one stack.
SHEAR_RESIDUAL_TOLERANCE_MM = 0.5
# GantryDetectorTilt is written to a tenth of a degree or so (an estimate), and sign
# conventions differ by vendor, so only magnitudes that differ by more than this are reported.
TILT_TAG_TOLERANCE_DEG = 1.0


@dataclass
class GeometryPlan:
    """How to assemble a volume from a series' images.

    ``slices`` lists the instances kept, in ascending order along ``normal``; ``positions_mm``
    their positions along it. ``duplicates`` maps a kept instance index to other instances at
    the same position, which the loader must compare pixel by pixel. ``shift_rc_px`` is the
    (row, column) shift, in pixels, that moves each kept slice onto a grid stacked along the
    normal (non-zero only with gantry tilt). ``grid_positions_mm`` is the output grid along the
    normal, regular by construction.
    """

    slices: list[InstanceInfo]
    positions_mm: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray
    pixel_spacing_rc_mm: tuple[float, float]
    spacing_mm: float
    grid_positions_mm: np.ndarray
    origin_xyz_mm: np.ndarray
    shift_rc_px: np.ndarray
    duplicates: dict[int, list[InstanceInfo]] = field(default_factory=dict)
    tilt_deg: float = 0.0
    notes: list[Note] = field(default_factory=list)

    @property
    def needs_resampling(self) -> bool:
        if len(self.grid_positions_mm) != len(self.positions_mm):
            return True
        return bool(np.max(np.abs(self.grid_positions_mm - self.positions_mm)) > 1e-6)

    @property
    def direction(self) -> np.ndarray:
        return np.column_stack([self.row_direction, self.column_direction, self.normal])


def _names(infos: list[InstanceInfo], limit: int = 4) -> str:
    labels = [info.label for info in infos[:limit]]
    more = f" and {len(infos) - limit} more" if len(infos) > limit else ""
    return ", ".join(labels) + more


def plan_geometry(
    instances: list[InstanceInfo],
    *,
    allow_gaps: bool = False,
    target_spacing_mm: float | None = None,
) -> GeometryPlan:
    """Check the geometry of a series and plan the volume grid.

    Raises GeometryError when attributes are missing, orientations or matrix sizes differ,
    fewer than two distinct positions exist, the in-plane positions are inconsistent, or a
    slice is missing (unless ``allow_gaps``).
    """
    invalid = [i for i in instances if i.geometry_problem]
    if invalid:
        raise GeometryError(
            f"{_names(invalid)}: {invalid[0].geometry_problem}, so the slice position is "
            "unknown. Re-export the series with valid geometry.",
            path=invalid[0].path,
            code="invalid_geometry",
        )
    missing = [i for i in instances if i.position_xyz_mm is None or i.orientation is None]
    if missing:
        raise GeometryError(
            f"{_names(missing)}: ImagePositionPatient or ImageOrientationPatient is missing, so "
            "the slice position is unknown. Re-export the series with its geometry.",
            path=missing[0].path,
            code="missing_geometry",
        )
    no_spacing = [i for i in instances if i.pixel_spacing_rc_mm is None]
    if no_spacing:
        raise GeometryError(
            f"{_names(no_spacing)}: PixelSpacing is missing, so distances in mm are unknown. "
            "Re-export the series with PixelSpacing.",
            path=no_spacing[0].path,
            code="missing_pixel_spacing",
        )

    reference = instances[0]
    assert reference.orientation is not None and reference.pixel_spacing_rc_mm is not None
    ref_orientation = np.asarray(reference.orientation, dtype=np.float64)
    reference_spacing = np.asarray(reference.pixel_spacing_rc_mm, dtype=np.float64)
    # One array operation for all images; numpy calls per image took about 8 us each.
    orientation_offsets = np.abs(
        np.asarray([i.orientation for i in instances], dtype=np.float64) - ref_orientation
    ).max(axis=1)
    differing = [
        i
        for i, offset in zip(instances, orientation_offsets, strict=True)
        if offset > ORIENTATION_TOLERANCE
    ]
    if differing:
        raise GeometryError(
            f"the series mixes slice orientations: {_names(differing)} differ from "
            f"{reference.label} {tuple(round(v, 4) for v in reference.orientation)}. A volume "
            "needs one orientation; remove the other images or load them as a separate series.",
            path=differing[0].path,
            code="mixed_orientation",
        )
    spacing_offsets = np.abs(
        np.asarray([i.pixel_spacing_rc_mm or (0.0, 0.0) for i in instances], dtype=np.float64)
        - reference_spacing
    ).max(axis=1)
    shape_mismatch = [
        i
        for i, offset in zip(instances, spacing_offsets, strict=True)
        if (i.rows, i.columns) != (reference.rows, reference.columns) or offset > 1e-4
    ]
    if shape_mismatch:
        raise GeometryError(
            f"{_names(shape_mismatch)}: matrix size or PixelSpacing differs from "
            f"{reference.label} ({reference.rows}x{reference.columns}, "
            f"{reference.pixel_spacing_rc_mm} mm). Load images of one reconstruction only.",
            path=shape_mismatch[0].path,
            code="mixed_matrix",
        )

    row_direction = ref_orientation[:3] / np.linalg.norm(ref_orientation[:3])
    column_direction = ref_orientation[3:] / np.linalg.norm(ref_orientation[3:])
    normal = slice_normal(ref_orientation)
    points = np.asarray([i.position_xyz_mm for i in instances], dtype=np.float64)
    along = points @ normal
    order = sorted(range(len(instances)), key=lambda k: (along[k], instances[k].path))

    groups = _position_groups(order, along)
    unique_indices = [group[0] for group in groups]
    duplicates = {
        index: [instances[k] for k in group[1:]]
        for index, group in enumerate(groups)
        if len(group) > 1
    }
    if len(unique_indices) < 2 and len(instances) >= MIN_SLICES:
        raise GeometryError(
            f"all {len(instances)} images ({_names(instances)}) have the same position along "
            f"the slice normal ({float(along[0]):.2f} mm): the exporter probably wrote one "
            "ImagePositionPatient into every file. Re-export the series with the position of "
            "each slice.",
            path=reference.path,
            code="same_position",
        )
    if len(unique_indices) < 2:
        raise GeometryError(
            f"the series has {len(unique_indices)} distinct slice position(s) ({_names(instances)}); a "
            "volume needs at least two. Upload the whole series.",
            path=reference.path,
            code="too_few_slices",
        )

    slices = [instances[k] for k in unique_indices]
    positions = along[unique_indices]
    unique_points = points[unique_indices]
    notes: list[Note] = []
    row_spacing, column_spacing = reference.pixel_spacing_rc_mm

    shift_rc_px, tilt_deg = _plan_tilt(
        slices, unique_points, positions, row_direction, column_direction, normal, notes
    )
    shift_rc_px[:, 0] /= row_spacing
    shift_rc_px[:, 1] /= column_spacing

    steps = np.diff(positions)
    spacing, grid = _plan_spacing(slices, positions, steps, allow_gaps, target_spacing_mm, notes)
    origin = unique_points[0].copy()
    return GeometryPlan(
        slices=slices,
        positions_mm=positions,
        row_direction=row_direction,
        column_direction=column_direction,
        normal=normal,
        pixel_spacing_rc_mm=(float(row_spacing), float(column_spacing)),
        spacing_mm=spacing,
        grid_positions_mm=grid,
        origin_xyz_mm=origin,
        shift_rc_px=shift_rc_px,
        duplicates=duplicates,
        tilt_deg=tilt_deg,
        notes=notes,
    )


def _position_groups(order: list[int], along: np.ndarray) -> list[list[int]]:
    """Group the sorted instance indices by slice position.

    Positions within :data:`POSITION_TOLERANCE_MM` are one position. So are positions closer
    than :data:`NEAR_DUPLICATE_FRACTION` of the median step: a re-exported copy whose
    position was rounded differently (10.03 instead of 10.0 mm) is a duplicate to compare,
    not a slice that would force a 0.03 mm grid.
    """
    groups: list[list[int]] = []
    for k in order:
        if groups and abs(along[k] - along[groups[-1][0]]) <= POSITION_TOLERANCE_MM:
            groups[-1].append(k)
        else:
            groups.append([k])
    if len(groups) < 3:
        return groups
    typical = float(np.median(np.diff([along[group[0]] for group in groups])))
    near_mm = NEAR_DUPLICATE_FRACTION * typical
    merged: list[list[int]] = []
    for group in groups:
        if merged and along[group[0]] - along[merged[-1][0]] < near_mm:
            merged[-1].extend(group)
        else:
            merged.append(group)
    return merged


def _plan_tilt(
    slices: list[InstanceInfo],
    points: np.ndarray,
    positions: np.ndarray,
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    normal: np.ndarray,
    notes: list[Note],
) -> tuple[np.ndarray, float]:
    """Find the in-plane offset of each slice from a stack along the normal.

    With gantry tilt, scanners tilt the image plane but move the table along the patient's
    axis, so successive slices are shifted within their plane: the stack is sheared. Returns
    the (row, column) offsets in mm and the tilt angle in degrees.
    """
    offsets = points - points[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    offset_rc_mm = np.column_stack([in_plane @ column_direction, in_plane @ row_direction])
    tag_tilts = {round(i.gantry_tilt_deg, 2) for i in slices if i.gantry_tilt_deg}
    tag_text = f"; GantryDetectorTilt {sorted(tag_tilts)[0]:g} deg" if tag_tilts else ""
    if np.max(np.abs(offset_rc_mm)) <= SHEAR_TOLERANCE_MM:
        if tag_tilts:
            notes.append(
                Note(
                    "info",
                    "gantry_tilt",
                    f"gantry tilt recorded{tag_text}, but the slices are already stacked along "
                    "their normal: no correction needed",
                )
            )
        return np.zeros((len(slices), 2)), 0.0

    distance = positions - positions[0]
    slope, *_ = np.linalg.lstsq(distance[:, None], offset_rc_mm, rcond=None)
    predicted = distance[:, None] * slope
    residual = float(np.max(np.abs(predicted - offset_rc_mm)))
    if residual > SHEAR_RESIDUAL_TOLERANCE_MM:
        worst = int(np.argmax(np.max(np.abs(predicted - offset_rc_mm), axis=1)))
        raise GeometryError(
            f"slice positions are shifted within the image plane inconsistently (by up to "
            f"{residual:.1f} mm at {slices[worst].label}); they do not form one stack, tilted "
            "or not. Check that the files belong to one reconstruction.",
            path=slices[worst].path,
            code="inconsistent_positions",
        )
    tilt_deg = math.degrees(math.atan(float(np.hypot(*slope[0]))))
    notes.append(
        Note(
            "correction",
            "gantry_tilt",
            f"gantry tilt of {tilt_deg:.2f} deg (from slice positions{tag_text}): slices were "
            "shifted within their plane by up to "
            f"{float(np.max(np.hypot(offset_rc_mm[:, 0], offset_rc_mm[:, 1]))):.1f} mm with "
            "linear interpolation so that the volume is geometrically true",
        )
    )
    tag_magnitudes = sorted(abs(value) for value in tag_tilts)
    if tag_magnitudes and abs(tag_magnitudes[0] - tilt_deg) > TILT_TAG_TOLERANCE_DEG:
        notes.append(
            Note(
                "warning",
                "gantry_tilt_mismatch",
                f"GantryDetectorTilt is {tag_magnitudes[0]:g} deg but the slice positions "
                f"imply {tilt_deg:.2f} deg; the positions were used",
            )
        )
    return offset_rc_mm.copy(), tilt_deg


def _plan_spacing(
    slices: list[InstanceInfo],
    positions: np.ndarray,
    steps: np.ndarray,
    allow_gaps: bool,
    target_spacing_mm: float | None,
    notes: list[Note],
) -> tuple[float, np.ndarray]:
    # The median step is the series' spacing even when a few steps jitter, repeat or skip.
    typical = float(np.median(steps))
    tolerance = max(POSITION_TOLERANCE_MM, 0.01 * typical)
    deviating = np.flatnonzero(np.abs(steps - typical) > tolerance)

    if len(deviating) == 0 and target_spacing_mm is None:
        return float(np.mean(steps)), positions.copy()

    shortest = int(np.argmin(steps))
    if steps[shortest] < MIN_STEP_FRACTION * typical:
        raise GeometryError(
            f"{slices[shortest].label} ({positions[shortest]:.2f} mm) and "
            f"{slices[shortest + 1].label} ({positions[shortest + 1]:.2f} mm) are only "
            f"{float(steps[shortest]):.2f} mm apart along the slice normal, while the series' "
            f"usual step is {typical:g} mm, so they do not form one regular stack. Remove the "
            "stray image, or upload the reconstructions as separate series.",
            path=slices[shortest + 1].path,
            code="irregular_spacing",
        )

    # Any step much longer than the usual one leaves out anatomy, whether or not it is an
    # exact multiple of the usual step (jitter elsewhere must not hide a missing slice).
    gaps = [int(i) for i in deviating if steps[i] > GAP_STEP_FACTOR * typical]
    irregular = [int(i) for i in deviating if int(i) not in gaps]
    if gaps:
        descriptions = "; ".join(
            f"between {positions[g]:.1f} mm ({slices[g].label}) and {positions[g + 1]:.1f} mm "
            f"({slices[g + 1].label})"
            for g in gaps[:3]
        )
        n_missing = sum(max(round(float(steps[g]) / typical) - 1, 1) for g in gaps)
        if not allow_gaps:
            raise GeometryError(
                f"{n_missing} slice(s) missing along the slice normal, {descriptions} "
                f"(spacing {typical:g} mm elsewhere). Upload the complete series, or load "
                "with allow_gaps=True to interpolate across the gap (also when the spacing "
                "changes by protocol).",
                path=slices[gaps[0]].path,
                code="missing_slices",
            )
        notes.append(
            Note(
                "warning",
                "gap",
                f"{n_missing} slice(s) missing {descriptions}; filled by linear interpolation "
                "between the neighbouring slices",
            )
        )

    regular_steps = np.delete(steps, gaps)
    jitter_only = bool(np.all(np.abs(regular_steps - typical) <= 0.1 * typical))
    if target_spacing_mm is not None:
        spacing = float(target_spacing_mm)
    elif jitter_only:
        # Small irregularities (within 10%) are jitter around one spacing, not a protocol
        # with two spacings, so the typical spacing is kept.
        spacing = typical
    else:
        spacing = float(np.min(regular_steps))
    extent = float(positions[-1] - positions[0])
    if target_spacing_mm is not None:
        count = int(math.floor(extent / spacing + 1e-6)) + 1
    else:
        # The spacing is adjusted so that the first and the last source slice are both grid
        # planes: a grid that stopped short of the last slice would cut off the top.
        intervals = extent / spacing
        n_intervals = max(round(intervals) if jitter_only else math.ceil(intervals - 1e-6), 1)
        spacing = extent / n_intervals
        count = n_intervals + 1
    grid = positions[0] + spacing * np.arange(count, dtype=np.float64)
    if irregular:
        notes.append(
            Note(
                "correction",
                "resampled",
                f"slice spacing varies from {float(np.min(regular_steps)):g} to "
                f"{float(np.max(regular_steps)):g} mm (per-slice positions); resampled by "
                f"linear interpolation along the slice normal to a regular {spacing:.4g} mm grid from the first to the last slice",
            )
        )
    elif target_spacing_mm is not None:
        notes.append(
            Note(
                "correction",
                "resampled",
                f"resampled from {typical:g} mm to the requested {spacing:g} mm spacing",
            )
        )

    return float(spacing), grid


def file_names(infos: list[InstanceInfo]) -> str:
    """Return a comma-separated list of base file names for messages."""
    return ", ".join(os.path.basename(info.path) for info in infos)
