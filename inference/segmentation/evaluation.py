"""Overlap between a segmentation and true lesion masks (Dice), per lesion and per class.

Rule for a "true lesion": one label value of the true mask, with all its voxels. The
synthetic generator writes each lesion it draws with its own value (1..n). A lesion can fall
apart into several connected pieces on the 5 mm grid (a cluster of petechiae, a cortical
ribbon cut by a sulcus), and those pieces are still one lesion.

Matching: each predicted lesion (one label value of the segmentation) is assigned to the true
lesion it shares the most voxels with, the lower label value on a tie. A true lesion is
compared with the union of the predicted lesions assigned to it, so everything the segmenter
drew over that lesion counts, and a missed lesion scores 0. A predicted lesion that reaches a
few voxels into a neighbouring true lesion is not counted against that neighbour. When the
segmenter draws one lesion over two touching true lesions, that lesion counts for the one it
covers most, and the other true lesion is scored against the predicted lesions assigned to it,
if any.

Two different true lesions whose voxels touch (an HT core with a CE cap, a sulcal and a
cortical staining side by side) stay two lesions. Such lesions are flagged
(``touching_label_values``), and the Dice of the touching group taken as one hyperdensity is
given too (``group_dice``), so that a report can show both figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.segmentation.measures import CONNECTIVITY


@dataclass(frozen=True)
class LesionDice:
    """Dice of one true lesion (one label value of the true mask) against the segmentation."""

    true_volume_ml: float
    predicted_volume_ml: float
    dice: float
    # The lesion's label value in the true mask, as a one-element tuple.
    true_label_values: tuple[int, ...] = ()
    # Other true lesions that touch this one (26-connected), directly or through each other.
    touching_label_values: tuple[int, ...] = ()
    # Dice of this lesion and the lesions touching it, taken together, against the predicted
    # lesions assigned to any of them. It equals ``dice`` when nothing touches.
    group_dice: float = 0.0
    # Connected pieces of the lesion's own voxels.
    n_pieces: int = 1


def dice_coefficient(first: np.ndarray, second: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(np.count_nonzero(first)) + int(np.count_nonzero(second))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(first & second)) / total


def lesion_dice(
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    voxel_volume_ml: float,
    min_volume_ml: float = 0.5,
) -> list[LesionDice]:
    """Dice per true lesion of at least ``min_volume_ml``, in label order.

    ``true_labels`` holds one value per true lesion (0 outside); a binary mask is one lesion.
    ``predicted_labels`` holds one value per predicted lesion. See the module docstring for
    the matching rule.
    """
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(
            f"true mask shape {true_labels.shape} differs from the segmentation's "
            f"{predicted_labels.shape}; resample one onto the other's grid first"
        )
    values = [int(value) for value in np.unique(true_labels) if value > 0]
    if not values:
        return []
    objects = ndimage.find_objects(true_labels.astype(np.int32, copy=False))
    neighbours = {value: _touching(true_labels, objects[value - 1], value) for value in values}
    assigned = _assign_predicted(true_labels, predicted_labels)
    results: list[LesionDice] = []
    for value in values:
        region = objects[value - 1]
        assert region is not None
        truth = true_labels == value
        true_volume_ml = int(np.count_nonzero(truth)) * voxel_volume_ml
        if true_volume_ml < min_volume_ml:
            continue
        predicted = _assigned_mask(predicted_labels, assigned, [value])
        group = _group(value, neighbours)
        dice = dice_coefficient(truth, predicted)
        if len(group) > 1:
            group_truth = np.isin(true_labels, group)
            group_predicted = _assigned_mask(predicted_labels, assigned, group)
            group_dice = dice_coefficient(group_truth, group_predicted)
        else:
            group_dice = dice
        results.append(
            LesionDice(
                true_volume_ml=round(true_volume_ml, 4),
                predicted_volume_ml=round(int(np.count_nonzero(predicted)) * voxel_volume_ml, 4),
                dice=dice,
                true_label_values=(value,),
                touching_label_values=tuple(other for other in group if other != value),
                group_dice=group_dice,
                n_pieces=int(ndimage.label(truth[region], structure=CONNECTIVITY)[1]),
            )
        )
    return results


def _assign_predicted(true_labels: np.ndarray, predicted_labels: np.ndarray) -> dict[int, int]:
    """Map each predicted label value to the true label value it shares the most voxels with.

    Ties go to the lower true label value. Predicted lesions that overlap no true lesion are
    left out.
    """
    both = (true_labels > 0) & (predicted_labels > 0)
    if not both.any():
        return {}
    pairs, counts = np.unique(
        np.stack([predicted_labels[both].astype(np.int64), true_labels[both].astype(np.int64)]),
        axis=1,
        return_counts=True,
    )
    assigned: dict[int, int] = {}
    best: dict[int, int] = {}
    # np.unique sorts the pairs by predicted value, then true value, so on a tie the lower
    # true value is seen first and kept.
    for (predicted, true), count in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        if count > best.get(predicted, 0):
            best[predicted] = count
            assigned[predicted] = true
    return assigned


def _assigned_mask(
    predicted_labels: np.ndarray, assigned: dict[int, int], true_values: list[int]
) -> np.ndarray:
    """Union of the predicted lesions assigned to any of ``true_values``."""
    found = [predicted for predicted, true in assigned.items() if true in true_values]
    if not found:
        return np.zeros(predicted_labels.shape, dtype=bool)
    return np.isin(predicted_labels, found)


def _touching(true_labels: np.ndarray, region: tuple[slice, ...] | None, value: int) -> set[int]:
    """Other label values within one voxel (26-connected) of lesion ``value``."""
    assert region is not None
    grown = tuple(
        slice(max(0, r.start - 1), min(n, r.stop + 1))
        for r, n in zip(region, true_labels.shape, strict=True)
    )
    local = true_labels[grown]
    ring = ndimage.binary_dilation(local == value, CONNECTIVITY)
    return {int(other) for other in np.unique(local[ring]) if other > 0 and other != value}


def _group(value: int, neighbours: dict[int, set[int]]) -> list[int]:
    """Label values connected to ``value`` through touching lesions, sorted."""
    group = {value}
    pending = [value]
    while pending:
        for other in neighbours[pending.pop()]:
            if other not in group:
                group.add(other)
                pending.append(other)
    return sorted(group)


def summarize_dice(records: Iterable[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Count, mean, median and minimum Dice per class from (class, dice) pairs."""
    by_class: dict[str, list[float]] = {}
    for label, dice in records:
        by_class.setdefault(label, []).append(dice)
    return {
        label: {
            "n_lesions": float(len(values)),
            "mean": float(np.mean(values)),
            "median": float(np.median(values)),
            "min": float(np.min(values)),
        }
        for label, values in sorted(by_class.items())
    }
