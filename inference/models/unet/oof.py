"""Out-of-fold case probabilities of the slice U-Net, for stacking it in the hybrid model.

A stacker must learn from base-model outputs on cases that model did not train on. For the
U-Net that means one network per cross-validation fold: each fold trains a fresh U-Net on the
other folds' cases and predicts the held-out cases. The folds come from the caller, so the
U-Net can use exactly the splits of the radiomics models' out-of-fold probabilities.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.models.determinism import MAX_SEED
from inference.models.unet.prediction import predict_unet
from inference.models.unet.slices import CLASSES, UNetConfig
from inference.models.unet.training import TrainingCase, train_unet

logger = logging.getLogger(__name__)


def fold_seed(seed: int, fold: int) -> int:
    """Return the training seed of fold ``fold`` (0-based): distinct per fold, reproducible."""
    return (seed + 1 + fold) % (MAX_SEED + 1)


@dataclass
class UNetOutOfFold:
    """Held-out case probabilities from one U-Net per fold, and how they were made.

    ``probabilities`` has one row per case (in the order of the cases passed in) and columns
    in ``classes`` order. ``fold_of_case`` gives the fold in which each case was held out.
    """

    probabilities: np.ndarray
    fold_of_case: list[int]
    fold_seeds: list[int]
    best_epochs: list[int]
    config: UNetConfig
    classes: tuple[str, ...] = CLASSES
    seconds: float = 0.0
    fold_seconds: list[float] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        """Describe the run for a model's registered parameters (JSON-compatible)."""
        return {
            "folds": len(self.fold_seeds),
            "max_epochs": self.config.max_epochs,
            "best_epochs": list(self.best_epochs),
            "fold_seeds": list(self.fold_seeds),
            "image_size": self.config.image_size,
            "validation_fraction": self.config.validation_fraction,
            "seconds": round(self.seconds, 2),
            "fold_seconds": [round(value, 2) for value in self.fold_seconds],
        }


def _check_folds(folds: Sequence[tuple[np.ndarray, np.ndarray]], case_count: int) -> np.ndarray:
    if len(folds) < 2:
        raise ValueError(f"out-of-fold U-Net probabilities need at least 2 folds; got {len(folds)}")
    held_out = np.full(case_count, -1, dtype=np.int64)
    for number, (train_index, test_index) in enumerate(folds):
        if len(train_index) == 0 or len(test_index) == 0:
            raise ValueError(
                f"fold {number} has {len(train_index)} training and {len(test_index)} held-out "
                "cases; every fold needs both"
            )
        if np.intersect1d(train_index, test_index).size:
            raise ValueError(f"fold {number}: its training and held-out cases overlap")
        if np.any(held_out[test_index] >= 0):
            raise ValueError(
                f"fold {number}: a held-out case is already held out by an earlier fold"
            )
        held_out[test_index] = number
    if np.any(held_out < 0):
        missing = np.flatnonzero(held_out < 0).tolist()
        raise ValueError(f"cases {missing} are held out by no fold; pass a partition of the cases")
    return held_out


def out_of_fold_probabilities(
    cases: Sequence[TrainingCase],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    config: UNetConfig,
    seed: int,
) -> UNetOutOfFold:
    """Train one U-Net per fold on its training cases and predict its held-out cases.

    ``folds`` is a list of (training indices, held-out indices) that holds out every case
    exactly once, such as ``StratifiedKFold.split`` gives. Fold ``k`` trains with seed
    ``fold_seed(seed, k)``, so the same cases, folds, config, seed, thread count and library
    versions give the same probabilities. Each fold keeps ``config.validation_fraction`` of its training cases for
    early stopping, as the final U-Net does.
    """
    held_out = _check_folds(folds, len(cases))
    started = time.perf_counter()
    probabilities = np.full((len(cases), len(CLASSES)), np.nan)
    seeds: list[int] = []
    best_epochs: list[int] = []
    fold_seconds: list[float] = []
    for number, (train_index, test_index) in enumerate(folds):
        fold_started = time.perf_counter()
        seeds.append(fold_seed(seed, number))
        logger.info(
            "Out-of-fold U-Net %d of %d: training on %d cases, predicting %d",
            number + 1,
            len(folds),
            len(train_index),
            len(test_index),
        )
        trained = train_unet([cases[int(index)] for index in train_index], config, seeds[-1])
        best_epochs.append(trained.best_epoch)
        for index in test_index:
            output = predict_unet(cases[int(index)].volume, trained)
            probabilities[int(index)] = [output.probabilities[name] for name in CLASSES]
        fold_seconds.append(time.perf_counter() - fold_started)
        logger.info(
            "Out-of-fold U-Net %d of %d finished in %.1f s (best epoch %d)",
            number + 1,
            len(folds),
            fold_seconds[-1],
            trained.best_epoch,
        )
    return UNetOutOfFold(
        probabilities=probabilities,
        fold_of_case=held_out.tolist(),
        fold_seeds=seeds,
        best_epochs=best_epochs,
        config=config,
        seconds=time.perf_counter() - started,
        fold_seconds=fold_seconds,
    )
