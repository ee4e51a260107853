"""DeLong, McNemar, bootstrap, Holm and kappa against hand-computed and published values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from inference.evaluation import (
    CLASS_LABELS,
    bootstrap_difference_ci,
    bootstrap_metric_ci,
    cohen_kappa,
    delong_covariance,
    delong_test,
    fleiss_kappa_ci,
    holm_adjust,
    mcnemar_test,
)

# Hand-computed case for DeLong, DeLong and Clarke-Pearson (Biometrics 1988;44:837-845):
# the variance of an AUC is S10/m + S01/n, where S10 and S01 are the sample variances of the
# structural components V10(X_i) = mean_j psi(X_i, Y_j) and V01(Y_j) = mean_i psi(X_i, Y_j).
# Model A: positives 0.9, 0.6, 0.4; negatives 0.5, 0.2 -> V10 = (1, 1, 1/2), V01 = (2/3, 1),
# AUC 5/6, S10 = 1/12, S01 = 1/18, variance 1/36 + 1/36 = 1/18.
# Model B: positives 0.8, 0.3, 0.7; negatives 0.5, 0.1 -> V10 = (1, 1/2, 1), V01 = (2/3, 1),
# AUC 5/6, variance 1/18; covariance (-1/24)/3 + (1/18)/2 = 1/72; var(A - B) = 1/12.
LABELS_BINARY = [1, 1, 1, 0, 0]
SCORES_A = [0.9, 0.6, 0.4, 0.5, 0.2]
SCORES_B = [0.8, 0.3, 0.7, 0.5, 0.1]


def test_delong_variance_by_hand():
    aucs, covariance = delong_covariance(LABELS_BINARY, np.array([SCORES_A, SCORES_B]))
    assert aucs[0] == pytest.approx(5 / 6)
    assert aucs[1] == pytest.approx(5 / 6)
    assert covariance[0, 0] == pytest.approx(1 / 18)
    assert covariance[1, 1] == pytest.approx(1 / 18)
    assert covariance[0, 1] == pytest.approx(1 / 72)


def test_delong_test_by_hand():
    result = delong_test(LABELS_BINARY, SCORES_A, SCORES_B)
    assert result.difference == pytest.approx(0.0)
    assert result.standard_error == pytest.approx((1 / 12) ** 0.5)
    assert result.p_value == pytest.approx(1.0)


def _delong_by_definition(positives, scores):
    """Compute the structural components with the O(m n) pairwise kernel, as DeLong 1988."""
    x = scores[:, positives]
    y = scores[:, ~positives]
    psi = (x[:, :, None] > y[:, None, :]) + 0.5 * (x[:, :, None] == y[:, None, :])
    v10 = psi.mean(axis=2)
    v01 = psi.mean(axis=1)
    m, n = x.shape[1], y.shape[1]
    return psi.mean(axis=(1, 2)), np.cov(v10) / m + np.cov(v01) / n


def test_fast_delong_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(7)
    positives = rng.random(60) < 0.4
    # Rounding to one decimal creates many ties, the case the midrank step must handle.
    scores = np.round(rng.random((3, 60)) + positives * 0.3, 1)
    fast_aucs, fast_covariance = delong_covariance(positives.astype(int), scores)
    slow_aucs, slow_covariance = _delong_by_definition(positives, scores)
    np.testing.assert_allclose(fast_aucs, slow_aucs, rtol=1e-12)
    np.testing.assert_allclose(fast_covariance, slow_covariance, rtol=1e-10)


def test_delong_detects_better_model():
    rng = np.random.default_rng(3)
    positives = np.r_[np.ones(40), np.zeros(40)].astype(int)
    strong = positives * 2.0 + rng.normal(size=80)
    weak = positives * 0.3 + rng.normal(size=80)
    result = delong_test(positives, strong, weak)
    assert result.auc_a > result.auc_b
    assert result.p_value < 0.01
    assert result.ci_low > 0


def test_delong_rejects_single_positive():
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong_test([1, 0, 0], [0.2, 0.1, 0.3], [0.3, 0.1, 0.2])


def test_mcnemar_exact_p_value_by_hand():
    truth = ["HT"] * 10
    # Discordant pairs: A alone correct once, B alone correct six times; two both right,
    # one both wrong. Exact two-sided p = 2 * P(X <= 1 | Bin(7, 1/2)) = 2 * 8/128 = 0.125.
    model_a = ["HT", "HT", "HT"] + ["CE"] * 7
    model_b = ["HT", "HT", "CE"] + ["HT"] * 6 + ["CE"]
    result = mcnemar_test(truth, model_a, model_b)
    assert result.only_a_correct == 1
    assert result.only_b_correct == 6
    assert result.both_correct == 2
    assert result.both_wrong == 1
    assert result.p_value == pytest.approx(0.125)


def test_mcnemar_without_discordant_pairs():
    result = mcnemar_test(["HT", "CE"], ["HT", "HT"], ["HT", "HT"])
    assert result.p_value == 1.0


def test_holm_adjustment_by_hand():
    adjusted, reject = holm_adjust([0.01, 0.04, 0.03])
    # Sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 raised to the running max 0.06.
    assert adjusted == pytest.approx([0.03, 0.06, 0.06])
    assert reject == [True, False, False]


@pytest.fixture(scope="module")
def separable_test_set():
    rng = np.random.default_rng(11)
    truth = np.repeat(CLASS_LABELS, [13, 13, 13])
    probabilities = rng.dirichlet([1, 1, 1], size=39)
    index = np.array([CLASS_LABELS.index(value) for value in truth])
    probabilities[np.arange(39), index] += 0.4
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return list(truth), probabilities


def test_bootstrap_interval_contains_estimate(separable_test_set):
    truth, probabilities = separable_test_set
    for metric in ("macro_auc", "macro_f1", "auc:CE"):
        interval = bootstrap_metric_ci(truth, probabilities, metric, n_resamples=500, seed=5)
        assert interval.ci_low <= interval.estimate, metric
        assert interval.estimate <= interval.ci_high, metric
        assert interval.ci_high - interval.ci_low > 0.01, metric


def test_bootstrap_is_reproducible_with_seed(separable_test_set):
    truth, probabilities = separable_test_set
    first = bootstrap_metric_ci(truth, probabilities, "macro_auc", n_resamples=300, seed=5)
    second = bootstrap_metric_ci(truth, probabilities, "macro_auc", n_resamples=300, seed=5)
    other_seed = bootstrap_metric_ci(truth, probabilities, "macro_auc", n_resamples=300, seed=6)
    assert (first.ci_low, first.ci_high) == (second.ci_low, second.ci_high)
    assert (first.ci_low, first.ci_high) != (other_seed.ci_low, other_seed.ci_high)


def test_bootstrap_perfect_auc_falls_back_to_percentile():
    truth = ["HT"] * 5 + ["CE"] * 5 + ["HT+CE"] * 5
    probabilities = np.eye(3)[np.repeat([0, 1, 2], 5)] * 0.8 + 0.2 / 3
    interval = bootstrap_metric_ci(truth, probabilities, "auc:HT", n_resamples=200, seed=1)
    assert interval.estimate == 1.0
    assert interval.ci_low == 1.0
    assert interval.method.startswith("percentile")


def test_paired_difference_of_identical_models_is_zero(separable_test_set):
    truth, probabilities = separable_test_set
    interval = bootstrap_difference_ci(
        truth, probabilities, probabilities, "macro_f1", n_resamples=200, seed=1
    )
    assert interval.estimate == 0.0
    assert interval.ci_low == 0.0
    assert interval.ci_high == 0.0


def test_cohen_kappa_matches_scikit_learn():
    reader_a = ["HT", "HT", "CE", "CE", "HT+CE", "HT+CE", "HT", "CE"]
    reader_b = ["HT", "CE", "CE", "CE", "HT+CE", "HT", "HT", "CE"]
    result = cohen_kappa(reader_a, reader_b)
    assert result.kappa == pytest.approx(cohen_kappa_score(reader_a, reader_b))
    assert result.ci_low < result.kappa < result.ci_high
    assert result.ci_high <= 1.0


def test_fleiss_kappa_matches_published_example():
    # Fleiss (Psychological Bulletin 1971;76:378-382) style worked example as tabulated in
    # Wikipedia's "Fleiss' kappa" article: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
    counts = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    categories = ("1", "2", "3", "4", "5")
    ratings = [
        [category for category, count in zip(categories, row, strict=True) for _ in range(count)]
        for row in counts
    ]
    result = fleiss_kappa_ci(ratings, labels=categories, n_resamples=200, seed=0)
    assert result.kappa == pytest.approx(0.210, abs=0.0005)
    assert result.n_raters == 14
    assert result.ci_low < result.kappa < result.ci_high
