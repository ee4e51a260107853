"""Classification metrics checked against values computed by hand on a six-case fixture."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from inference.evaluation import (
    calibration,
    classification_metrics,
    proportion_with_ci,
    roc_points,
)

# Rows of the confusion matrix (true HT, CE, HT+CE) are [2, 1, 0], [0, 1, 1], [0, 0, 1].
Y_TRUE = ["HT", "HT", "HT", "CE", "CE", "HT+CE"]
Y_PRED = ["HT", "HT", "CE", "CE", "HT+CE", "HT+CE"]
PROBABILITIES = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],
        [0.2, 0.7, 0.1],
        [0.1, 0.4, 0.5],
        [0.2, 0.2, 0.6],
    ]
)


@pytest.fixture(scope="module")
def metrics():
    return classification_metrics(Y_TRUE, Y_PRED, PROBABILITIES)


def test_confusion_matrix_counts(metrics):
    assert metrics.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_accuracy_and_balanced_accuracy(metrics):
    assert metrics.accuracy.successes == 4
    assert metrics.accuracy.total == 6
    assert metrics.accuracy.estimate == pytest.approx(4 / 6)
    assert metrics.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_per_class_one_vs_rest_counts(metrics):
    ht, ce, mixed = metrics.per_class
    assert (ht.sensitivity.successes, ht.sensitivity.total) == (2, 3)
    assert (ht.specificity.successes, ht.specificity.total) == (3, 3)
    assert (ht.ppv.successes, ht.ppv.total) == (2, 2)
    assert (ht.npv.successes, ht.npv.total) == (3, 4)
    assert ht.f1 == pytest.approx(0.8)
    assert (ce.sensitivity.successes, ce.sensitivity.total) == (1, 2)
    assert (ce.specificity.successes, ce.specificity.total) == (3, 4)
    assert ce.f1 == pytest.approx(0.5)
    assert (mixed.sensitivity.successes, mixed.sensitivity.total) == (1, 1)
    assert (mixed.specificity.successes, mixed.specificity.total) == (4, 5)
    assert mixed.f1 == pytest.approx(2 / 3)


def test_macro_averages(metrics):
    assert metrics.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics.macro_sensitivity == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics.macro_specificity == pytest.approx((1 + 3 / 4 + 4 / 5) / 3)


def test_one_vs_rest_auc_by_hand(metrics):
    # HT scores: positives 0.8, 0.6, 0.3; negatives 0.2, 0.1, 0.2 -> every pair ordered.
    assert metrics.per_class[0].auc == pytest.approx(1.0)
    # CE scores: positives 0.7, 0.4; negatives 0.1, 0.3, 0.5, 0.2 -> 7 of 8 pairs ordered.
    assert metrics.per_class[1].auc == pytest.approx(7 / 8)
    assert metrics.macro_auc == pytest.approx((1.0 + 7 / 8 + 1.0) / 3)


def test_metrics_state_unit_of_analysis(metrics):
    data = metrics.to_dict()
    assert data["unit"] == "patient"
    assert data["aggregation"] == "one prediction per patient"
    assert json.loads(json.dumps(data)) == data


def test_clopper_pearson_matches_published_intervals():
    # Exact binomial intervals quoted for a 39-case test set: 13/13 -> 75.3-100%, 7/10 -> 34.8-93.3%.
    all_correct = proportion_with_ci(13, 13, "clopper-pearson")
    seven_of_ten = proportion_with_ci(7, 10, "clopper-pearson")
    assert all_correct.ci_low == pytest.approx(0.753, abs=0.0005)
    assert all_correct.ci_high == pytest.approx(1.0)
    assert seven_of_ten.ci_low == pytest.approx(0.348, abs=0.0005)
    assert seven_of_ten.ci_high == pytest.approx(0.933, abs=0.0005)


def test_wilson_interval_for_seven_of_ten():
    # Wilson score interval, z = 1.96: (0.3968, 0.8922).
    result = proportion_with_ci(7, 10, "wilson")
    assert result.ci_low == pytest.approx(0.3968, abs=0.0005)
    assert result.ci_high == pytest.approx(0.8922, abs=0.0005)


def test_empty_denominator_is_not_estimable():
    result = proportion_with_ci(0, 0)
    assert math.isnan(result.estimate)
    assert result.to_dict()["estimate"] is None


def test_class_absent_from_test_set_is_noted():
    result = classification_metrics(["HT", "CE"], ["HT", "HT"], np.array([[0.9, 0.05, 0.05]] * 2))
    assert result.per_class[2].support == 0
    assert any("HT+CE" in note for note in result.notes)
    assert math.isnan(result.per_class[2].sensitivity.estimate)


def test_unknown_label_is_rejected():
    with pytest.raises(ValueError, match="outside the expected"):
        classification_metrics(["HT", "ICH"], ["HT", "HT"])


def test_probability_shape_is_checked():
    with pytest.raises(ValueError, match=r"expected \(6, 3\)"):
        classification_metrics(Y_TRUE, Y_PRED, PROBABILITIES[:, :2])


def test_roc_points_end_at_corners():
    curves = roc_points(Y_TRUE, PROBABILITIES)
    assert curves["CE"]["fpr"][0] == 0.0
    assert curves["CE"]["tpr"][-1] == 1.0
    assert curves["CE"]["fpr"][-1] == 1.0


def test_multiclass_brier_by_hand():
    result = calibration(["HT", "CE"], np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    # Case 1 is perfect (0); case 2 is 0.25 + 0.25 = 0.5; the mean is 0.25.
    assert result.brier_multiclass == pytest.approx(0.25)
    assert result.brier_per_class["HT"] == pytest.approx(0.125)
