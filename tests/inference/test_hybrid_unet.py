"""The hybrid stacked on the radiomics models and the U-Net's out-of-fold probabilities.

The cohort is tiny on purpose (5 training cases per class, 64 x 64 U-Net slices, one epoch,
one PyTorch thread), so the cost of training one U-Net per fold shows in the test time
without dominating the suite. The models are trained on synthetic data.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.evaluation import CLASS_LABELS
from inference.models.classical import TrainingConfig
from inference.models.hybrid import predict_stacked
from inference.models.registry import ModelRegistry
from inference.models.unet import CLASSES, UNetConfig, out_of_fold_probabilities
from inference.models.unet.oof import fold_seed
from inference.pipeline import ModelSet, analyse_volume, predict_volume
from inference.radiomics import load_settings
from inference.synthetic.case import generate_case_volume
from inference.training import (
    STACKING_RADIOMICS_ONLY,
    CohortEntry,
    build_feature_table,
    out_of_fold_splits,
    train_cohort,
    train_models,
    unet_training_cases,
)

CONFIG = TrainingConfig(seed=3, n_splits=3, n_repeats=1, k_features=(10,), rf_trees=30)
UNET = UNetConfig(image_size=64, max_epochs=2, batch_size=8, validation_fraction=0.0)
OOF_EPOCHS = 1
TRAIN_PER_CLASS = 5


def _entry(label: str, index: int, split: str = "train") -> CohortEntry:
    case = generate_case_volume(label, seed=(2000 + 100 * CLASS_LABELS.index(label) + index,))
    return CohortEntry(
        code=f"SYN-{label}-{index:02d}",
        label=label,
        split=split,
        volume=case.baseline_volume(),
        load_true_labels=lambda: case.true_labels,
    )


@pytest.fixture(scope="module")
def cohort() -> list[CohortEntry]:
    entries = [_entry(label, i) for label in CLASS_LABELS for i in range(TRAIN_PER_CLASS)]
    entries.append(_entry("CE", 50, split="test"))
    return entries


def _train(entries: list[CohortEntry], root: Path) -> tuple[ModelRegistry, float]:
    torch.set_num_threads(1)
    registry = ModelRegistry(root)
    started = time.perf_counter()
    train_cohort(
        entries,
        registry,
        version="1",
        cohort_id="synthetic-hybrid-test",
        config=CONFIG,
        with_unet=True,
        unet_config=UNET,
        unet_oof_epochs=OOF_EPOCHS,
    )
    return registry, time.perf_counter() - started


@pytest.fixture(scope="module")
def stacked(cohort, tmp_path_factory) -> tuple[ModelRegistry, float]:
    return _train(cohort, tmp_path_factory.mktemp("stacked"))


def test_hybrid_stacks_radiomics_models_and_unet(stacked):
    registry, _seconds = stacked
    hybrid = registry.read("hybrid", "1")
    unet = registry.read("unet", "1")
    assert hybrid.params["stacked_models"] == ["lr", "rf", "svm", "unet"]
    assert hybrid.params["stacks_unet"] is True
    assert "U-Net" in hybrid.params["stacking"]
    by_name = {item["name"]: item for item in hybrid.extra["base_models"]}
    assert by_name["unet"] == {"name": "unet", "version": "1", "sha256": unet.sha256}
    assert len(hybrid.extra["input_columns"]) == 4 * len(CLASS_LABELS)
    assert "unet:HT+CE" in hybrid.extra["input_columns"]
    estimator = registry.load_sklearn(hybrid)
    assert estimator.coef_.shape == (len(CLASS_LABELS), 4 * len(CLASS_LABELS))


def test_fold_unets_recorded_with_cost(stacked):
    registry, seconds = stacked
    oof = registry.read("hybrid", "1").params["unet_out_of_fold"]
    assert oof["folds"] == CONFIG.n_splits
    assert oof["same_folds_as_radiomics"] is True
    # Fewer epochs for the fold U-Nets than for the final one, stated in the parameters.
    assert oof["max_epochs"] == OOF_EPOCHS
    assert oof["final_unet_max_epochs"] == UNET.max_epochs
    assert f"at most {OOF_EPOCHS} epochs" in oof["note"]
    assert oof["fold_seeds"] == [fold_seed(CONFIG.seed, fold) for fold in range(3)]
    assert oof["image_size"] == 64
    assert len(oof["fold_seconds"]) == 3
    assert 0 < oof["seconds"] < seconds
    assert registry.read("unet", "1").params["max_epochs"] == UNET.max_epochs


def test_same_seed_gives_same_stacker(cohort, stacked, tmp_path):
    registry, _seconds = stacked
    again, _ = _train(cohort, tmp_path / "again")
    first = registry.load_sklearn(registry.read("hybrid", "1"))
    second = again.load_sklearn(again.read("hybrid", "1"))
    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.intercept_, second.intercept_)
    assert registry.read("unet", "1").sha256 == again.read("unet", "1").sha256


def test_pipeline_feeds_unet_probabilities_into_hybrid(cohort, stacked):
    registry, _seconds = stacked
    models = ModelSet(registry, load_settings())
    analysis = analyse_volume(cohort[-1].baseline_volume())
    outputs = {output.model_id: output for output in predict_volume(analysis, models)}
    assert sorted(outputs) == ["hybrid:1", "lr:1", "rf:1", "svm:1", "unet:1"]
    for output in outputs.values():
        assert output.error is None, output.error
    rows = {
        model_id.split(":")[0]: np.array(
            [[output.prediction.probabilities[label] for label in CLASS_LABELS]]
        )
        for model_id, output in outputs.items()
        if output.prediction is not None
    }
    hybrid = models.records["hybrid"]
    expected = predict_stacked(models.estimator(hybrid), rows, ["lr", "rf", "svm", "unet"])
    observed = rows["hybrid"]
    np.testing.assert_allclose(observed, expected, rtol=0, atol=1e-12)
    # Without the U-Net's column block the stacker would give other probabilities.
    shifted = dict(rows, unet=rows["unet"][:, ::-1])
    assert not np.allclose(
        predict_stacked(models.estimator(hybrid), shifted, ["lr", "rf", "svm", "unet"]),
        observed,
    )


def test_hybrid_refuses_when_its_unet_is_missing(cohort, stacked, tmp_path):
    registry, _seconds = stacked
    copy = tmp_path / "models"
    shutil.copytree(registry.root, copy)
    shutil.rmtree(copy / "unet")
    models = ModelSet(ModelRegistry(copy), load_settings())
    analysis = analyse_volume(cohort[-1].baseline_volume())
    outputs = {output.model_id: output for output in predict_volume(analysis, models)}
    hybrid = outputs["hybrid:1"]
    assert hybrid.prediction is None
    assert hybrid.error is not None
    assert hybrid.error["code"] == "base_model_missing"
    assert "stacked on unet:1" in hybrid.error["message"]
    assert "--with-unet" in hybrid.error["message"]
    # The radiomics models do not depend on the U-Net and still predict.
    for name in ("lr:1", "rf:1", "svm:1"):
        assert outputs[name].error is None


def test_hybrid_without_unet_radiomics_only(cohort, tmp_path):
    table = build_feature_table(cohort[:-1], split="train")
    registry = ModelRegistry(tmp_path)
    train_models(
        table,
        registry,
        version="1",
        cohort_id="synthetic-hybrid-test",
        config=CONFIG,
        kinds=("lr", "rf"),
    )
    hybrid = registry.read("hybrid", "1")
    assert hybrid.params["stacked_models"] == ["lr", "rf"]
    assert hybrid.params["stacks_unet"] is False
    assert hybrid.params["stacking"] == STACKING_RADIOMICS_ONLY
    assert "unet_out_of_fold" not in hybrid.params


def test_unet_oof_holds_out_each_case(cohort):
    torch.set_num_threads(1)
    train = [entry for entry in cohort if entry.split == "train"]
    codes = [entry.code for entry in reversed(train)]
    cases = unet_training_cases(cohort, codes)
    # The cases follow the requested order, not the cohort's.
    assert [case.label for case in cases] == [entry.label for entry in reversed(train)]
    labels = [case.label for case in cases]
    folds = out_of_fold_splits(labels, 3, seed=1)
    tiny = UNetConfig(image_size=32, max_epochs=1, validation_fraction=0.0)
    result = out_of_fold_probabilities(cases, folds, tiny, seed=1)
    assert result.probabilities.shape == (len(cases), len(CLASSES))
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-9)
    for number, (_train_index, held_out) in enumerate(folds):
        assert all(result.fold_of_case[int(index)] == number for index in held_out)
    # Stratified: every fold holds out at least one case of every class.
    for _train_index, held_out in folds:
        assert {labels[int(index)] for index in held_out} == set(CLASSES)


def test_unet_oof_rejects_incomplete_folds(cohort):
    cases = unet_training_cases(cohort)[:4]
    folds = [(np.array([0, 1]), np.array([2])), (np.array([2, 3]), np.array([0, 1]))]
    with pytest.raises(ValueError, match=r"cases \[3\] are held out by no fold"):
        out_of_fold_probabilities(cases, folds, UNET, seed=0)


def test_unknown_table_code_is_reported(cohort):
    from inference.errors import InferenceError

    with pytest.raises(InferenceError, match="SYN-absent"):
        unet_training_cases(cohort, ["SYN-absent"])


def test_command_line_rejects_oof_options_without_unet(tmp_path, capsys):
    from inference.cli import main

    arguments = ["train", "--cohort", str(tmp_path), "--out", str(tmp_path / "m")]
    assert main([*arguments, "--unet-oof-epochs", "2"]) == 2
    assert "need --with-unet" in capsys.readouterr().err
    assert main([*arguments, "--with-unet", "--unet-oof-folds", "1"]) == 2
    assert "--unet-oof-folds 1 is too small" in capsys.readouterr().err


def test_bundled_radiomics_only_hybrid_still_predicts():
    demo = Path(__file__).resolve().parents[2] / "models" / "demo"
    if not (demo / "hybrid").is_dir():
        pytest.skip(f"no bundled demo hybrid at {demo}")
    registry = ModelRegistry(demo)
    hybrid = registry.latest()["hybrid"]
    # Registered before the hybrid could stack the U-Net: no stacking parameters at all.
    assert "unet" not in [item["name"] for item in hybrid.extra["base_models"]]
    models = ModelSet(registry, load_settings())
    case = generate_case_volume("CE", seed=(41,))
    analysis = analyse_volume(case.baseline_volume())
    outputs = {output.model_id.split(":")[0]: output for output in predict_volume(analysis, models)}
    assert outputs["hybrid"].error is None, outputs["hybrid"].error
    probabilities = outputs["hybrid"].prediction.probabilities
    assert sum(probabilities.values()) == pytest.approx(1.0)
