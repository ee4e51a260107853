"""Procedural head phantom: the normal anatomy of a synthetic non-contrast head CT.

Every structure is an analytic shape (mostly ellipsoids) turned into a partial-volume fraction
by a linear ramp about one pixel wide across its surface, so edges are smooth as on a real
scanner. HU values follow the usual NCCT ranges: air -1000, white matter 20-30, gray matter
35-45, CSF 0-15, skull above 700, physiological calcifications above 100.

Coordinates are patient LPS millimetres (x to the patient's left, y posterior, z superior).
Arrays are float32 in (z, y, x) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AIR_HU = -1000.0
SCALP_HU = 35.0
CSF_HU = 7.0

# Field of view of a routine head CT reconstruction.
HEAD_FOV_MM = 230.0


@dataclass(frozen=True)
class Grid:
    """An axial voxel grid with identity orientation."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]

    @property
    def z_mm(self) -> np.ndarray:
        return (
            self.origin_xyz_mm[2] + self.spacing_zyx_mm[0] * np.arange(self.shape_zyx[0])
        ).astype(np.float32)

    @property
    def y_mm(self) -> np.ndarray:
        return (
            self.origin_xyz_mm[1] + self.spacing_zyx_mm[1] * np.arange(self.shape_zyx[1])
        ).astype(np.float32)

    @property
    def x_mm(self) -> np.ndarray:
        return (
            self.origin_xyz_mm[0] + self.spacing_zyx_mm[2] * np.arange(self.shape_zyx[2])
        ).astype(np.float32)

    @property
    def pixel_mm(self) -> float:
        return self.spacing_zyx_mm[2]

    @property
    def voxel_volume_ml(self) -> float:
        dz, dy, dx = self.spacing_zyx_mm
        return dz * dy * dx / 1000.0


def make_grid(matrix: int, n_slices: int, first_z_mm: float, slice_mm: float = 5.0) -> Grid:
    """Build a square axial grid centred on the head, ``matrix`` pixels across a 230 mm FOV."""
    pixel_mm = HEAD_FOV_MM / matrix
    corner_mm = -HEAD_FOV_MM / 2.0 + pixel_mm / 2.0
    return Grid(
        shape_zyx=(n_slices, matrix, matrix),
        spacing_zyx_mm=(slice_mm, pixel_mm, pixel_mm),
        origin_xyz_mm=(corner_mm, corner_mm, first_z_mm),
    )


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid in head coordinates (mm)."""

    center_xyz_mm: tuple[float, float, float]
    semi_axes_xyz_mm: tuple[float, float, float]

    def grown(self, margin_mm: float) -> Ellipsoid:
        a, b, c = self.semi_axes_xyz_mm
        return Ellipsoid(self.center_xyz_mm, (a + margin_mm, b + margin_mm, c + margin_mm))

    def shifted(self, dx_mm: float) -> Ellipsoid:
        cx, cy, cz = self.center_xyz_mm
        return Ellipsoid((cx + dx_mm, cy, cz), self.semi_axes_xyz_mm)


class HeadFrame:
    """Head coordinates (mm) of a block of voxels, rotated by the head's in-plane yaw.

    The (y, x) planes are stored once and z is a column that broadcasts, so a 3D signed
    distance costs a few array operations.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, ramp_mm: float) -> None:
        self.x = x
        self.y = y
        self.z = z
        # A ramp one pixel wide reproduces the partial-volume blur of a soft-tissue kernel.
        self.ramp_mm = ramp_mm

    @classmethod
    def for_grid(cls, grid: Grid, center_xy_mm: tuple[float, float], yaw_deg: float) -> HeadFrame:
        x = grid.x_mm[None, :] - center_xy_mm[0]
        y = grid.y_mm[:, None] - center_xy_mm[1]
        cos_a = math.cos(math.radians(yaw_deg))
        sin_a = math.sin(math.radians(yaw_deg))
        return cls(
            (cos_a * x + sin_a * y).astype(np.float32),
            (-sin_a * x + cos_a * y).astype(np.float32),
            grid.z_mm[:, None, None],
            grid.pixel_mm,
        )

    def crop(
        self,
        rows: slice,
        columns: slice,
        z_mm: np.ndarray | None = None,
        slices: slice | None = None,
    ) -> HeadFrame:
        """Return the frame of a sub-block, optionally at other slice positions ``z_mm``."""
        z = self.z if slices is None else self.z[slices]
        if z_mm is not None:
            z = np.asarray(z_mm, dtype=np.float32)[:, None, None]
        return HeadFrame(self.x[rows, columns], self.y[rows, columns], z, self.ramp_mm)

    def ellipsoid_distance(self, shape: Ellipsoid) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) to the surface of ``shape``.

        The normalised radius minus one, scaled by the mean semi-axis, is exact for a sphere
        and within the ratio of the axes elsewhere, which is enough for a one-pixel ramp.
        """
        cx, cy, cz = shape.center_xyz_mm
        a, b, c = shape.semi_axes_xyz_mm
        plane = ((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2
        column = ((self.z - cz) / c) ** 2
        radius = np.sqrt(plane[None, :, :] + column)
        return (radius - 1.0) * np.float32((a + b + c) / 3.0)

    def fraction(self, distance_mm: np.ndarray, ramp_mm: float | None = None) -> np.ndarray:
        """Convert a signed distance into a partial-volume fraction in [0, 1]."""
        ramp = self.ramp_mm if ramp_mm is None else ramp_mm
        return np.clip(np.float32(0.5) - distance_mm / np.float32(ramp), 0.0, 1.0)


def blend(hu: np.ndarray, fraction: np.ndarray, value_hu: float | np.ndarray) -> None:
    """Mix ``value_hu`` into ``hu`` in place with weight ``fraction``."""
    hu += fraction * (value_hu - hu)


@dataclass(frozen=True)
class Anatomy:
    """The random parameters of one synthetic head."""

    center_xy_mm: tuple[float, float]
    yaw_deg: float
    brain: Ellipsoid
    csf_layer_mm: float
    skull_mm: float
    scalp_mm: float
    skull_hu: float
    gray_hu: float
    white_hu: float
    cortex_mm: float
    ventricle_scale: float
    sulcus_phase: float
    pineal_calcification_hu: float | None
    choroid_calcification_hu: float | None

    @property
    def vertex_z_mm(self) -> float:
        top = self.brain.center_xyz_mm[2] + self.brain.semi_axes_xyz_mm[2]
        return top + self.csf_layer_mm + self.skull_mm + self.scalp_mm

    def lentiform(self, side: int) -> Ellipsoid:
        """Lentiform nucleus of one hemisphere (side -1 right, +1 left)."""
        return Ellipsoid((side * 21.0, -2.0, 8.0), (6.5, 13.0, 9.0))

    def infarct_center(self, side: int) -> tuple[float, float, float]:
        return (side * 34.0, -4.0, 14.0)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw the anatomy of one synthetic head."""
    brain = Ellipsoid(
        (0.0, 6.0, 8.0),
        (
            float(rng.uniform(60.0, 67.0)),
            float(rng.uniform(78.0, 86.0)),
            float(rng.uniform(58.0, 64.0)),
        ),
    )
    return Anatomy(
        center_xy_mm=(float(rng.uniform(-4.0, 4.0)), float(rng.uniform(-6.0, 2.0))),
        yaw_deg=float(rng.uniform(-5.0, 5.0)),
        brain=brain,
        csf_layer_mm=float(rng.uniform(1.5, 3.0)),
        skull_mm=float(rng.uniform(5.0, 7.5)),
        scalp_mm=float(rng.uniform(4.0, 6.5)),
        skull_hu=float(rng.uniform(1100.0, 1500.0)),
        gray_hu=float(rng.uniform(37.0, 42.0)),
        white_hu=float(rng.uniform(23.0, 28.0)),
        cortex_mm=float(rng.uniform(2.5, 3.5)),
        ventricle_scale=float(rng.uniform(0.8, 1.3)),
        sulcus_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        pineal_calcification_hu=float(rng.uniform(200.0, 450.0)) if rng.random() < 0.8 else None,
        choroid_calcification_hu=float(rng.uniform(200.0, 400.0)) if rng.random() < 0.7 else None,
    )


@dataclass(frozen=True)
class MassEffect:
    """Displacement of midline structures away from a space-occupying lesion."""

    side: int = 0
    midline_shift_mm: float = 0.0


def ventricles(anatomy: Anatomy, mass_effect: MassEffect) -> list[Ellipsoid]:
    """Lateral ventricles (frontal horn and body, atrium) and the third ventricle."""
    scale = anatomy.ventricle_scale
    shift = -mass_effect.side * mass_effect.midline_shift_mm
    shapes: list[Ellipsoid] = []
    for side in (-1, 1):
        # A hematoma compresses the frontal horn and body of the ventricle on its own side.
        # The atrium, which contains the choroid plexus glomus, keeps its size.
        squeeze = 0.65 if mass_effect.side == side and mass_effect.midline_shift_mm > 0 else 1.0
        body = Ellipsoid(
            (side * 9.0 * scale + shift, -8.0, 22.0),
            (5.0 * scale * squeeze, 26.0 * scale, 8.0 * scale * squeeze),
        )
        atrium = Ellipsoid(
            (side * 15.0 * scale + shift, 24.0, 16.0),
            (6.5 * scale, 9.0 * scale, 7.0 * scale),
        )
        shapes.extend([body, atrium])
    shapes.append(Ellipsoid((shift, 4.0, 4.0), (1.8, 12.0, 7.0)))
    return shapes


def render_anatomy(
    frame: HeadFrame, anatomy: Anatomy, mass_effect: MassEffect
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the normal head in HU.

    Returns the HU volume, the signed distance (mm) to the inner table of the skull and the
    brain's partial-volume fraction, which the lesion and artefact code reuse.
    """
    cavity = anatomy.brain.grown(anatomy.csf_layer_mm)
    skull = cavity.grown(anatomy.skull_mm)
    head = skull.grown(anatomy.scalp_mm)

    shape_zyx = (frame.z.shape[0], frame.x.shape[0], frame.x.shape[1])
    hu = np.full(shape_zyx, AIR_HU, dtype=np.float32)
    blend(hu, frame.fraction(frame.ellipsoid_distance(head)), SCALP_HU)
    blend(hu, frame.fraction(frame.ellipsoid_distance(skull)), anatomy.skull_hu)

    cavity_distance_mm = frame.ellipsoid_distance(cavity)
    cavity_fraction = frame.fraction(cavity_distance_mm)
    _carve_skull_base(frame, cavity_fraction)
    blend(hu, cavity_fraction, CSF_HU)
    # The sphenoid sinus: air inside the skull base, below the sella.
    _blend_shape(frame, hu, Ellipsoid((0.0, -30.0, -38.0), (14.0, 11.0, 9.0)), AIR_HU)

    brain_distance_mm = brain_distance(frame, anatomy)
    brain_fraction = frame.fraction(brain_distance_mm) * cavity_fraction
    blend(hu, brain_fraction, anatomy.gray_hu)
    white_fraction = frame.fraction(brain_distance_mm + anatomy.cortex_mm, 3.0)
    blend(hu, white_fraction * brain_fraction, anatomy.white_hu)

    for side in (-1, 1):
        _blend_shape(frame, hu, anatomy.lentiform(side), anatomy.gray_hu - 1.0)
        _blend_shape(
            frame, hu, Ellipsoid((side * 9.0, 9.0, 8.0), (7.0, 10.0, 8.0)), anatomy.gray_hu - 1.0
        )
    for shape in ventricles(anatomy, mass_effect):
        _blend_shape(frame, hu, shape, CSF_HU)

    shift = -mass_effect.side * mass_effect.midline_shift_mm
    if anatomy.pineal_calcification_hu is not None:
        # The pineal gland sits in the quadrigeminal cistern, so CSF surrounds it.
        _blend_shape(frame, hu, Ellipsoid((shift, 26.0, 4.0), (7.0, 7.5, 5.0)), CSF_HU)
        _blend_shape(
            frame,
            hu,
            Ellipsoid((shift, 26.0, 4.0), (2.5, 3.0, 2.5)),
            anatomy.pineal_calcification_hu,
        )
    if anatomy.choroid_calcification_hu is not None:
        scale = anatomy.ventricle_scale
        for side in (-1, 1):
            glomus = Ellipsoid((side * 15.0 * scale + shift, 25.0, 16.0), (2.6, 3.0, 2.8))
            _blend_shape(frame, hu, glomus, anatomy.choroid_calcification_hu)

    return hu, cavity_distance_mm, brain_fraction


def brain_distance(frame: HeadFrame, anatomy: Anatomy) -> np.ndarray:
    """Signed distance (mm) to the pial surface, with sulci cut into it.

    Sulci are radial CSF clefts up to 9 mm deep whose pattern turns with height, so the cortex
    forms a gyral ribbon that cortical contrast staining can follow.
    """
    angle = np.arctan2(frame.y, frame.x)[None, :, :]
    turn = (frame.z * np.float32(0.07) + np.float32(anatomy.sulcus_phase)).astype(np.float32)
    sulcus_depth_mm = np.float32(9.0) * np.maximum(np.sin(angle * np.float32(9.0) + turn), 0.0) ** 4
    result: np.ndarray = frame.ellipsoid_distance(anatomy.brain) + sulcus_depth_mm
    return result


def _carve_skull_base(frame: HeadFrame, cavity_fraction: np.ndarray) -> None:
    """Replace the lower anterior cavity by the orbital roofs and the skull base.

    Below the floor of the anterior fossa the front of the ellipsoid is bone. The petrous
    ridges cross the middle of the posterior slices. The lowest slices therefore contain an
    open, irregular ring of bone, as real skull-base slices do.
    """
    z = frame.z[:, 0, 0]
    anterior = frame.fraction(frame.y + np.float32(18.0), 3.0)
    for k, z_mm in enumerate(z):
        if z_mm < -18.0:
            cavity_fraction[k] *= 1.0 - anterior
        if -42.0 < z_mm < -20.0:
            # Petrous ridges: two bars of bone from the lateral wall towards the clivus.
            for side in (-1, 1):
                distance = _segment_distance(
                    frame.x, frame.y, (side * 55.0, 0.0), (side * 14.0, 22.0)
                )
                cavity_fraction[k] *= 1.0 - frame.fraction(distance - np.float32(5.0))


def _segment_distance(
    x: np.ndarray, y: np.ndarray, start: tuple[float, float], end: tuple[float, float]
) -> np.ndarray:
    ax, ay = start
    bx, by = end
    length2 = (bx - ax) ** 2 + (by - ay) ** 2
    t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length2, 0.0, 1.0)
    return np.sqrt((x - ax - t * (bx - ax)) ** 2 + (y - ay - t * (by - ay)) ** 2)


def _blend_shape(frame: HeadFrame, hu: np.ndarray, shape: Ellipsoid, value_hu: float) -> None:
    """Blend a small ellipsoid, computing only the slices it reaches."""
    cz = shape.center_xyz_mm[2]
    c = shape.semi_axes_xyz_mm[2]
    z = frame.z[:, 0, 0]
    slices = np.nonzero(np.abs(z - cz) <= c + 5.0)[0]
    if slices.size == 0:
        return
    k0, k1 = int(slices[0]), int(slices[-1]) + 1
    sub = frame.crop(slice(None), slice(None), slices=slice(k0, k1))
    blend(hu[k0:k1], sub.fraction(sub.ellipsoid_distance(shape)), value_hu)
