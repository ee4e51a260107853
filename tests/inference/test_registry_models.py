"""Model registry: immutable versions, safe formats only, tamper detection."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from inference.errors import ModelArtifactError
from inference.models.registry import (
    INTENDED_USE_SYNTHETIC,
    ModelRegistry,
    sha256_file,
)


def _square(values):
    return values**2


@pytest.fixture()
def fitted_pipeline():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 4))
    labels = np.repeat(["HT", "CE", "HT+CE"], 10)
    features[labels == "CE", 0] += 2.0
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(random_state=0))])
    return pipeline.fit(features, labels), features


def _metadata(**overrides):
    values = {
        "name": "lr",
        "kind": "lr",
        "version": "1.0.0",
        "params": {"C": 1.0},
        "training_cohort_id": "synthetic-seed-0",
        "seed": 0,
        "metrics": {"cv_macro_f1": 0.8},
        "synthetic_training_data": True,
    }
    values.update(overrides)
    return values


def test_registered_model_loads_with_same_predictions(tmp_path, fitted_pipeline):
    pipeline, features = fitted_pipeline
    registry = ModelRegistry(tmp_path)
    record = registry.register_sklearn(pipeline, **_metadata())
    loaded = registry.load_sklearn(registry.read("lr", "1.0.0"))
    np.testing.assert_array_equal(loaded.predict_proba(features), pipeline.predict_proba(features))
    assert record.sha256 == sha256_file(tmp_path / "lr" / "1.0.0" / "model.skops")


def test_model_json_records_provenance(tmp_path, fitted_pipeline):
    registry = ModelRegistry(tmp_path)
    registry.register_sklearn(fitted_pipeline[0], **_metadata())
    data = json.loads((tmp_path / "lr" / "1.0.0" / "model.json").read_text())
    assert data["kind"] == "lr"
    assert data["seed"] == 0
    assert data["training_cohort_id"] == "synthetic-seed-0"
    assert data["intended_use"] == INTENDED_USE_SYNTHETIC
    assert data["library_versions"]["scikit-learn"] == "1.9.1"
    assert data["metrics"] == {"cv_macro_f1": 0.8}
    assert len(data["sha256"]) == 64


def test_registering_existing_version_is_rejected(tmp_path, fitted_pipeline):
    registry = ModelRegistry(tmp_path)
    registry.register_sklearn(fitted_pipeline[0], **_metadata())
    with pytest.raises(ModelArtifactError, match="already exists") as raised:
        registry.register_sklearn(fitted_pipeline[0], **_metadata(params={"C": 2.0}))
    assert raised.value.code == "model_version_exists"
    assert json.loads((tmp_path / "lr" / "1.0.0" / "model.json").read_text())["params"] == {
        "C": 1.0
    }


def test_existing_version_is_reported_before_training(tmp_path, fitted_pipeline):
    registry = ModelRegistry(tmp_path)
    registry.register_sklearn(fitted_pipeline[0], **_metadata())
    registry.ensure_new(["lr"], "2.0.0")
    with pytest.raises(ModelArtifactError, match=r"models \['lr'\] already have version 1.0.0"):
        registry.ensure_new(["svm", "lr"], "1.0.0")


def test_tampered_artifact_is_rejected(tmp_path, fitted_pipeline):
    registry = ModelRegistry(tmp_path)
    record = registry.register_sklearn(fitted_pipeline[0], **_metadata())
    artifact = record.artifact_path
    artifact.chmod(0o644)
    content = bytearray(artifact.read_bytes())
    content[-10] ^= 0xFF
    artifact.write_bytes(bytes(content))
    with pytest.raises(ModelArtifactError, match="was changed after registration") as raised:
        registry.load_sklearn(registry.read("lr", "1.0.0"))
    assert raised.value.code == "model_hash_mismatch"


def test_pickle_file_is_rejected_at_registration(tmp_path, fitted_pipeline):
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(fitted_pipeline[0]))
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(ModelArtifactError, match="runs code when loaded") as raised:
        registry.register_file(pickled, **_metadata())
    assert raised.value.code == "unsafe_model_format"
    assert not (tmp_path / "registry" / "lr").exists()


def test_joblib_file_is_rejected(tmp_path, fitted_pipeline):
    dumped = tmp_path / "model.joblib"
    dumped.write_bytes(pickle.dumps(fitted_pipeline[0]))
    with pytest.raises(ModelArtifactError, match="joblib"):
        ModelRegistry(tmp_path / "registry").register_file(dumped, **_metadata())


def test_pickle_swapped_in_with_matching_hash_is_rejected(tmp_path, fitted_pipeline):
    # An attacker who can write the folder replaces the artifact and its recorded hash. The
    # zip-header check still rejects the pickle before any loader reads it.
    registry = ModelRegistry(tmp_path)
    record = registry.register_sklearn(fitted_pipeline[0], **_metadata())
    artifact = record.artifact_path
    artifact.chmod(0o644)
    artifact.write_bytes(pickle.dumps(fitted_pipeline[0]))
    metadata_path = tmp_path / "lr" / "1.0.0" / "model.json"
    metadata_path.chmod(0o644)
    data = json.loads(metadata_path.read_text())
    data["sha256"] = sha256_file(artifact)
    metadata_path.write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="not a skops archive"):
        registry.load_sklearn(registry.read("lr", "1.0.0"))


def test_estimator_with_untrusted_function_is_rejected(tmp_path):
    pipeline = Pipeline([("square", FunctionTransformer(_square)), ("clf", LogisticRegression())])
    pipeline.fit(np.arange(12.0).reshape(6, 2), [0, 1, 0, 1, 0, 1])
    with pytest.raises(ModelArtifactError, match="does not trust") as raised:
        ModelRegistry(tmp_path).register_sklearn(pipeline, **_metadata())
    assert raised.value.code == "untrusted_model_type"


def test_missing_version_is_reported(tmp_path):
    with pytest.raises(ModelArtifactError, match="not found") as raised:
        ModelRegistry(tmp_path).read("svm", "9.9.9")
    assert raised.value.code == "model_not_found"


def test_invalid_version_name_is_rejected(tmp_path, fitted_pipeline):
    with pytest.raises(ValueError, match="invalid model version"):
        ModelRegistry(tmp_path).register_sklearn(fitted_pipeline[0], **_metadata(version="../x"))


def test_list_and_latest_versions(tmp_path, fitted_pipeline):
    registry = ModelRegistry(tmp_path)
    registry.register_sklearn(fitted_pipeline[0], **_metadata(version="1.0.0"))
    registry.register_sklearn(fitted_pipeline[0], **_metadata(version="1.0.1"))
    registry.register_sklearn(fitted_pipeline[0], **_metadata(name="svm", kind="svm"))
    assert [record.model_id for record in registry.list_versions()] == [
        "lr:1.0.0",
        "lr:1.0.1",
        "svm:1.0.0",
    ]
    assert registry.latest()["lr"].version == "1.0.1"


@pytest.fixture()
def tiny_unet():
    from inference.models.unet import SegmentClassifyUNet, TrainedUNet, UNetConfig

    config = UNetConfig(image_size=32, features=(4, 4, 8, 8, 16, 4))
    return TrainedUNet(network=SegmentClassifyUNet(config), config=config, seed=0)


def test_unet_registers_with_its_sidecar_and_loads(tmp_path, tiny_unet):
    import torch

    from inference.models.unet import load_unet

    registry = ModelRegistry(tmp_path)
    record = registry.register_unet(tiny_unet, **_metadata(name="unet", kind="unet"))
    folder = tmp_path / "unet" / "1.0.0"
    assert sorted(path.name for path in folder.iterdir()) == [
        "model.json",
        "unet.json",
        "weights.pt",
    ]
    assert record.artifact == "weights.pt"
    loaded = load_unet(registry.verified_artifact(registry.read("unet", "1.0.0")).parent)
    for name, tensor in tiny_unet.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], tensor), name


def test_changed_unet_sidecar_is_rejected(tmp_path, tiny_unet):
    registry = ModelRegistry(tmp_path)
    registry.register_unet(tiny_unet, **_metadata(name="unet", kind="unet"))
    sidecar = tmp_path / "unet" / "1.0.0" / "unet.json"
    sidecar.chmod(0o644)
    sidecar.write_text(sidecar.read_text().replace('"seed": 0', '"seed": 1'))
    with pytest.raises(ModelArtifactError, match="unet.json of model unet:1.0.0") as raised:
        registry.verified_artifact(registry.read("unet", "1.0.0"))
    assert raised.value.code == "model_hash_mismatch"
