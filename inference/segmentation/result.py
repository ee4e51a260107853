"""Settings and results of hyperdensity segmentation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from inference.volume import Note

Compartment = Literal["parenchymal", "subarachnoid", "intraventricular"]


@dataclass(frozen=True)
class SegmentationConfig:
    """Thresholds of the hyperdensity segmentation; every HU value is on the rescaled image.

    The default window starts at 50 HU, above gray matter (35-45 HU) and at the low end of
    acute blood (50-90 HU), so hemorrhage and contrast staining (often above 90 HU) both fall
    inside it. Calcifications above ``calcification_min_hu`` that are small and lie in CSF or
    on the midline (pineal gland, choroid plexus) are left out.
    """

    low_hu: float = 50.0
    high_hu: float = 1000.0
    # Voxels at or above this value, alone, count even when the smoothed image is below
    # ``low_hu``, so a lesion of one to a few voxels is still found.
    focus_min_hu: float = 65.0
    bone_hu: float = 300.0
    # Beam hardening makes the brain next to the inner table look denser (an estimate: up to
    # about 20 HU within 1-2 mm), so candidates this close to bone are ignored.
    bone_margin_mm: float = 2.0
    min_volume_ml: float = 0.02
    # In-plane box smoothing width before thresholding; it is at most one pixel wide when
    # pixels are coarser than this.
    smoothing_mm: float = 2.0
    # Place each lesion's border at half the contrast between its core and its surroundings,
    # so the border does not move with the lesion's density.
    refine_borders: bool = True
    # Split a lesion whose voxels form two clearly separate density modes (staining against
    # blood) into a denser and a less dense lesion; see ``inference.segmentation.mixed``.
    split_two_densities: bool = True
    calcification_min_hu: float = 100.0
    calcification_max_ml: float = 0.5
    calcification_csf_fraction: float = 0.25
    midline_band_mm: float = 6.0
    # The choroid plexus of the atria and the pineal gland lie deep in the brain. A dense
    # focus in CSF nearer the surface than this is taken to be in a sulcus and is kept.
    calcification_min_depth_mm: float = 15.0
    csf_max_hu: float = 12.0
    # Redraw each lesion's border with the learned refiner (``inference.segmentation.refine``)
    # when its weights file is present. Off by default: on the default cohort's test split it
    # raised the share of lesions at Dice >= 0.9 by 6 points only (docs/benchmarks.md).
    refine_with_model: bool = False
    # Pixel size of the coarse grid on which the brain mask is built.
    brain_mask_grid_mm: float = 2.0

    def __post_init__(self) -> None:
        if not self.low_hu < self.high_hu:
            raise ValueError(
                f"SegmentationConfig: low_hu {self.low_hu} must be below high_hu {self.high_hu}"
            )
        if self.min_volume_ml < 0:
            raise ValueError(
                f"SegmentationConfig: min_volume_ml {self.min_volume_ml} is negative; use 0 to "
                "keep every lesion"
            )
        if self.bone_margin_mm < 0 or self.smoothing_mm < 0:
            raise ValueError("SegmentationConfig: bone_margin_mm and smoothing_mm must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Lesion:
    """One hyperdense lesion: label value in ``SegmentationResult.labels`` and its measures.

    ``bbox_zyx`` is (z0, y0, x0, z1, y1, x1) with exclusive ends. ``centroid_zyx_mm`` is the
    centroid's offset from voxel (0, 0, 0) along the array axes, and ``centroid_xyz_mm`` its
    patient (LPS) position. HU statistics leave out padding voxels.
    """

    label: int
    n_voxels: int
    volume_ml: float
    mean_hu: float
    max_hu: float
    p10_hu: float
    p50_hu: float
    p90_hu: float
    bbox_zyx: tuple[int, int, int, int, int, int]
    centroid_zyx_mm: tuple[float, float, float]
    centroid_xyz_mm: tuple[float, float, float]
    slices: tuple[int, ...]
    largest_slice: int
    compartment: Compartment
    # The label value in a user-supplied mask that this lesion came from, if any.
    source_value: int | None = None
    # The label of the other part of the same hyperdensity when the segmenter split it into a
    # denser and a less dense lesion (see ``inference.segmentation.mixed``), else None.
    paired_with: int | None = None

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["bbox_zyx"] = list(self.bbox_zyx)
        result["centroid_zyx_mm"] = list(self.centroid_zyx_mm)
        result["centroid_xyz_mm"] = list(self.centroid_xyz_mm)
        result["slices"] = list(self.slices)
        return result


@dataclass
class SegmentationResult:
    """Lesion label image (int32, 0 = background, lesion i has label i), brain mask and lesions."""

    labels: np.ndarray
    brain_mask: np.ndarray
    lesions: list[Lesion]
    notes: list[Note] = field(default_factory=list)
    source: Literal["automatic", "user_mask"] = "automatic"
    config: SegmentationConfig | None = None
    # Voxels whose label the learned refiner changed, as flat indices into ``labels`` and
    # their threshold labels; None when the refiner did not run or changed nothing.
    threshold_changes: tuple[np.ndarray, np.ndarray] | None = None
    refined: bool = False

    def threshold_labels(self) -> np.ndarray:
        """Return the label image as the threshold segmenter drew it, before the refiner.

        Returns ``labels`` itself when the refiner changed nothing.
        """
        if self.threshold_changes is None or self.threshold_changes[0].size == 0:
            return self.labels
        indices, values = self.threshold_changes
        result = self.labels.copy()
        result.reshape(-1)[indices] = values
        return result

    @property
    def total_volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))

    @property
    def is_empty(self) -> bool:
        return not self.lesions

    def hyperdensity_labels(self) -> tuple[np.ndarray, list[int]]:
        """Return the threshold label image with each split pair joined, and its label values.

        Both parts of a split hyperdensity take the lower of their two labels. Case features
        for the classifiers are read from whole hyperdensities, as the models were trained,
        while the lesion list and ``labels`` keep the two parts apart. The borders are the
        threshold segmenter's (``threshold_labels``), not the learned refiner's: the bundled
        models were trained on features of those borders. Returns ``labels`` itself when
        nothing was split or refined.
        """
        base = self.threshold_labels()
        joined = {
            lesion.label: min(lesion.label, lesion.paired_with)
            for lesion in self.lesions
            if lesion.paired_with is not None
        }
        values = sorted({joined.get(lesion.label, lesion.label) for lesion in self.lesions})
        if not any(old != new for old, new in joined.items()):
            return base, values
        lookup = np.arange(int(base.max()) + 1, dtype=base.dtype)
        for old, new in joined.items():
            lookup[old] = new
        merged: np.ndarray = lookup[base]
        return merged, values

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_lesions": len(self.lesions),
            "total_volume_ml": round(self.total_volume_ml, 4),
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "brain_voxels": int(np.count_nonzero(self.brain_mask)),
            "notes": [note.to_dict() for note in self.notes],
            "refined": self.refined,
            "config": None if self.config is None else self.config.to_dict(),
        }
