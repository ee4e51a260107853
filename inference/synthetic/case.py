"""One synthetic case in memory: baseline and follow-up HU volumes with the true lesion masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.synthetic.lesions import (
    HARD_REASONS,
    CaseLabel,
    ComponentType,
    Findings,
    LesionSpec,
    apply_infarct,
    apply_lesion,
    sample_findings,
)
from inference.synthetic.phantom import (
    Anatomy,
    Grid,
    HeadFrame,
    make_grid,
    render_anatomy,
    sample_anatomy,
)
from inference.volume import Volume

CASE_LABELS: tuple[CaseLabel, ...] = ("HT", "CE", "HT+CE", "none")

# Image noise (standard deviation, HU) by matrix: an estimate for a routine 5 mm soft-tissue
# head reconstruction over a 230 mm field. Smaller pixels at the same dose are noisier.
NOISE_SD_HU = {256: 4.0, 512: 5.5}


@dataclass(frozen=True)
class TrueLesion:
    """One drawn hyperdense component and its label value in the true mask."""

    label: int
    component_type: ComponentType
    pattern: str
    compartment: str
    volume_ml: float
    baseline_density_hu: float
    follow_up_density_hu: float | None

    @property
    def persists(self) -> bool:
        return self.follow_up_density_hu is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "component_type": self.component_type,
            "pattern": self.pattern,
            "compartment": self.compartment,
            "volume_ml": round(self.volume_ml, 4),
            "baseline_density_hu": round(self.baseline_density_hu, 1),
            "follow_up_density_hu": (
                None if self.follow_up_density_hu is None else round(self.follow_up_density_hu, 1)
            ),
            "persists_on_follow_up": self.persists,
        }


@dataclass
class SyntheticCase:
    """Arrays of one case; nothing is written to disk."""

    label: CaseLabel
    hard_reason: str | None
    grid: Grid
    baseline_hu: np.ndarray
    follow_up_hu: np.ndarray
    true_labels: np.ndarray
    lesions: list[TrueLesion]
    baseline_hours: float
    follow_up_hours: float
    side: str
    midline_shift_mm: float
    notes: dict[str, Any] = field(default_factory=dict)

    def baseline_volume(self) -> Volume:
        return self._volume(self.baseline_hu)

    def follow_up_volume(self) -> Volume:
        return self._volume(self.follow_up_hu)

    def _volume(self, hu: np.ndarray) -> Volume:
        return Volume(
            hu=hu,
            spacing_zyx_mm=self.grid.spacing_zyx_mm,
            origin_xyz_mm=self.grid.origin_xyz_mm,
            direction=np.eye(3),
            sop_instance_uids=[],
        )


def generate_case_volume(
    label: CaseLabel = "HT",
    *,
    seed: int | tuple[int, ...] = 0,
    matrix: int = 256,
    hard_reason: str | None = None,
    n_slices: int | None = None,
    slice_mm: float = 5.0,
) -> SyntheticCase:
    """Generate one case's baseline and follow-up volumes and true masks, without writing.

    ``seed`` fixes every random draw, so the same arguments give identical arrays. By default
    28-32 slices of 5 mm cover the head; ``n_slices`` and ``slice_mm`` set another stack, which
    ends just above the vertex.
    ``hard_reason`` is one of ``HARD_REASONS`` or None. ``label`` "none" gives a post-
    thrombectomy head with an infarct and no hyperdensity.
    """
    if label not in CASE_LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(CASE_LABELS)}")
    if hard_reason is not None and hard_reason not in HARD_REASONS:
        raise ValueError(f"hard_reason {hard_reason!r} is not one of {', '.join(HARD_REASONS)}")
    if matrix not in (256, 512):
        raise ValueError(f"matrix {matrix} is not supported; use 256 or 512")
    entropy = list(seed) if isinstance(seed, tuple) else [seed]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))

    anatomy = sample_anatomy(rng)
    baseline_hours = float(rng.uniform(0.5, 6.0))
    follow_up_hours = float(rng.uniform(24.0, 72.0))
    follow_up_days = (follow_up_hours - baseline_hours) / 24.0
    findings = sample_findings(rng, anatomy, label, hard_reason, follow_up_days)
    if label == "none":
        findings = Findings(findings.infarct, (), findings.mass_effect)

    drawn_slices = int(rng.integers(28, 33))
    if n_slices is None:
        n_slices = drawn_slices
    # Cover from the skull base to just above the vertex.
    top_mm = anatomy.vertex_z_mm + 2.0
    first_z_mm = round(top_mm - slice_mm * (n_slices - 1), 1)
    grid = make_grid(matrix, n_slices, first_z_mm=first_z_mm, slice_mm=slice_mm)
    frame = HeadFrame.for_grid(grid, anatomy.center_xy_mm, anatomy.yaw_deg)

    normal_hu, cavity_distance_mm, brain_fraction = render_anatomy(
        frame, anatomy, findings.mass_effect
    )
    _add_beam_hardening(frame, normal_hu, cavity_distance_mm, rng)

    true_labels = np.zeros(grid.shape_zyx, dtype=np.int16)
    baseline_hu = normal_hu.copy()
    follow_up_hu = normal_hu
    del normal_hu
    apply_infarct(
        frame, baseline_hu, brain_fraction, findings.infarct, findings.infarct.baseline_delta_hu
    )
    apply_infarct(
        frame, follow_up_hu, brain_fraction, findings.infarct, findings.infarct.follow_up_delta_hu
    )

    slice_mm = grid.spacing_zyx_mm[0]
    for index, spec in enumerate(findings.lesions, start=1):
        apply_lesion(
            frame,
            anatomy,
            baseline_hu,
            true_labels,
            index,
            spec,
            spec.density_hu,
            slice_mm,
            spec.edema_hu,
        )
        if spec.follow_up_density_hu is not None:
            # Edema around a hematoma peaks in the first days, so it is deeper on follow-up.
            apply_lesion(
                frame,
                anatomy,
                follow_up_hu,
                None,
                index,
                spec,
                spec.follow_up_density_hu,
                slice_mm,
                spec.edema_hu * 1.3,
            )

    noise_sd_hu = NOISE_SD_HU[matrix]
    for hu in (baseline_hu, follow_up_hu):
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sd_hu)

    lesions = _true_lesions(findings.lesions, true_labels, grid)
    return SyntheticCase(
        label=label,
        hard_reason=hard_reason,
        grid=grid,
        baseline_hu=baseline_hu,
        follow_up_hu=follow_up_hu,
        true_labels=true_labels,
        lesions=lesions,
        baseline_hours=round(baseline_hours, 2),
        follow_up_hours=round(follow_up_hours, 2),
        side="left" if findings.infarct.side > 0 else "right",
        midline_shift_mm=round(findings.mass_effect.midline_shift_mm, 2),
        notes={"anatomy": _anatomy_summary(anatomy)},
    )


def _add_beam_hardening(
    frame: HeadFrame, hu: np.ndarray, cavity_distance_mm: np.ndarray, rng: np.random.Generator
) -> None:
    """Add the hyperdense band that beam hardening leaves along the inner table.

    The band decays over about 1.5 mm and is stronger in the posterior fossa and skull base,
    where the bone is thickest.
    """
    amplitude_hu = float(rng.uniform(6.0, 14.0))
    z = frame.z[:, 0, 0]
    per_slice = np.where(z < -15.0, amplitude_hu * 1.8, amplitude_hu).astype(np.float32)
    inside = np.minimum(cavity_distance_mm, 0.0)
    band = np.exp(inside / np.float32(1.5)) * (cavity_distance_mm < 0)
    hu += per_slice[:, None, None] * band


def _true_lesions(
    specs: tuple[LesionSpec, ...], labels: np.ndarray, grid: Grid
) -> list[TrueLesion]:
    counts = np.bincount(labels.ravel(), minlength=len(specs) + 1)
    return [
        TrueLesion(
            label=index,
            component_type=spec.component_type,
            pattern=spec.pattern,
            compartment=spec.compartment,
            volume_ml=float(counts[index]) * grid.voxel_volume_ml,
            baseline_density_hu=spec.density_hu,
            follow_up_density_hu=spec.follow_up_density_hu,
        )
        for index, spec in enumerate(specs, start=1)
    ]


def _anatomy_summary(anatomy: Anatomy) -> dict[str, Any]:
    return {
        "yaw_deg": round(anatomy.yaw_deg, 2),
        "center_xy_mm": [round(v, 3) for v in anatomy.center_xy_mm],
        "pineal_calcification": anatomy.pineal_calcification_hu is not None,
        "choroid_calcification": anatomy.choroid_calcification_hu is not None,
    }
