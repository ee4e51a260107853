"""A learned refiner of the hyperdensity borders drawn by the threshold segmenter.

The threshold segmenter (``inference.segmentation.hyperdensity``) draws each border at half
the contrast between a lesion and its surroundings, voxel by voxel. Faint petechiae, faint
cortical ribbons and the end slices of a lesion lie where noise and partial volume put voxels
on the wrong side of any threshold. The refiner decides each voxel near a lesion's border from
its neighbourhood instead. A small multilayer perceptron returns the probability that the voxel
is lesion (features in ``FEATURE_NAMES``). Per voxel, it reads the HU, its 3 x 3 in-plane
minimum and maximum, in-plane Gaussian smoothings at three scales, the smoothed neighbouring
slices, the in-plane signed distance to the threshold border, and whether the neighbouring
slices hold the lesion at the same position. Per lesion, it reads the level, peak, background,
width and volume.

Only a band around each lesion is decided: voxels within ``BAND_MM`` in-plane of it, in its
slices and one slice above and below, less its core (voxels more than ``CORE_MM`` inside its
border), which stays lesion. Of the voxels at probability 0.5 or more, the connected pieces
that touch the threshold lesion are kept. Two kinds of lesion keep their threshold borders:
the two parts of a hyperdensity split into two densities (``Lesion.paired_with``), and dense
thin components, whose border the threshold segmenter takes from their peak. On those the
refiner lowered the Dice (staining caps on the seed 777 cohort, dense cortical ribbons of the
in-memory CE cases).

``SegmentationConfig.refine_with_model`` turns the refiner on; it is off by default. The
weights are trained on the synthetic generator's true masks with ``python -m inference
train-refiner OUT`` (``train_refiner``) and shipped as ``refiner-v1.json`` next to this
module. The file is plain JSON (no pickle), and numpy evaluates the network in float32, so the
same input gives the same mask.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from inference.segmentation.measures import CONNECTIVITY

logger = logging.getLogger(__name__)

REFINER_FORMAT = "ceht-border-refiner"
REFINER_VERSION = 1
DEFAULT_REFINER_PATH = Path(__file__).with_name("refiner-v1.json")

# In-plane reach of the decided band outside a lesion's threshold border (mm).
BAND_MM = 3.0
# Voxels farther than this inside the threshold border are kept as lesion without a decision.
CORE_MM = 1.5
# Lesions of fewer voxels keep their threshold mask.
MIN_VOXELS = 8
# In-plane Gaussian scales (mm) of the smoothed features.
SMOOTHING_MM = (0.7, 1.5, 3.0)
# Signed distances are clipped to this many millimetres.
DISTANCE_CLIP_MM = 8.0
# The lesion's surroundings are read in a ring this far out (mm): inner, outer.
RING_MM = (1.5, 4.0)

FEATURE_NAMES = (
    "hu",
    "smooth_0",
    "smooth_1",
    "smooth_2",
    "above",
    "below",
    "fraction_raw",
    "fraction_0",
    "fraction_1",
    "fraction_above",
    "fraction_below",
    "signed_distance_mm",
    "lesion_above",
    "lesion_below",
    "level_hu",
    "background_hu",
    "brain_fraction",
    "local_min",
    "local_max",
    "half_width_mm",
    "log_volume_ml",
    "peak_hu",
    "fraction_peak_0",
)


@dataclass(frozen=True)
class Refiner:
    """A trained multilayer perceptron (ReLU hidden layers, logistic output)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    metadata: dict[str, Any]

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Probability of lesion for each row of ``features`` (n, len(FEATURE_NAMES))."""
        values = (features.astype(np.float32) - self.mean) / self.scale
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            values = values @ weight + bias
            if index < len(self.weights) - 1:
                np.maximum(values, np.float32(0.0), out=values)
        logits = values[:, 0]
        result: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFINER_FORMAT,
            "version": REFINER_VERSION,
            "features": list(FEATURE_NAMES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": [weight.tolist() for weight in self.weights],
            "biases": [bias.tolist() for bias in self.biases],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Refiner:
        if data.get("format") != REFINER_FORMAT or data.get("version") != REFINER_VERSION:
            raise ValueError(
                f"invalid border refiner file: format {data.get('format')!r} version "
                f"{data.get('version')!r}, expected {REFINER_FORMAT!r} version {REFINER_VERSION}"
            )
        if list(data.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError(
                "the border refiner file was trained on other features; train it again with "
                "python -m inference train-refiner"
            )
        weights = tuple(np.asarray(w, dtype=np.float32) for w in data["weights"])
        biases = tuple(np.asarray(b, dtype=np.float32) for b in data["biases"])
        if not weights or weights[0].shape[0] != len(FEATURE_NAMES) or weights[-1].shape[1] != 1:
            raise ValueError("the refiner's layers do not match its features")
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float32),
            scale=np.asarray(data["scale"], dtype=np.float32),
            weights=weights,
            biases=biases,
            metadata=dict(data.get("metadata", {})),
        )


def save_refiner(refiner: Refiner, path: str | Path) -> None:
    Path(path).write_text(json.dumps(refiner.to_dict(), separators=(",", ":")) + "\n")


def load_refiner(path: str | Path | None = None) -> Refiner | None:
    """Load the refiner at ``path`` (default: the shipped file); None when it is missing.

    A file that exists but cannot be read as a refiner raises ``ValueError``.
    """
    target = Path(path) if path is not None else DEFAULT_REFINER_PATH
    if path is None:
        return _load_default()
    return _read(target)


@lru_cache(maxsize=1)
def _load_default() -> Refiner | None:
    return _read(DEFAULT_REFINER_PATH)


def _read(path: Path) -> Refiner | None:
    if not path.is_file():
        logger.info("No border refiner at %s; the threshold borders are kept", path)
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the border refiner {path.name}: {error}") from error
    return Refiner.from_dict(data)


@dataclass
class LesionSamples:
    """The band voxels of one hyperdensity: features, their positions and the region."""

    features: np.ndarray
    positions: tuple[np.ndarray, ...]
    region: tuple[slice, slice, slice]
    core: np.ndarray
    lesion: np.ndarray


def lesion_samples(
    hu: np.ndarray,
    labels: np.ndarray,
    brain: np.ndarray,
    values: list[int],
    spacing_zyx_mm: tuple[float, float, float],
    box: tuple[slice, ...] | None = None,
) -> LesionSamples | None:
    """Features of the band voxels around the lesion made of label ``values``.

    ``box`` is the lesion's bounding box when the caller knows it; it is found otherwise.
    Returns None when the lesion has fewer than ``MIN_VOXELS`` voxels.
    """
    if box is None:
        mask = np.isin(labels, values)
        found = ndimage.find_objects(mask.astype(np.uint8))
        if not found or found[0] is None:
            return None
        box = found[0]
    pixel_mm = min(spacing_zyx_mm[1], spacing_zyx_mm[2])
    reach = int(math.ceil((RING_MM[1] + 3.0 * SMOOTHING_MM[-1]) / pixel_mm))
    region = (
        slice(max(0, box[0].start - 1), min(hu.shape[0], box[0].stop + 1)),
        slice(max(0, box[1].start - reach), min(hu.shape[1], box[1].stop + reach)),
        slice(max(0, box[2].start - reach), min(hu.shape[2], box[2].stop + reach)),
    )
    lesion = np.isin(labels[region], values)
    if np.count_nonzero(lesion) < MIN_VOXELS:
        return None
    raw = hu[region].astype(np.float32, copy=False)
    local_brain = brain[region]
    others = (labels[region] != 0) & ~lesion

    inside = _in_plane_distance(lesion, spacing_zyx_mm)
    outside = _in_plane_distance(~lesion, spacing_zyx_mm)
    signed = np.clip(outside - inside, -DISTANCE_CLIP_MM, DISTANCE_CLIP_MM)

    ring = (inside > RING_MM[0]) & (inside <= RING_MM[1]) & local_brain & ~others
    ring_values = raw[ring]
    if ring_values.size < 4:
        ring_values = raw[local_brain & ~lesion & ~others]
    if ring_values.size == 0:
        return None
    background = float(np.median(ring_values))
    deep = lesion & (outside > 1.0 + 1e-3 * pixel_mm)
    level = float(np.median(raw[deep] if np.count_nonzero(deep) >= 4 else raw[lesion]))
    contrast = max(level - background, 5.0)
    peak = float(np.percentile(raw[lesion], 95.0))
    peak_contrast = max(peak - background, 5.0)

    near = inside <= BAND_MM
    near |= _shift_z(near, 1) | _shift_z(near, -1)
    core = lesion & (outside > CORE_MM)
    band = near & local_brain & ~others & ~core
    positions = np.nonzero(band)
    if positions[0].size == 0:
        return LesionSamples(
            np.zeros((0, len(FEATURE_NAMES)), np.float32), positions, region, core, lesion
        )

    smooth = [
        ndimage.gaussian_filter(
            raw, (0.0, sigma / spacing_zyx_mm[1], sigma / spacing_zyx_mm[2]), mode="nearest"
        )
        for sigma in SMOOTHING_MM
    ]
    above = _shift_z(smooth[0], 1)
    below = _shift_z(smooth[0], -1)
    lesion_f = lesion.astype(np.float32)
    lesion_above = _shift_z(lesion_f, 1)
    lesion_below = _shift_z(lesion_f, -1)
    brain_fraction = ndimage.uniform_filter(
        local_brain.astype(np.float32),
        (1, *(2 * int(math.ceil(2.0 / s)) + 1 for s in spacing_zyx_mm[1:])),
        mode="nearest",
    )

    local_min = ndimage.minimum_filter(raw, size=(1, 3, 3), mode="nearest")
    local_max = ndimage.maximum_filter(raw, size=(1, 3, 3), mode="nearest")
    half_width = float(outside[lesion].max())
    volume_ml = float(np.count_nonzero(lesion)) * float(np.prod(spacing_zyx_mm)) / 1000.0

    def at(array: np.ndarray) -> np.ndarray:
        return array[positions].astype(np.float32)

    def fraction(array: np.ndarray) -> np.ndarray:
        return (at(array) - np.float32(background)) / np.float32(contrast)

    count = positions[0].size
    columns = [
        at(raw),
        at(smooth[0]),
        at(smooth[1]),
        at(smooth[2]),
        at(above),
        at(below),
        fraction(raw),
        fraction(smooth[0]),
        fraction(smooth[1]),
        fraction(above),
        fraction(below),
        at(signed),
        at(lesion_above),
        at(lesion_below),
        np.full(count, level, dtype=np.float32),
        np.full(count, background, dtype=np.float32),
        at(brain_fraction),
        at(local_min),
        at(local_max),
        np.full(count, half_width, dtype=np.float32),
        np.full(count, math.log(volume_ml), dtype=np.float32),
        np.full(count, peak, dtype=np.float32),
        (at(smooth[0]) - np.float32(background)) / np.float32(peak_contrast),
    ]
    return LesionSamples(np.stack(columns, axis=1), positions, region, core, lesion)


def _in_plane_distance(mask: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from each voxel to the nearest voxel of ``mask`` in its own slice."""
    result = np.full(mask.shape, DISTANCE_CLIP_MM, dtype=np.float32)
    for z in range(mask.shape[0]):
        plane = mask[z]
        if plane.all():
            result[z] = 0.0
        elif plane.any():
            distance = ndimage.distance_transform_edt(~plane, sampling=spacing_zyx_mm[1:])
            result[z] = np.minimum(distance, DISTANCE_CLIP_MM)
    return result


def _shift_z(array: np.ndarray, step: int) -> np.ndarray:
    """Value of the slice ``step`` above (+1) or below (-1); edges repeat their own slice."""
    result = np.empty_like(array)
    if step > 0:
        result[1:] = array[:-1]
        result[:1] = array[:1]
    else:
        result[:-1] = array[1:]
        result[-1:] = array[-1:]
    return result


def refined_mask(samples: LesionSamples, probability: np.ndarray) -> np.ndarray:
    """Build the lesion's refined mask on ``samples.region`` from the band's probabilities."""
    decided = samples.core.copy()
    decided[samples.positions] = probability >= 0.5
    pieces, count = ndimage.label(decided, structure=CONNECTIVITY)
    if count == 0:
        return samples.lesion.copy()
    touching = np.unique(pieces[samples.lesion & decided])
    touching = touching[touching > 0]
    if touching.size == 0:
        return samples.lesion.copy()
    result: np.ndarray = np.isin(pieces, touching)
    return result


def refine_labels(
    hu: np.ndarray,
    labels: np.ndarray,
    brain: np.ndarray,
    values: list[int],
    spacing_zyx_mm: tuple[float, float, float],
    refiner: Refiner,
    blocked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Redraw the border of each lesion of ``values`` in ``labels``, in place, with ``refiner``.

    ``values`` lists the label values to refine, largest lesion first. A lesion never takes
    voxels of another lesion or of ``blocked`` (calcifications, the band next to the skull). A
    refined mask that would touch none of the threshold lesion leaves it as it was. Returns the
    flat indices of the changed voxels and their previous values, which undo the change.
    """
    changed: list[np.ndarray] = []
    previous: list[np.ndarray] = []
    # Bounding boxes are read once: no lesion takes voxels of another, so each keeps its box.
    objects = ndimage.find_objects(labels)
    for value in values:
        if value > len(objects) or objects[value - 1] is None:
            continue
        box = objects[value - 1]
        samples = lesion_samples(hu, labels, brain, [value], spacing_zyx_mm, box)
        if samples is None:
            continue
        probability = (
            refiner.probability(samples.features)
            if samples.features.shape[0]
            else np.zeros(0, np.float32)
        )
        mask = refined_mask(samples, probability)
        local = labels[samples.region]
        mask &= (local == 0) | samples.lesion
        if blocked is not None:
            mask &= ~blocked[samples.region] | samples.lesion
        if not np.any(mask & samples.lesion):
            continue
        new_local = np.where(samples.lesion & ~mask, 0, local)
        new_local[mask] = value
        where = np.nonzero(new_local != local)
        if where[0].size == 0:
            continue
        offsets = [axis.start for axis in samples.region]
        changed.append(
            np.ravel_multi_index(
                tuple(index + offset for index, offset in zip(where, offsets, strict=True)),
                labels.shape,
            )
        )
        previous.append(local[where].copy())
        local[...] = new_local
    if not changed:
        return np.zeros(0, np.int64), np.zeros(0, labels.dtype)
    # A later lesion can take a voxel that an earlier one gave up, so a voxel can change
    # twice. Its first previous value is the threshold label.
    indices, first = np.unique(np.concatenate(changed), return_index=True)
    return indices, np.concatenate(previous)[first]


def hyperdensity_groups(lesions: list[Any]) -> list[list[int]]:
    """Label values of each hyperdensity (a split pair together), in the lesions' order."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    for lesion in lesions:
        if lesion.label in seen:
            continue
        values = [lesion.label]
        if lesion.paired_with is not None:
            values.append(int(lesion.paired_with))
        seen.update(values)
        groups.append(values)
    return groups


def study_samples(
    hu: np.ndarray,
    labels: np.ndarray,
    brain: np.ndarray,
    lesions: list[Any],
    spacing_zyx_mm: tuple[float, float, float],
    truth: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and true classes (1 = lesion) of every band voxel of one segmented study.

    NOTE: split pairs and dense thin components are sampled too, although
    ``segment_hyperdensities`` leaves them as drawn, because the shipped weights were trained so.
    """
    features: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for values in hyperdensity_groups(lesions):
        samples = lesion_samples(hu, labels, brain, values, spacing_zyx_mm)
        if samples is None or samples.features.shape[0] == 0:
            continue
        features.append(samples.features)
        targets.append((truth[samples.region][samples.positions] > 0).astype(np.int8))
    if not features:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros(0, np.int8)
    return np.concatenate(features), np.concatenate(targets)


def fit_refiner(
    features: np.ndarray,
    targets: np.ndarray,
    seed: int = 0,
    hidden: tuple[int, ...] = (32, 16),
    max_samples: int = 1_000_000,
    metadata: dict[str, Any] | None = None,
) -> Refiner:
    """Fit the network on band voxels (``study_samples``); deterministic for a given seed."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(seed)
    if features.shape[0] > max_samples:
        chosen = np.sort(rng.choice(features.shape[0], size=max_samples, replace=False))
        features, targets = features[chosen], targets[chosen]
    data = features.astype(np.float64)
    mean = data.mean(axis=0)
    scale = data.std(axis=0)
    scale[scale < 1e-6] = 1.0
    network = MLPClassifier(
        hidden_layer_sizes=hidden,
        activation="relu",
        alpha=1e-4,
        batch_size=512,
        learning_rate_init=1e-3,
        max_iter=40,
        random_state=seed,
        tol=1e-5,
        n_iter_no_change=5,
    )
    with warnings.catch_warnings():
        # The fixed number of epochs is part of the recipe; sklearn warns that it stopped there.
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        network.fit((data - mean) / scale, targets.astype(np.int64))
    return Refiner(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=tuple(np.asarray(w, dtype=np.float32) for w in network.coefs_),
        biases=tuple(np.asarray(b, dtype=np.float32) for b in network.intercepts_),
        metadata={
            "seed": seed,
            "hidden": list(hidden),
            "samples": int(data.shape[0]),
            "positive_fraction": round(float(targets.mean()), 4),
            "iterations": int(network.n_iter_),
            **(metadata or {}),
        },
    )


def train_refiner(cohort: Any, seed: int = 0) -> Refiner:
    """Train the refiner on the baseline studies of the ``train`` split of ``cohort``.

    ``cohort`` is a ``CohortManifest`` (``inference.synthetic.load_cohort``). Each study is
    read back from its DICOM files and segmented with the threshold borders. The band voxels
    of every lesion found are then labelled with the generator's true masks. Cases of the test
    split are never read.
    """
    from inference.dicom import load_study
    from inference.segmentation.hyperdensity import segment_hyperdensities
    from inference.segmentation.result import SegmentationConfig

    config = SegmentationConfig(refine_with_model=False)
    features: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    cases = [case for case in cohort.split("train") if case.label != "none"]
    for case in cases:
        volume, _scan = load_study(case.baseline_dir)
        result = segment_hyperdensities(volume, config)
        case_features, case_targets = study_samples(
            volume.hu,
            result.labels,
            result.brain_mask,
            result.lesions,
            volume.spacing_zyx_mm,
            case.true_labels(),
        )
        features.append(case_features)
        targets.append(case_targets)
        logger.info("%s: %d band voxels", case.code, case_targets.size)
    return fit_refiner(
        np.concatenate(features),
        np.concatenate(targets),
        seed=seed,
        metadata={
            "cohort_id": cohort.cohort_id,
            "split": "train",
            "cases": len(cases),
            "matrix": cohort.matrix,
        },
    )
