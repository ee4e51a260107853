"""Statistical tests and intervals: DeLong, McNemar, bootstrap, Holm, Cohen's and Fleiss' kappa.

DeLong's test for correlated AUCs is in none of scikit-learn, SciPy or statsmodels, so it is
implemented here with the fast midrank algorithm of Sun and Xu (IEEE Signal Processing Letters
2014;21(11):1389-1393). That algorithm gives the structural components of DeLong, DeLong and
Clarke-Pearson (Biometrics 1988;44:837-845) in O(n log n) instead of O(m n).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa
from statsmodels.stats.multitest import multipletests

from inference.evaluation.metrics import CLASS_LABELS, json_safe

# --- DeLong -------------------------------------------------------------------------------


def _midranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks where tied values share the mean of their ranks."""
    return stats.rankdata(values, method="average", axis=-1)


def _delong_components(
    positives: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return AUCs (k,), V10 (k, m) and V01 (k, n) for k score rows.

    V10 is each positive's share of negatives it outranks, and V01 each negative's share of
    positives that outrank it. Ties count one half.
    """
    positive_scores = scores[:, positives]
    negative_scores = scores[:, ~positives]
    m = positive_scores.shape[1]
    n = negative_scores.shape[1]
    combined = np.concatenate([positive_scores, negative_scores], axis=1)
    rank_combined = _midranks(combined)
    rank_positive = _midranks(positive_scores)
    rank_negative = _midranks(negative_scores)
    aucs = (rank_combined[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (rank_combined[:, :m] - rank_positive) / n
    v01 = 1.0 - (rank_combined[:, m:] - rank_negative) / m
    return aucs, v10, v01


def delong_covariance(
    y_true_binary: Sequence[int] | np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the AUCs and their DeLong covariance matrix for one or more score rows.

    ``scores`` has shape (k, n_cases) or (n_cases,); ``y_true_binary`` marks positives with 1.
    """
    positives = np.asarray(y_true_binary).astype(bool)
    matrix = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if matrix.shape[1] != positives.size:
        raise ValueError(
            f"scores have {matrix.shape[1]} cases but y_true_binary has {positives.size}"
        )
    m = int(positives.sum())
    n = int(positives.size - m)
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives; got {m} and {n}")
    aucs, v10, v01 = _delong_components(positives, matrix)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class DelongResult:
    """DeLong's test of two correlated AUCs on the same cases."""

    auc_a: float
    auc_b: float
    difference: float
    standard_error: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def delong_test(
    y_true_binary: Sequence[int] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
) -> DelongResult:
    """Test whether two models' AUCs on the same cases differ (two-sided).

    The 95% interval is for ``auc_a - auc_b``. When both models rank every pair identically
    the variance is 0 and the result is z = 0, p = 1.
    """
    positives = np.asarray(y_true_binary).astype(bool)
    aucs, covariance = delong_covariance(positives, np.vstack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1])
    standard_error = math.sqrt(max(variance, 0.0))
    if standard_error == 0.0:
        z, p_value = 0.0, 1.0
    else:
        z = difference / standard_error
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    half_width = 1.959963984540054 * standard_error
    return DelongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        difference=difference,
        standard_error=standard_error,
        z=float(z),
        p_value=p_value,
        ci_low=difference - half_width,
        ci_high=difference + half_width,
        n_positive=int(positives.sum()),
        n_negative=int((~positives).sum()),
    )


# --- McNemar ------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired correctness of two models."""

    both_correct: int
    only_a_correct: int
    only_b_correct: int
    both_wrong: int
    statistic: float
    p_value: float
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def mcnemar_test(
    y_true: Sequence[str], y_pred_a: Sequence[str], y_pred_b: Sequence[str], exact: bool = True
) -> McNemarResult:
    """Compare two models' accuracy on the same cases with McNemar's test.

    The exact binomial version is the default because a 39-case test set leaves few
    discordant pairs, where the chi-square approximation is poor.
    """
    truth = np.asarray(y_true)
    if not (len(truth) == len(y_pred_a) == len(y_pred_b)):
        raise ValueError("y_true, y_pred_a and y_pred_b must have the same length")
    correct_a = np.asarray(y_pred_a) == truth
    correct_b = np.asarray(y_pred_b) == truth
    table = np.array(
        [
            [int(np.sum(correct_a & correct_b)), int(np.sum(correct_a & ~correct_b))],
            [int(np.sum(~correct_a & correct_b)), int(np.sum(~correct_a & ~correct_b))],
        ]
    )
    if table[0, 1] + table[1, 0] == 0:
        # No discordant pairs: the models agree on every case, so there is nothing to test.
        statistic, p_value = 0.0, 1.0
    else:
        result = statsmodels_mcnemar(table, exact=exact)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return McNemarResult(
        both_correct=int(table[0, 0]),
        only_a_correct=int(table[0, 1]),
        only_b_correct=int(table[1, 0]),
        both_wrong=int(table[1, 1]),
        statistic=statistic,
        p_value=p_value,
        exact=exact,
    )


def holm_adjust(p_values: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Return Holm-adjusted p-values and which hypotheses are rejected at ``alpha``."""
    if len(p_values) == 0:
        return [], []
    reject, adjusted, _, _ = multipletests(list(p_values), alpha=alpha, method="holm")
    return [float(value) for value in adjusted], [bool(value) for value in reject]


# --- Bootstrap ----------------------------------------------------------------------------


def _auc_rows(positives: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Return the Mann-Whitney AUC of each row, or NaN where a row lacks either class."""
    ranks = _midranks(scores)
    n_positive = positives.sum(axis=-1)
    n_negative = positives.shape[-1] - n_positive
    rank_sum = np.where(positives, ranks, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)
    return np.where((n_positive > 0) & (n_negative > 0), auc, np.nan)


def _macro_f1_rows(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    scores = []
    for k in range(n_classes):
        tp = np.sum((truth == k) & (predicted == k), axis=-1)
        fp = np.sum((truth != k) & (predicted == k), axis=-1)
        fn = np.sum((truth == k) & (predicted != k), axis=-1)
        denominator = 2 * tp + fp + fn
        # A class neither present nor predicted scores 0, as scikit-learn's zero_division=0.
        scores.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
    return np.mean(scores, axis=0)


def _metric_rows(
    metric: str, truth: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]
) -> np.ndarray:
    """Evaluate ``metric`` on each row of resampled truth (B, n) and probabilities (B, n, k)."""
    n_classes = len(labels)
    if metric == "accuracy":
        return np.mean(np.argmax(probabilities, axis=-1) == truth, axis=-1)
    if metric == "macro_f1":
        return _macro_f1_rows(truth, np.argmax(probabilities, axis=-1), n_classes)
    if metric == "macro_auc":
        per_class = np.stack(
            [_auc_rows(truth == k, probabilities[..., k]) for k in range(n_classes)]
        )
        return np.mean(per_class, axis=0)
    if metric.startswith("auc:"):
        label = metric.split(":", 1)[1]
        if label not in labels:
            raise ValueError(
                f"unknown class {label!r} in metric {metric!r}; expected {list(labels)}"
            )
        k = list(labels).index(label)
        return _auc_rows(truth == k, probabilities[..., k])
    if metric.startswith("f1:"):
        label = metric.split(":", 1)[1]
        k = list(labels).index(label)
        predicted = np.argmax(probabilities, axis=-1)
        tp = np.sum((truth == k) & (predicted == k), axis=-1)
        denominator = np.sum(truth == k, axis=-1) + np.sum(predicted == k, axis=-1)
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    raise ValueError(
        f"unknown bootstrap metric {metric!r}; use accuracy, macro_f1, macro_auc, "
        "auc:<class> or f1:<class>"
    )


@dataclass(frozen=True)
class BootstrapInterval:
    """A bootstrap confidence interval over resampled patients."""

    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    method: str
    n_resamples: int
    seed: int
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _stack_groups(groups: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate per-class index resamples along the last axis, broadcasting batch axes."""
    lead = np.broadcast_shapes(*[group.shape[:-1] for group in groups])
    return np.concatenate(
        [np.broadcast_to(group, lead + group.shape[-1:]) for group in groups], axis=-1
    )


def _run_stratified_bootstrap(
    statistic: Any, truth: np.ndarray, n_resamples: int, seed: int, method: str
) -> tuple[float, float, str]:
    """Bootstrap patients within each true class; return the 95% interval and its method.

    Resampling within classes keeps every class present in every resample, so per-class AUCs
    stay defined. R's pROC does the same by default (``boot.stratified = TRUE``). Without it,
    a class of 6 patients in 39 is missing from about 1 resample in 700.
    """
    groups = tuple(np.flatnonzero(truth == value) for value in np.unique(truth))
    if any(group.size < 2 for group in groups):
        return math.nan, math.nan, method

    def grouped(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(_stack_groups(resampled))

    with warnings.catch_warnings():
        # A degenerate bootstrap distribution (every resample equal, e.g. a perfect AUC)
        # gives a NaN interval, which the report shows as not estimable.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            groups,
            grouped,
            n_resamples=n_resamples,
            vectorized=True,
            paired=False,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    distribution = result.bootstrap_distribution
    if method == "BCa" and math.isnan(low) and np.all(np.isfinite(distribution)):
        # BCa is undefined when no resample falls below the estimate (a perfect AUC on
        # every resample, for example); the percentile interval still describes the spread.
        low, high = (float(value) for value in np.percentile(distribution, [2.5, 97.5]))
        return low, high, "percentile (BCa undefined for this distribution)"
    return low, high, method


def bootstrap_metric_ci(
    y_true: Sequence[str],
    probabilities: np.ndarray,
    metric: str,
    *,
    labels: Sequence[str] = CLASS_LABELS,
    n_resamples: int = 2000,
    seed: int = 0,
    method: Literal["BCa", "percentile", "basic"] = "BCa",
) -> BootstrapInterval:
    """Return a seeded, class-stratified bootstrap 95% interval for one metric.

    Each row of ``y_true``/``probabilities`` must be one patient, so resampling rows resamples
    patients and never splits a patient's lesions or slices across resamples. ``metric`` is
    ``accuracy``, ``macro_f1``, ``macro_auc``, ``auc:<class>`` or ``f1:<class>``. The interval
    is NaN when a class has fewer than 2 patients or every resample gives the same value.
    """
    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index[str(value)] for value in y_true])
    proba = np.asarray(probabilities, dtype=np.float64)

    def statistic(sample_indices: np.ndarray) -> np.ndarray:
        return _metric_rows(metric, truth[sample_indices], proba[sample_indices], labels)

    estimate = float(statistic(np.arange(len(truth))))
    low, high, used = _run_stratified_bootstrap(statistic, truth, n_resamples, seed, method)
    return BootstrapInterval(metric, estimate, low, high, used, n_resamples, seed, "patient")


def bootstrap_difference_ci(
    y_true: Sequence[str],
    probabilities_a: np.ndarray,
    probabilities_b: np.ndarray,
    metric: str,
    *,
    labels: Sequence[str] = CLASS_LABELS,
    n_resamples: int = 2000,
    seed: int = 0,
    method: Literal["BCa", "percentile", "basic"] = "BCa",
) -> BootstrapInterval:
    """Return a paired, class-stratified bootstrap 95% interval for ``metric(a) - metric(b)``."""
    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index[str(value)] for value in y_true])
    proba_a = np.asarray(probabilities_a, dtype=np.float64)
    proba_b = np.asarray(probabilities_b, dtype=np.float64)

    def statistic(sample_indices: np.ndarray) -> np.ndarray:
        sampled_truth = truth[sample_indices]
        metric_a = _metric_rows(metric, sampled_truth, proba_a[sample_indices], labels)
        metric_b = _metric_rows(metric, sampled_truth, proba_b[sample_indices], labels)
        return metric_a - metric_b

    estimate = float(statistic(np.arange(len(truth))))
    low, high, used = _run_stratified_bootstrap(statistic, truth, n_resamples, seed, method)
    return BootstrapInterval(
        f"{metric} difference", estimate, low, high, used, n_resamples, seed, "patient"
    )


# --- Reader agreement ---------------------------------------------------------------------


@dataclass(frozen=True)
class KappaResult:
    """An agreement coefficient with its 95% interval."""

    kappa: float
    ci_low: float
    ci_high: float
    n_subjects: int
    n_raters: int
    ci_method: str

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def cohen_kappa(
    ratings_a: Sequence[str], ratings_b: Sequence[str], labels: Sequence[str] = CLASS_LABELS
) -> KappaResult:
    """Return Cohen's kappa of two readers with statsmodels' asymptotic 95% interval."""
    if len(ratings_a) != len(ratings_b):
        raise ValueError(f"reader A rated {len(ratings_a)} cases but reader B {len(ratings_b)}")
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for first, second in zip(ratings_a, ratings_b, strict=True):
        table[index[str(first)], index[str(second)]] += 1
    result = cohens_kappa(table)
    return KappaResult(
        kappa=float(result.kappa),
        # The asymptotic interval can pass 1 at small n; kappa itself cannot.
        ci_low=max(float(result.kappa_low), -1.0),
        ci_high=min(float(result.kappa_upp), 1.0),
        n_subjects=len(ratings_a),
        n_raters=2,
        ci_method="asymptotic (statsmodels cohens_kappa), clipped to [-1, 1]",
    )


def fleiss_kappa_ci(
    ratings: np.ndarray | Sequence[Sequence[str]],
    labels: Sequence[str] = CLASS_LABELS,
    n_resamples: int = 1000,
    seed: int = 0,
) -> KappaResult:
    """Return Fleiss' kappa of a (subjects, raters) label table with a bootstrap 95% interval.

    statsmodels gives no interval for Fleiss' kappa, so subjects are resampled (seeded
    percentile interval); resamples where kappa is undefined are dropped.
    """
    index = {label: i for i, label in enumerate(labels)}
    table = np.vectorize(lambda value: index[str(value)])(np.asarray(ratings, dtype=object))
    counts, _ = aggregate_raters(table, n_cat=len(labels))
    estimate = float(fleiss_kappa(counts))

    rng = np.random.default_rng(seed)
    replicates = []
    for _ in range(n_resamples):
        rows = rng.integers(0, counts.shape[0], counts.shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(fleiss_kappa(counts[rows]))
        # A resample where every reader gives one label to every case has no chance
        # agreement to correct for, so kappa is undefined there and the resample is dropped.
        if math.isfinite(value):
            replicates.append(value)
    low, high = (
        (float(np.percentile(replicates, 2.5)), float(np.percentile(replicates, 97.5)))
        if replicates
        else (math.nan, math.nan)
    )
    return KappaResult(
        kappa=estimate,
        ci_low=low,
        ci_high=high,
        n_subjects=int(counts.shape[0]),
        n_raters=int(table.shape[1]),
        ci_method=f"percentile bootstrap over subjects, {n_resamples} resamples, seed {seed}",
    )
