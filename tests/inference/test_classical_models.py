"""Classical pipelines, abstention and the stacked hybrid on small generated feature tables."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV

from inference.evaluation import CLASS_LABELS
from inference.models.classical import (
    TrainingConfig,
    predict_probabilities,
    predictions_with_abstention,
    train_classical,
)
from inference.models.hybrid import predict_stacked, stack_inputs, train_stacker
from inference.models.registry import ModelRegistry

FAST = TrainingConfig(seed=3, n_splits=3, n_repeats=1, k_features=(5,), rf_trees=30)


@pytest.fixture(scope="module")
def feature_table():
    """36 cases, 40 features: two informative, one constant, some NaN."""
    rng = np.random.default_rng(1)
    labels = np.repeat(CLASS_LABELS, 12)
    features = rng.normal(size=(36, 40))
    features[:, 0] += np.where(labels == "CE", 2.0, 0.0)
    features[:, 1] += np.where(labels == "HT+CE", 2.0, 0.0)
    features[:, 7] = 4.0
    features[[2, 15, 30], 3] = np.nan
    return features, list(labels), [f"feature_{i}" for i in range(40)]


@pytest.fixture(scope="module")
def trained(feature_table):
    features, labels, names = feature_table
    return {
        kind: train_classical(kind, features, labels, names, FAST) for kind in ("svm", "rf", "lr")
    }


def test_training_is_deterministic(feature_table, trained):
    features, labels, names = feature_table
    again = train_classical("rf", features, labels, names, FAST)
    np.testing.assert_array_equal(again.oof_probabilities, trained["rf"].oof_probabilities)
    np.testing.assert_array_equal(
        predict_probabilities(again.estimator, features),
        predict_probabilities(trained["rf"].estimator, features),
    )
    assert again.best_params == trained["rf"].best_params


def test_svm_probabilities_are_calibrated_explicitly(trained):
    classifier = trained["svm"].estimator.named_steps["clf"]
    assert isinstance(classifier, CalibratedClassifierCV)
    assert classifier.method == "sigmoid"
    assert classifier.estimator.random_state == FAST.seed


def test_scaling_and_selection_live_inside_the_pipeline(trained):
    steps = [name for name, _ in trained["lr"].estimator.steps]
    assert steps == ["impute", "constant", "scale", "select", "clf"]


def test_informative_features_are_selected(trained):
    selected = trained["lr"].selected_features
    assert "feature_0" in selected
    assert "feature_1" in selected
    assert "feature_7" not in selected


def test_out_of_fold_probabilities_are_valid(feature_table, trained):
    for kind, model in trained.items():
        assert model.oof_probabilities.shape == (36, 3), kind
        np.testing.assert_allclose(model.oof_probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_models_beat_chance_in_cross_validation(trained):
    for kind, model in trained.items():
        assert model.cv_score > 0.45, kind


def test_probability_columns_follow_class_labels(feature_table, trained):
    features, _, _ = feature_table
    probabilities = predict_probabilities(trained["lr"].estimator, features)
    mean_ce = probabilities[12:24].mean(axis=0)
    # Rows 12-23 are CE; CE is column 1 in CLASS_LABELS order (scikit-learn sorts "CE" first).
    assert int(np.argmax(mean_ce)) == 1


def test_close_top_two_probabilities_are_uncertain():
    close, clear = predictions_with_abstention(np.array([[0.45, 0.35, 0.20], [0.70, 0.20, 0.10]]))
    assert close.label == "HT"
    assert close.uncertain
    assert close.top_two_gap == pytest.approx(0.10)
    assert clear.label == "HT"
    assert not clear.uncertain


def test_uncertainty_margin_is_configurable():
    (prediction,) = predictions_with_abstention(np.array([[0.1, 0.55, 0.35]]), margin=0.25)
    assert prediction.label == "CE"
    assert prediction.uncertain
    assert prediction.to_dict()["uncertainty_margin"] == 0.25


def test_invalid_margin_is_rejected():
    with pytest.raises(ValueError, match="between 0 and 1"):
        predictions_with_abstention(np.array([[0.5, 0.3, 0.2]]), margin=1.5)


def test_class_smaller_than_fold_count_is_rejected(feature_table):
    features, labels, names = feature_table
    with pytest.raises(ValueError, match="fewer cases than the 3 cross-validation folds"):
        train_classical("lr", features[:26], labels[:26], names, FAST)


def test_svm_needs_cases_for_inner_calibration(feature_table):
    features, labels, names = feature_table
    rows = [0, 1, 2, 3, 12, 13, 14, 15, 24, 25, 26, 27]
    with pytest.raises(ValueError, match="use at least 5 cases per class") as raised:
        train_classical("svm", features[rows], [labels[i] for i in rows], names, FAST)
    assert "leaves 2 per search fold" in str(raised.value)


def test_stacker_on_classical_out_of_fold_probabilities(feature_table, trained):
    features, labels, _ = feature_table
    oof = {kind: model.oof_probabilities for kind, model in trained.items()}
    stacker = train_stacker(oof, labels, FAST)
    assert stacker.base_models == ["lr", "rf", "svm"]
    assert stacker.input_columns[:3] == ["lr:HT", "lr:CE", "lr:HT+CE"]
    base = {
        kind: predict_probabilities(model.estimator, features) for kind, model in trained.items()
    }
    stacked = predict_stacked(stacker.estimator, base, stacker.base_models)
    assert stacked.shape == (36, 3)
    np.testing.assert_allclose(stacked.sum(axis=1), 1.0, atol=1e-9)


def test_stacker_needs_every_base_model(trained):
    with pytest.raises(ValueError, match=r"base models \['svm'\] are missing"):
        stack_inputs({"lr": trained["lr"].oof_probabilities}, ["lr", "svm"])


def test_every_kind_round_trips_through_registry(tmp_path, feature_table, trained):
    features, _, _ = feature_table
    registry = ModelRegistry(tmp_path)
    for kind, model in trained.items():
        record = registry.register_sklearn(
            model.estimator,
            name=kind,
            kind=kind,
            version="1",
            params=model.params(),
            training_cohort_id="generated-table",
            seed=FAST.seed,
            synthetic_training_data=True,
        )
        loaded = registry.load_sklearn(record)
        np.testing.assert_array_equal(
            predict_probabilities(loaded, features),
            predict_probabilities(model.estimator, features),
        )
