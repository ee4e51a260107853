"""Overlap between a segmentation and true lesion masks (Dice), per lesion and per class."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.segmentation.measures import CONNECTIVITY


@dataclass(frozen=True)
class LesionDice:
    """Dice of one true lesion (a connected part of the true mask) against the segmentation."""

    true_volume_ml: float
    predicted_volume_ml: float
    dice: float
    # Label values of the true mask inside the lesion (several for a mixed HT+CE lesion).
    true_label_values: tuple[int, ...] = ()


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
    """Dice per true lesion of at least ``min_volume_ml``.

    A true lesion is a connected part of the true mask, so the touching HT and CE components
    of a mixed lesion count as one. It is compared with the union of the predicted lesions
    that overlap it; a missed lesion scores 0.
    """
    pieces, count = ndimage.label(true_labels > 0, structure=CONNECTIVITY)
    results: list[LesionDice] = []
    for index, region in enumerate(ndimage.find_objects(pieces), start=1):
        if region is None:
            continue
        truth = pieces == index
        true_volume_ml = int(np.count_nonzero(truth)) * voxel_volume_ml
        if true_volume_ml < min_volume_ml:
            continue
        overlapping = np.unique(predicted_labels[truth])
        overlapping = overlapping[overlapping > 0]
        predicted = (
            np.isin(predicted_labels, overlapping) if overlapping.size else np.zeros_like(truth)
        )
        results.append(
            LesionDice(
                true_volume_ml=round(true_volume_ml, 4),
                predicted_volume_ml=round(int(np.count_nonzero(predicted)) * voxel_volume_ml, 4),
                dice=dice_coefficient(truth, predicted),
                true_label_values=tuple(
                    int(value) for value in np.unique(true_labels[region][truth[region]])
                ),
            )
        )
    return results


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
