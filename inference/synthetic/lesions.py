"""Post-thrombectomy findings of a synthetic head: infarct, hemorrhage and contrast staining.

How each class looks follows the descriptions in the literature on post-thrombectomy CT:

- Contrast extravasation (CE): sharply marginated and homogeneous, in the lentiform nucleus or
  along the cortical ribbon or sulci of the infarcted territory, often above 90 HU, with no
  edema or mass effect. It is gone on the 24-72 h follow-up CT.
- Hemorrhagic transformation (HT): inside or at the edge of the infarct, petechial (HI1/HI2)
  or a hematoma (PH1/PH2) of 50-90 HU, irregular and heterogeneous, with edema and, for a
  hematoma, mass effect. It persists on follow-up, its density falling slowly (an estimate of
  1-2 HU per day is used).
- HT+CE: a hemorrhagic core that persists and a dense part that clears.

Sources: persistence on a follow-up CT as the reference standard, Dekeyzer et al., J
NeuroIntervent Surg 2017;9:394-398; hemorrhage subtypes, von Kummer et al., Stroke
2015;46:2981-2986.

The HU ranges of the classes overlap on purpose: no single threshold separates them on the
early CT, as in the studies above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inference.synthetic.phantom import (
    Anatomy,
    Ellipsoid,
    HeadFrame,
    MassEffect,
    blend,
    brain_distance,
)

ComponentType = Literal["HT", "CE"]
CaseLabel = Literal["HT", "CE", "HT+CE", "none"]
Compartment = Literal["parenchymal", "subarachnoid", "intraventricular"]

# Reasons a case is flagged as hard; each makes one of the usual cues misleading.
HARD_REASONS = ("faint_ce", "dense_ht", "small_lesion", "near_skull")

# Sub-slice offsets (fractions of the slice thickness) averaged for partial volume along z.
_Z_SUBSAMPLES = (-1.0 / 3.0, 0.0, 1.0 / 3.0)


@dataclass(frozen=True)
class LesionSpec:
    """One hyperdense component as drawn: shape, density at each time point and margin."""

    component_type: ComponentType
    pattern: str
    compartment: Compartment
    lobes: tuple[Ellipsoid, ...]
    density_hu: float
    follow_up_density_hu: float | None
    texture_sd_hu: float
    margin_mm: float
    edema_mm: float = 0.0
    edema_hu: float = 0.0
    # "cortex" keeps only the gray-matter ribbon inside the lobes, "sulcus" only the CSF.
    restrict_to: Literal["cortex", "sulcus"] | None = None
    texture_phase: tuple[float, ...] = field(default=(0.0, 0.0, 0.0))


@dataclass(frozen=True)
class Infarct:
    """A middle cerebral artery territory infarct: mildly hypodense, more so on follow-up."""

    side: int
    region: Ellipsoid
    baseline_delta_hu: float
    follow_up_delta_hu: float


@dataclass(frozen=True)
class Findings:
    """Everything pathological in one case."""

    infarct: Infarct
    lesions: tuple[LesionSpec, ...]
    mass_effect: MassEffect


def sample_findings(
    rng: np.random.Generator,
    anatomy: Anatomy,
    label: CaseLabel,
    hard_reason: str | None,
    follow_up_days: float,
) -> Findings:
    """Draw the infarct and the hyperdense components of a case of class ``label``."""
    side = 1 if rng.random() < 0.5 else -1
    cx, cy, cz = anatomy.infarct_center(side)
    infarct = Infarct(
        side=side,
        region=Ellipsoid(
            (cx + rng.uniform(-3, 3), cy + rng.uniform(-8, 8), cz + rng.uniform(-5, 5)),
            (rng.uniform(24, 32), rng.uniform(30, 42), rng.uniform(22, 30)),
        ),
        baseline_delta_hu=-float(rng.uniform(3.0, 7.0)),
        follow_up_delta_hu=-float(rng.uniform(9.0, 14.0)),
    )

    lesions: list[LesionSpec] = []
    if label in ("HT", "HT+CE"):
        lesions.append(_sample_hemorrhage(rng, anatomy, side, hard_reason, follow_up_days))
    if label == "CE":
        lesions.append(_sample_staining(rng, anatomy, side, hard_reason, None))
        if rng.random() < 0.25 and hard_reason != "small_lesion":
            lesions.append(_sample_staining(rng, anatomy, side, None, "cortical"))
    if label == "HT+CE":
        if rng.random() < 0.5:
            lesions.append(_adjacent_staining(rng, lesions[0], hard_reason))
        else:
            lesions.append(_sample_staining(rng, anatomy, side, hard_reason, None))

    mass_effect = MassEffect()
    hematoma = next((spec for spec in lesions if spec.pattern == "hematoma"), None)
    if hematoma is not None:
        radius_mm = max(max(lobe.semi_axes_xyz_mm) for lobe in hematoma.lobes)
        mass_effect = MassEffect(side=side, midline_shift_mm=min(6.0, 0.3 * radius_mm))
    return Findings(infarct=infarct, lesions=tuple(lesions), mass_effect=mass_effect)


def _texture_phase(rng: np.random.Generator) -> tuple[float, ...]:
    return tuple(float(v) for v in rng.uniform(0.0, 2.0 * math.pi, size=3))


def _sample_hemorrhage(
    rng: np.random.Generator,
    anatomy: Anatomy,
    side: int,
    hard_reason: str | None,
    follow_up_days: float,
) -> LesionSpec:
    density_hu = float(np.clip(rng.normal(68.0, 8.0), 52.0, 90.0))
    if hard_reason == "dense_ht":
        density_hu = float(rng.uniform(90.0, 105.0))
    # Clot density falls roughly 1-2 HU per day after the first hours.
    follow_up_hu = density_hu - float(rng.uniform(1.0, 2.0)) * follow_up_days
    center = np.array(anatomy.infarct_center(side)) + rng.uniform(-5, 5, size=3)
    center[0] = side * rng.uniform(22.0, 34.0)

    small = hard_reason == "small_lesion"
    if rng.random() < 0.55 and not small:
        radius = rng.uniform(6.0, 13.0)
        lobes = [Ellipsoid(tuple(center), tuple(radius * rng.uniform(0.75, 1.2, size=3)))]
        for _ in range(int(rng.integers(2, 5))):
            offset = rng.normal(0.0, radius * 0.45, size=3)
            lobes.append(
                Ellipsoid(tuple(center + offset), tuple(radius * rng.uniform(0.35, 0.7, size=3)))
            )
        return LesionSpec(
            component_type="HT",
            pattern="hematoma",
            compartment="parenchymal",
            lobes=_as_lobes(lobes),
            density_hu=density_hu,
            follow_up_density_hu=follow_up_hu,
            texture_sd_hu=float(rng.uniform(4.0, 8.0)),
            margin_mm=float(rng.uniform(1.5, 2.5)),
            edema_mm=float(rng.uniform(3.0, 6.0)),
            edema_hu=-float(rng.uniform(4.0, 7.0)),
            texture_phase=_texture_phase(rng),
        )

    # Petechiae (HI1 scattered, HI2 confluent): a cluster of small dots.
    n_dots = int(rng.integers(3, 6)) if small else int(rng.integers(8, 22))
    spread_mm = 4.0 if small else rng.uniform(8.0, 14.0)
    dot_min, dot_max = (1.8, 2.6) if small else (2.0, 4.5)
    dots = [
        Ellipsoid(
            tuple(center + rng.normal(0.0, spread_mm, size=3) * np.array([1.0, 1.0, 0.6])),
            (float(r), float(r), float(r) * rng.uniform(1.0, 1.6)),
        )
        for r in rng.uniform(dot_min, dot_max, size=n_dots)
    ]
    return LesionSpec(
        component_type="HT",
        pattern="petechial",
        compartment="parenchymal",
        lobes=_as_lobes(dots),
        density_hu=density_hu,
        follow_up_density_hu=follow_up_hu,
        texture_sd_hu=float(rng.uniform(2.0, 5.0)),
        margin_mm=1.5,
        edema_mm=float(rng.uniform(1.0, 3.0)),
        edema_hu=-float(rng.uniform(2.0, 4.0)),
        texture_phase=_texture_phase(rng),
    )


def _staining_density(rng: np.random.Generator, hard_reason: str | None) -> float:
    if hard_reason == "faint_ce":
        return float(rng.uniform(56.0, 70.0))
    return float(np.clip(rng.normal(98.0, 22.0), 60.0, 190.0))


def _sample_staining(
    rng: np.random.Generator,
    anatomy: Anatomy,
    side: int,
    hard_reason: str | None,
    location: str | None,
) -> LesionSpec:
    density_hu = _staining_density(rng, hard_reason)
    if location is None:
        draw = rng.random()
        if hard_reason == "near_skull":
            location = "cortical"
        elif draw < 0.5:
            location = "basal_ganglia"
        elif draw < 0.85:
            location = "cortical"
        else:
            location = "sulcal"

    if location == "basal_ganglia":
        nucleus = anatomy.lentiform(side)
        scale = 0.35 if hard_reason == "small_lesion" else rng.uniform(0.6, 1.0)
        a, b, c = nucleus.semi_axes_xyz_mm
        center = np.array(nucleus.center_xyz_mm) + rng.uniform(-1.5, 1.5, size=3)
        lobes = [Ellipsoid(tuple(center), (a * scale, b * scale, c * scale))]
        return LesionSpec(
            component_type="CE",
            pattern="basal_ganglia",
            compartment="parenchymal",
            lobes=_as_lobes(lobes),
            density_hu=density_hu,
            follow_up_density_hu=None,
            texture_sd_hu=float(rng.uniform(1.0, 3.0)),
            margin_mm=float(rng.uniform(0.4, 1.0)),
            texture_phase=_texture_phase(rng),
        )

    # A patch of the lateral convexity inside the infarcted territory.
    angle = math.radians(rng.uniform(-30.0, 30.0))
    z_mm = rng.uniform(10.0, 40.0)
    a, b, c = anatomy.brain.semi_axes_xyz_mm
    height = max(0.0, 1.0 - ((z_mm - anatomy.brain.center_xyz_mm[2]) / c) ** 2)
    surface_x = side * a * math.sqrt(height) * math.cos(angle)
    surface_y = anatomy.brain.center_xyz_mm[1] + b * math.sqrt(height) * math.sin(angle)
    patch_mm = 4.0 if hard_reason == "small_lesion" else rng.uniform(9.0, 16.0)
    patch = Ellipsoid((surface_x, surface_y, z_mm), (patch_mm, patch_mm * 1.4, patch_mm))
    sulcal = location == "sulcal"
    return LesionSpec(
        component_type="CE",
        pattern=location,
        compartment="subarachnoid" if sulcal else "parenchymal",
        lobes=(patch,),
        density_hu=density_hu,
        follow_up_density_hu=None,
        texture_sd_hu=float(rng.uniform(1.0, 3.0)),
        margin_mm=0.8,
        restrict_to="sulcus" if sulcal else "cortex",
        texture_phase=_texture_phase(rng),
    )


def _adjacent_staining(
    rng: np.random.Generator, core: LesionSpec, hard_reason: str | None
) -> LesionSpec:
    """Draw a dense cap that touches the hemorrhagic core, as in a mixed lesion."""
    main = core.lobes[0]
    direction = rng.normal(size=3)
    direction[2] *= 0.4
    direction /= np.linalg.norm(direction)
    radius = float(np.mean(main.semi_axes_xyz_mm))
    center = np.array(main.center_xyz_mm) + direction * radius * 0.9
    cap_mm = radius * rng.uniform(0.5, 0.8)
    return LesionSpec(
        component_type="CE",
        pattern="adjacent",
        compartment="parenchymal",
        lobes=(Ellipsoid(tuple(center), (cap_mm, cap_mm, cap_mm * 0.8)),),
        density_hu=_staining_density(rng, hard_reason),
        follow_up_density_hu=None,
        texture_sd_hu=float(rng.uniform(1.0, 3.0)),
        margin_mm=0.8,
        texture_phase=_texture_phase(rng),
    )


def _as_lobes(shapes: list[Ellipsoid]) -> tuple[Ellipsoid, ...]:
    return tuple(
        Ellipsoid(
            tuple(float(v) for v in shape.center_xyz_mm),  # type: ignore[arg-type]
            tuple(float(v) for v in shape.semi_axes_xyz_mm),  # type: ignore[arg-type]
        )
        for shape in shapes
    )


def lesion_block(
    frame: HeadFrame, spec: LesionSpec, slice_mm: float, pixel_mm: float, margin_mm: float = 0.0
) -> tuple[slice, slice, slice] | None:
    """Return the (z, y, x) index block that contains the lesion plus ``margin_mm``."""
    low = np.array([np.inf, np.inf, np.inf])
    high = -low
    for lobe in spec.lobes:
        center = np.array(lobe.center_xyz_mm)
        axes = np.array(lobe.semi_axes_xyz_mm) + margin_mm + 2.0 * pixel_mm
        low = np.minimum(low, center - axes)
        high = np.maximum(high, center + axes)
    z = frame.z[:, 0, 0]
    k = np.nonzero((z >= low[2] - slice_mm) & (z <= high[2] + slice_mm))[0]
    # Frame coordinates are rotated, so the block is found from the coordinate planes.
    inside = (frame.x >= low[0]) & (frame.x <= high[0]) & (frame.y >= low[1]) & (frame.y <= high[1])
    rows = np.nonzero(inside.any(axis=1))[0]
    columns = np.nonzero(inside.any(axis=0))[0]
    if k.size == 0 or rows.size == 0 or columns.size == 0:
        return None
    return (
        slice(int(k[0]), int(k[-1]) + 1),
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(columns[0]), int(columns[-1]) + 1),
    )


def lesion_fraction(
    frame: HeadFrame,
    anatomy: Anatomy,
    spec: LesionSpec,
    block: tuple[slice, slice, slice],
    slice_mm: float,
    grow_mm: float = 0.0,
    ramp_mm: float | None = None,
) -> np.ndarray:
    """Partial-volume fraction of the lesion in ``block``, averaged over the slice thickness."""
    z_centers = frame.z[block[0], 0, 0]
    total: np.ndarray | None = None
    for offset in _Z_SUBSAMPLES:
        sub = frame.crop(block[1], block[2], z_mm=z_centers + np.float32(offset * slice_mm))
        distance = np.minimum.reduce([sub.ellipsoid_distance(lobe) for lobe in spec.lobes])
        fraction = sub.fraction(distance - np.float32(grow_mm), ramp_mm or spec.margin_mm)
        if spec.restrict_to is not None:
            pial_mm = brain_distance(sub, anatomy)
            # Depth below the smooth outer surface of the brain: staining follows the sulci
            # and the cortex lining them, not the thin CSF layer under the skull.
            envelope_mm = sub.ellipsoid_distance(anatomy.brain)
            if spec.restrict_to == "cortex":
                # The gray-matter ribbon: inside the pial surface, outside the white matter.
                fraction *= sub.fraction(pial_mm, 0.8) * (1.0 - sub.fraction(pial_mm + 3.0, 0.8))
                fraction *= sub.fraction(envelope_mm + 1.0, 0.8)
            else:
                fraction *= (1.0 - sub.fraction(pial_mm, 0.8)) * sub.fraction(
                    envelope_mm + 2.0, 0.8
                )
        total = fraction if total is None else total + fraction
    assert total is not None
    return total / np.float32(len(_Z_SUBSAMPLES))


def lesion_density(
    frame: HeadFrame, spec: LesionSpec, block: tuple[slice, slice, slice], density_hu: float
) -> np.ndarray:
    """Density of the lesion in ``block`` (HU) with a smooth internal texture."""
    sub = frame.crop(block[1], block[2], slices=block[0])
    p1, p2, p3 = spec.texture_phase
    # Three plane waves of about 8-12 mm wavelength give clot-like heterogeneity.
    texture = (
        np.sin(sub.x * np.float32(0.55) + sub.z * np.float32(0.3) + np.float32(p1))
        + np.sin(sub.y * np.float32(0.7) - sub.x * np.float32(0.2) + np.float32(p2))
        + np.sin(sub.z * np.float32(0.5) + sub.y * np.float32(0.25) + np.float32(p3))
    )
    scale = np.float32(spec.texture_sd_hu / math.sqrt(1.5))
    result: np.ndarray = np.float32(density_hu) + scale * texture
    return result


def apply_infarct(
    frame: HeadFrame, hu: np.ndarray, brain_fraction: np.ndarray, infarct: Infarct, delta_hu: float
) -> None:
    """Lower brain tissue HU inside the infarct, with a fuzzy 6 mm edge."""
    fraction = frame.fraction(frame.ellipsoid_distance(infarct.region), 6.0)
    hu += np.float32(delta_hu) * fraction * brain_fraction


def apply_lesion(
    frame: HeadFrame,
    anatomy: Anatomy,
    hu: np.ndarray,
    labels: np.ndarray | None,
    label: int,
    spec: LesionSpec,
    density_hu: float,
    slice_mm: float,
    edema_hu: float,
) -> None:
    """Blend one lesion (and its edema) into ``hu``; write its true mask into ``labels``.

    A voxel belongs to the lesion in the true mask when at least half of it is lesion, which
    is where a half-contrast boundary falls on the image.
    """
    block = lesion_block(frame, spec, slice_mm, frame.ramp_mm, margin_mm=spec.edema_mm + 3.0)
    if block is None:
        return
    if spec.edema_mm > 0 and edema_hu != 0:
        halo = lesion_fraction(frame, anatomy, spec, block, slice_mm, spec.edema_mm, 3.0)
        hu[block] += np.float32(edema_hu) * halo
    fraction = lesion_fraction(frame, anatomy, spec, block, slice_mm)
    blend(hu[block], fraction, lesion_density(frame, spec, block, density_hu))
    if labels is not None:
        inside = fraction >= 0.5
        labels[block][inside] = label
