"""Split a hyperdensity of two densities into its denser and its less dense part.

After thrombectomy, contrast staining (often above 90 HU) can lie against a hemorrhage of
50-90 HU. The segmenter outlines one continuous hyperdensity over both. Telling the two apart
is the clinical question, so a lesion whose voxels form two clearly separate density modes is
cut into two lesions, each with its own measures. A lesion of one density is left whole,
including its partial-volume border and end slices, which read lower than its core.

The border between the parts is drawn at half the contrast between the two modes, the rule the
outer border follows (a voxel belongs to the part that fills at least half of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.segmentation.measures import CONNECTIVITY

# Neither part may be smaller than this (mL): a mode of a few voxels is noise.
MIN_PART_ML = 0.1
# The two modes must lie at least this far apart (HU). Fitted to a simulated clot of one
# density with the synthetic generator's texture (up to 8 HU SD) and noise, the two Gaussians
# lay 5-15 HU apart (5th-95th percentile).
MIN_GAP_HU = 20.0
# Minimum Ashman's D, sqrt(2) * gap / sqrt(sd1^2 + sd2^2). At 2 the means lie two pooled
# standard deviations apart.
MIN_SEPARATION = 2.0
# The less dense part needs this many voxels, and this fraction of its voxels, whose six face
# neighbours all belong to the lesion (see ``dense_part``).
MIN_INTERIOR_VOXELS = 10
MIN_INTERIOR_FRACTION = 0.05
# Connected pieces of a part smaller than this fraction of its largest piece are noise.
_MIN_PIECE_FRACTION = 0.2
_EM_ITERATIONS = 60
_MIN_SD_HU = 1.0


@dataclass(frozen=True)
class TwoModes:
    """Two-component Gaussian mixture fitted to a lesion's densities (HU)."""

    low_mean: float
    high_mean: float
    low_sd: float
    high_sd: float
    high_weight: float

    @property
    def threshold_hu(self) -> float:
        """Half the contrast between the two modes."""
        return 0.5 * (self.low_mean + self.high_mean)

    @property
    def separation(self) -> float:
        """Ashman's D of the two modes."""
        gap = self.high_mean - self.low_mean
        return math.sqrt(2.0) * gap / math.sqrt(self.low_sd**2 + self.high_sd**2)

    def separated(self) -> bool:
        """Return True when the modes lie far enough apart to be two different tissues."""
        return self.high_mean - self.low_mean >= MIN_GAP_HU and self.separation >= MIN_SEPARATION


def fit_two_modes(values: np.ndarray) -> TwoModes | None:
    """Fit two Gaussians to ``values`` by expectation-maximisation, started from Otsu's split.

    Returns None when the values are too few or too uniform, or when one component empties.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 4 or float(np.ptp(values)) < 1.0:
        return None
    ordered = np.sort(values)
    # Otsu: the split that maximises the between-class variance.
    cumulative = np.cumsum(ordered)
    n = ordered.size
    counts = np.arange(1, n)
    low_means = cumulative[:-1] / counts
    high_means = (cumulative[-1] - cumulative[:-1]) / (n - counts)
    between = counts * (n - counts) * (high_means - low_means) ** 2
    cut = int(np.argmax(between)) + 1
    low, high = ordered[:cut], ordered[cut:]
    weight = high.size / n
    means = [float(low.mean()), float(high.mean())]
    sds = [max(_MIN_SD_HU, float(low.std())), max(_MIN_SD_HU, float(high.std()))]
    for _ in range(_EM_ITERATIONS):
        low_density = (1.0 - weight) * _normal_pdf(values, means[0], sds[0])
        high_density = weight * _normal_pdf(values, means[1], sds[1])
        total = low_density + high_density
        total[total <= 0.0] = 1e-300
        responsibility = high_density / total
        high_sum = float(responsibility.sum())
        low_sum = n - high_sum
        if high_sum < 1.0 or low_sum < 1.0:
            return None
        weight = high_sum / n
        means = [
            float(((1.0 - responsibility) * values).sum() / low_sum),
            float((responsibility * values).sum() / high_sum),
        ]
        low_variance = float(((1.0 - responsibility) * (values - means[0]) ** 2).sum()) / low_sum
        high_variance = float((responsibility * (values - means[1]) ** 2).sum()) / high_sum
        sds = [max(_MIN_SD_HU, math.sqrt(low_variance)), max(_MIN_SD_HU, math.sqrt(high_variance))]
    if means[0] > means[1]:
        return None
    return TwoModes(means[0], means[1], sds[0], sds[1], weight)


def _normal_pdf(values: np.ndarray, mean: float, sd: float) -> np.ndarray:
    scale = 1.0 / (sd * math.sqrt(2.0 * math.pi))
    result: np.ndarray = scale * np.exp(-0.5 * ((values - mean) / sd) ** 2)
    return result


def in_plane_disk() -> np.ndarray:
    """Return the 3 x 3 x 3 structuring element of a voxel and its four in-plane neighbours."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    return structure


def local_mean_inside(raw: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """Return the mean HU of each voxel's 3 x 3 in-plane neighbourhood, over lesion voxels only.

    A voxel on the lesion's outer border so takes the level of the lesion next to it and not
    that of the brain around it.
    """
    weight = ndimage.uniform_filter(lesion.astype(np.float32), (1, 3, 3), mode="constant")
    total = ndimage.uniform_filter(
        np.where(lesion, raw, np.float32(0.0)).astype(np.float32), (1, 3, 3), mode="constant"
    )
    result: np.ndarray = total / np.maximum(weight, np.float32(1e-6))
    return result


def dense_part(raw: np.ndarray, lesion: np.ndarray, voxel_volume_ml: float) -> np.ndarray | None:
    """Return the denser part of ``lesion`` when it contains two densities, else None.

    The modes are fitted to the in-plane local mean of the voxels that survive one in-plane
    erosion, which leaves out the partial-volume ring around the lesion. The end slices of a
    lesion of one density are still partial volume with the brain above or below and form a
    less dense mode of their own. Blood next to staining, by contrast, has voxels whose six
    face neighbours all belong to the lesion, so the less dense part must have such voxels.
    """
    min_voxels = max(8, int(math.ceil(MIN_PART_ML / voxel_volume_ml)))
    if np.count_nonzero(lesion) < 2 * min_voxels:
        return None
    smoothed = local_mean_inside(raw, lesion)
    in_plane_interior = ndimage.binary_erosion(lesion, in_plane_disk())
    if np.count_nonzero(in_plane_interior) < min_voxels:
        return None
    modes = fit_two_modes(smoothed[in_plane_interior])
    if modes is None or not modes.separated():
        return None

    interior = ndimage.binary_erosion(lesion, ndimage.generate_binary_structure(3, 1))
    light = in_plane_interior & (smoothed < np.float32(modes.threshold_hu))
    light_inside = light & interior
    inside_count = np.count_nonzero(light_inside)
    if inside_count < max(MIN_INTERIOR_VOXELS, MIN_INTERIOR_FRACTION * np.count_nonzero(light)):
        return None

    # Less dense voxels belong to the less dense part where they connect to its interior
    # voxels. Elsewhere (an end slice of the denser part) they are the denser part's partial
    # volume with the brain.
    # NOTE: where both parts end in the same slice, the denser part's end slice connects to
    # the less dense part's within that slice and goes to it. A rule that gave end-slice
    # voxels above the less dense mode to the denser part lowered the Dice of the synthetic
    # cohorts' split lesions, because a clot's texture (up to 8 HU SD) reaches that high too.
    pieces, _ = ndimage.label(light, structure=CONNECTIVITY)
    light_seed = _large_pieces(np.isin(pieces, np.unique(pieces[light_inside])))
    if light_seed is None:
        return None
    dense_seed = _large_pieces(in_plane_interior & ~light_seed)
    if dense_seed is None:
        return None
    # The in-plane border ring and the dropped pieces go to the nearer part, counted in voxel
    # steps, with ties to the less dense part.
    to_dense = ndimage.distance_transform_edt(~dense_seed)
    to_light = ndimage.distance_transform_edt(~light_seed)
    dense: np.ndarray = lesion & ~light_seed & (dense_seed | (to_dense < to_light))
    if np.count_nonzero(dense) < min_voxels or np.count_nonzero(lesion & ~dense) < min_voxels:
        return None
    return dense


def _large_pieces(mask: np.ndarray) -> np.ndarray | None:
    """Keep the connected pieces of ``mask`` that are not much smaller than its largest one."""
    pieces, count = ndimage.label(mask, structure=CONNECTIVITY)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(mask, pieces, index=np.arange(1, count + 1))
    result: np.ndarray = np.isin(
        pieces, 1 + np.flatnonzero(sizes >= _MIN_PIECE_FRACTION * sizes.max())
    )
    return result


def split_mixed_lesions(
    labels: np.ndarray, hu: np.ndarray, voxel_volume_ml: float
) -> list[tuple[int, int]]:
    """Give the denser part of every two-density lesion in ``labels`` a new label value.

    Works in place on a label image with lesion values > 0; negative values (calcifications
    marked by the segmenter) are left alone. Returns one (less dense, denser) pair of label
    values per lesion split; the less dense part keeps the lesion's value.
    """
    # find_objects skips values below 1 (scipy 1.17), so the calcifications need no copy of
    # the label image without them.
    objects = ndimage.find_objects(labels)
    next_value = len(objects) + 1
    pairs: list[tuple[int, int]] = []
    for value, region in enumerate(objects, start=1):
        if region is None:
            continue
        grown = tuple(
            slice(max(0, r.start - 1), min(n, r.stop + 1))
            for r, n in zip(region, labels.shape, strict=True)
        )
        local = labels[grown]
        lesion = local == value
        dense = dense_part(hu[grown], lesion, voxel_volume_ml)
        if dense is None:
            continue
        local[dense] = next_value
        pairs.append((value, next_value))
        next_value += 1
    return pairs
