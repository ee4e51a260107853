"""DeLong's AUC variance against published worked values, and its paired test against an
independent O(m n) computation.

Single curve: the computed tomography ratings of Hanley and McNeil, "The meaning and use of
the area under a receiver operating characteristic (ROC) curve", Radiology 1982;143:29-36,
Table I. A radiologist rated 109 head CT images on a five-point scale (1 definitely normal to
5 definitely abnormal): 58 patients without the abnormality rated 33, 6, 6, 11, 2 and 51 with
it rated 3, 2, 2, 11, 33. The paper gives the area (Wilcoxon statistic) as 0.893. Stata's
Base Reference Manual, [R] roctab, analyses the same 109 ratings (dataset hanley.dta) with
its default DeLong, DeLong and Clarke-Pearson standard error and reports area 0.8932,
standard error 0.0307 and asymptotic normal 95% interval 0.83295 to 0.95339.
TODO: the three roctab figures are not yet checked against the manual page itself. Confirm
them there.

Paired test: no published example with its data printed in full was found, so the z
statistic and p value are checked against the structural components computed pair by pair,
as DeLong, DeLong and Clarke-Pearson (Biometrics 1988;44:837-845) define them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.evaluation import delong_covariance, delong_test

RATING_COUNTS_NORMAL = (33, 6, 6, 11, 2)
RATING_COUNTS_ABNORMAL = (3, 2, 2, 11, 33)


def _hanley_mcneil_ratings() -> tuple[np.ndarray, np.ndarray]:
    labels: list[int] = []
    ratings: list[float] = []
    for positive, counts in ((0, RATING_COUNTS_NORMAL), (1, RATING_COUNTS_ABNORMAL)):
        for rating, count in enumerate(counts, start=1):
            labels += [positive] * count
            ratings += [float(rating)] * count
    return np.array(labels), np.array(ratings)


def test_area_matches_hanley_mcneil_1982():
    labels, ratings = _hanley_mcneil_ratings()
    assert labels.size == 109
    assert labels.sum() == 51
    aucs, _covariance = delong_covariance(labels, ratings)
    assert round(float(aucs[0]), 3) == 0.893
    # Exactly (51 * 58 pairs, ties counting one half): 2642 / 2958.
    assert float(aucs[0]) == pytest.approx(2642 / 2958, abs=1e-15)


def test_standard_error_and_interval_match_stata_roctab():
    labels, ratings = _hanley_mcneil_ratings()
    aucs, covariance = delong_covariance(labels, ratings)
    standard_error = math.sqrt(float(covariance[0, 0]))
    assert round(float(aucs[0]), 4) == 0.8932
    assert round(standard_error, 4) == 0.0307
    low = float(aucs[0]) - 1.959963984540054 * standard_error
    high = float(aucs[0]) + 1.959963984540054 * standard_error
    assert round(low, 5) == 0.83295
    assert round(high, 5) == 0.95339


def _paired_by_definition(
    positives: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray
) -> tuple[float, float]:
    """Return DeLong's z and two-sided p from the pairwise kernel, without ranks."""
    components = []
    aucs = []
    for scores in (scores_a, scores_b):
        x, y = scores[positives], scores[~positives]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(psi.mean())
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    m, n = int(positives.sum()), int((~positives).sum())
    s10 = np.cov(np.vstack([components[0][0], components[1][0]]))
    s01 = np.cov(np.vstack([components[0][1], components[1][1]]))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def test_paired_statistic_matches_pairwise_definition():
    labels, ratings = _hanley_mcneil_ratings()
    positives = labels.astype(bool)
    # A second, noisier reader on the same 109 cases: ratings moved by up to one category,
    # which keeps many ties.
    rng = np.random.default_rng(1982)
    second = np.clip(ratings + rng.integers(-1, 2, size=ratings.size), 1, 5)
    result = delong_test(labels, ratings, second)
    z, p_value = _paired_by_definition(positives, ratings, second)
    assert result.z == pytest.approx(z, rel=1e-10)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.auc_a == pytest.approx(2642 / 2958)
    # The noisier reader ranks fewer pairs correctly, but not significantly so here.
    assert result.difference > 0
    assert 0.05 < result.p_value < 1.0
    assert result.z == pytest.approx(result.difference / result.standard_error)
