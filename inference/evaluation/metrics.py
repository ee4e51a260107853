"""Classification metrics for the three-class HT / CE / HT+CE question.

Every result records its unit of analysis (patient, lesion or slice) and the rule that turned
finer-grained outputs into one prediction per unit, because the source study's specificities
(for example 97.0% = 32/33) imply more negatives than its 39 test patients, so part of its
figures were computed per lesion or per slice. Results are plain dataclasses whose ``to_dict``
returns JSON-safe values (NaN becomes ``None``) for the Django dashboards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)
from statsmodels.stats.proportion import proportion_confint

CLASS_LABELS: tuple[str, ...] = ("HT", "CE", "HT+CE")
Unit = Literal["patient", "lesion", "slice"]
CiMethod = Literal["wilson", "clopper-pearson"]

# statsmodels calls the Clopper-Pearson interval "beta".
_STATSMODELS_CI_METHOD = {"wilson": "wilson", "clopper-pearson": "beta"}


def json_safe(value: Any) -> Any:
    """Convert numpy scalars and arrays to Python types and NaN or infinity to ``None``."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class Proportion:
    """A proportion with its count and a two-sided 95% confidence interval."""

    successes: int
    total: int
    estimate: float
    ci_low: float
    ci_high: float
    ci_method: str

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def proportion_with_ci(successes: int, total: int, method: CiMethod = "wilson") -> Proportion:
    """Return ``successes / total`` with a Wilson or Clopper-Pearson 95% interval.

    An empty denominator gives NaN for the estimate and the interval, so a class absent from a
    test set shows as "not estimable" and not as 0%.
    """
    if total < 0 or successes < 0 or successes > total:
        raise ValueError(f"invalid proportion {successes}/{total}: need 0 <= successes <= total")
    if total == 0:
        return Proportion(successes, total, math.nan, math.nan, math.nan, method)
    low, high = proportion_confint(
        successes, total, alpha=0.05, method=_STATSMODELS_CI_METHOD[method]
    )
    return Proportion(successes, total, successes / total, float(low), float(high), method)


@dataclass(frozen=True)
class ClassMetrics:
    """One-vs-rest metrics of one class."""

    label: str
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    f1: float
    auc: float | None
    support: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "label": self.label,
                "sensitivity": self.sensitivity.to_dict(),
                "specificity": self.specificity.to_dict(),
                "ppv": self.ppv.to_dict(),
                "npv": self.npv.to_dict(),
                "f1": self.f1,
                "auc": self.auc,
                "support": self.support,
            }
        )


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one model on one set of cases, with the unit of analysis they count."""

    unit: Unit
    aggregation: str
    n: int
    labels: tuple[str, ...]
    accuracy: Proportion
    balanced_accuracy: float
    macro_sensitivity: float
    macro_specificity: float
    macro_f1: float
    macro_auc: float | None
    per_class: list[ClassMetrics]
    confusion: list[list[int]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "unit": self.unit,
                "aggregation": self.aggregation,
                "n": self.n,
                "labels": list(self.labels),
                "accuracy": self.accuracy.to_dict(),
                "balanced_accuracy": self.balanced_accuracy,
                "macro_sensitivity": self.macro_sensitivity,
                "macro_specificity": self.macro_specificity,
                "macro_f1": self.macro_f1,
                "macro_auc": self.macro_auc,
                "per_class": [item.to_dict() for item in self.per_class],
                "confusion_matrix": {
                    "rows": "true label",
                    "columns": "predicted label",
                    "counts": self.confusion,
                },
                "notes": list(self.notes),
            }
        )


def _encode(values: Sequence[str] | np.ndarray, labels: Sequence[str], name: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(value) for value in values} - set(index))
    if unknown:
        raise ValueError(f"{name} contains labels {unknown} outside the expected {list(labels)}")
    return np.array([index[str(value)] for value in values], dtype=np.int64)


def _check_probabilities(probabilities: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    array = np.asarray(probabilities, dtype=np.float64)
    if array.shape != (n, n_classes):
        raise ValueError(
            f"probabilities have shape {array.shape}; expected ({n}, {n_classes}), "
            "one column per class in label order"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("probabilities contain NaN or infinity; check the model output")
    return array


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    probabilities: np.ndarray | None = None,
    *,
    labels: Sequence[str] = CLASS_LABELS,
    unit: Unit = "patient",
    aggregation: str = "one prediction per patient",
    ci_method: CiMethod = "wilson",
) -> ClassificationMetrics:
    """Compute accuracy, per-class one-vs-rest metrics and macro averages.

    ``probabilities`` has one column per entry of ``labels``; without it AUCs are ``None``.
    Macro averages are unweighted means over classes. A class with no positives in
    ``y_true`` gives NaN sensitivity and AUC, so it is left out of those macro means and a
    note says so.
    """
    labels = tuple(labels)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no cases to evaluate: y_true is empty")
    true_index = _encode(y_true, labels, "y_true")
    pred_index = _encode(y_pred, labels, "y_pred")
    n = len(true_index)
    class_ids = list(range(len(labels)))
    matrix = confusion_matrix(true_index, pred_index, labels=class_ids)
    proba = (
        None
        if probabilities is None
        else _check_probabilities(np.asarray(probabilities), n, len(labels))
    )

    notes: list[str] = []
    per_class: list[ClassMetrics] = []
    f1_values = f1_score(true_index, pred_index, labels=class_ids, average=None, zero_division=0.0)
    for k, label in enumerate(labels):
        tp = int(matrix[k, k])
        fn = int(matrix[k, :].sum() - tp)
        fp = int(matrix[:, k].sum() - tp)
        tn = int(n - tp - fn - fp)
        auc: float | None = None
        if proba is not None:
            positives = true_index == k
            if positives.all() or not positives.any():
                auc = math.nan
                notes.append(f"AUC of {label} is not estimable: the set has only one class for it")
            else:
                auc = float(roc_auc_score(positives, proba[:, k]))
        per_class.append(
            ClassMetrics(
                label=label,
                sensitivity=proportion_with_ci(tp, tp + fn, ci_method),
                specificity=proportion_with_ci(tn, tn + fp, ci_method),
                ppv=proportion_with_ci(tp, tp + fp, ci_method),
                npv=proportion_with_ci(tn, tn + fn, ci_method),
                f1=float(f1_values[k]),
                auc=auc,
                support=tp + fn,
            )
        )

    def finite_mean(values: list[float]) -> float:
        finite = [value for value in values if math.isfinite(value)]
        return float(np.mean(finite)) if finite else math.nan

    macro_auc: float | None = None
    if proba is not None:
        macro_auc = finite_mean([item.auc for item in per_class if item.auc is not None])
    absent = [item.label for item in per_class if item.support == 0]
    if absent:
        notes.append(f"classes without positives are left out of macro means: {absent}")

    correct = int(np.trace(matrix))
    return ClassificationMetrics(
        unit=unit,
        aggregation=aggregation,
        n=n,
        labels=labels,
        accuracy=proportion_with_ci(correct, n, ci_method),
        balanced_accuracy=(
            float(balanced_accuracy_score(true_index, pred_index))
            if not absent
            else finite_mean([item.sensitivity.estimate for item in per_class])
        ),
        macro_sensitivity=finite_mean([item.sensitivity.estimate for item in per_class]),
        macro_specificity=finite_mean([item.specificity.estimate for item in per_class]),
        macro_f1=float(np.mean(f1_values)),
        macro_auc=macro_auc,
        per_class=per_class,
        confusion=matrix.astype(int).tolist(),
        notes=notes,
    )


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Return the fraction of exact label matches."""
    return float(accuracy_score(list(y_true), list(y_pred)))


def roc_points(
    y_true: Sequence[str], probabilities: np.ndarray, labels: Sequence[str] = CLASS_LABELS
) -> dict[str, dict[str, list[float]]]:
    """Return one-vs-rest ROC curve points per class as ``{"fpr": [...], "tpr": [...]}``."""
    true_index = _encode(y_true, labels, "y_true")
    proba = _check_probabilities(np.asarray(probabilities), len(true_index), len(labels))
    curves: dict[str, dict[str, list[float]]] = {}
    for k, label in enumerate(labels):
        positives = true_index == k
        if positives.all() or not positives.any():
            continue
        fpr, tpr, thresholds = roc_curve(positives, proba[:, k], drop_intermediate=False)
        curves[label] = {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "threshold": json_safe(thresholds),
        }
    return curves


@dataclass(frozen=True)
class Calibration:
    """One-vs-rest reliability curves and Brier scores."""

    n_bins: int
    strategy: str
    curves: dict[str, dict[str, list[float]]]
    brier_per_class: dict[str, float]
    brier_multiclass: float

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def calibration(
    y_true: Sequence[str],
    probabilities: np.ndarray,
    labels: Sequence[str] = CLASS_LABELS,
    n_bins: int = 5,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> Calibration:
    """Compute one-vs-rest calibration curves and Brier scores.

    The multiclass Brier score is the mean over cases of the squared distance between the
    probability vector and the one-hot truth (0 is perfect, 2 is the maximum). Five bins by
    default because a 39-case test set leaves about 8 cases per bin.
    """
    true_index = _encode(y_true, labels, "y_true")
    proba = _check_probabilities(np.asarray(probabilities), len(true_index), len(labels))
    curves: dict[str, dict[str, list[float]]] = {}
    brier: dict[str, float] = {}
    for k, label in enumerate(labels):
        positives = (true_index == k).astype(int)
        brier[label] = float(brier_score_loss(positives, proba[:, k]))
        prob_true, prob_pred = calibration_curve(
            positives, proba[:, k], n_bins=n_bins, strategy=strategy
        )
        curves[label] = {
            "mean_predicted": prob_pred.tolist(),
            "fraction_positive": prob_true.tolist(),
        }
    one_hot = np.eye(len(labels))[true_index]
    multiclass = float(np.mean(np.sum((proba - one_hot) ** 2, axis=1)))
    return Calibration(n_bins, strategy, curves, brier, multiclass)
