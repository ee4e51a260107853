"""Training, prediction and artifacts of the slice U-Net on small generated head volumes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.errors import ModelArtifactError
from inference.models.unet import (
    CLASSES,
    TrainedUNet,
    TrainingCase,
    UNetConfig,
    load_unet,
    predict_unet,
    save_unet,
    train_unet,
)
from inference.models.unet.artifacts import METADATA_FILE, WEIGHTS_FILE
from inference.volume import Volume

SLICES = 8
MATRIX = 96
# Mean lesion attenuation per class: blood at 50-90 HU, contrast usually above 90 HU.
LESION_HU = {"HT": 65.0, "CE": 130.0, "HT+CE": 95.0}
SMALL = UNetConfig(image_size=32, max_epochs=2, batch_size=8, validation_fraction=0.0)


def make_case(rng: np.random.Generator, label: str) -> TrainingCase:
    """Build a skull ellipse (800 HU) around brain (30 HU) with a round lesion on slices 2..5."""
    rows, columns = np.mgrid[:MATRIX, :MATRIX]
    centre = MATRIX / 2
    head = ((rows - centre) / (0.42 * MATRIX)) ** 2 + ((columns - centre) / (0.36 * MATRIX)) ** 2
    brain = ((rows - centre) / (0.38 * MATRIX)) ** 2 + ((columns - centre) / (0.32 * MATRIX)) ** 2
    lesion_row = centre + rng.integers(-12, 13)
    lesion_column = centre + rng.integers(-10, 11)
    radius = rng.integers(5, 9)
    lesion = (rows - lesion_row) ** 2 + (columns - lesion_column) ** 2 <= radius**2

    hu = np.full((SLICES, MATRIX, MATRIX), -1000.0, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for z in range(SLICES):
        section = np.where(head <= 1, 800.0, -1000.0)
        section[brain <= 1] = 30.0 + rng.normal(0.0, 4.0, int((brain <= 1).sum()))
        if 2 <= z < 6:
            section[lesion] = LESION_HU[label] + rng.normal(0.0, 4.0, int(lesion.sum()))
            labels[z][lesion] = 1
        hu[z] = section
    volume = Volume(
        hu=hu,
        spacing_zyx_mm=(5.0, 0.9, 0.9),
        origin_xyz_mm=(0.0, 0.0, 0.0),
        direction=np.eye(3),
        sop_instance_uids=[f"1.2.826.0.1.{z}" for z in range(SLICES)],
    )
    return TrainingCase(volume=volume, lesion_labels=labels, label=label)


def make_cases(count: int, seed: int) -> list[TrainingCase]:
    rng = np.random.default_rng(seed)
    return [make_case(rng, CLASSES[index % len(CLASSES)]) for index in range(count)]


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(2.0 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


@pytest.fixture(scope="module")
def toy_cases() -> list[TrainingCase]:
    return make_cases(6, seed=11)


@pytest.fixture(scope="module")
def trained(toy_cases: list[TrainingCase]) -> TrainedUNet:
    return train_unet(toy_cases, SMALL, seed=7)


@pytest.fixture(scope="module")
def saved_dir(trained: TrainedUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("unet")
    save_unet(trained, directory)
    return directory


def copy_artifact(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in (WEIGHTS_FILE, METADATA_FILE):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_prediction_has_volume_shaped_outputs(
    trained: TrainedUNet, toy_cases: list[TrainingCase]
) -> None:
    volume = toy_cases[0].volume

    prediction = predict_unet(volume, trained)

    assert prediction.mask.shape == (SLICES, MATRIX, MATRIX)
    assert prediction.mask.dtype == np.bool_
    assert prediction.slice_probabilities.shape == (SLICES, 3)
    assert prediction.slice_weights.shape == (SLICES,)
    assert list(prediction.probabilities) == ["HT", "CE", "HT+CE"]
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.slice_probabilities.sum(axis=1) == pytest.approx(np.ones(SLICES))
    assert prediction.slice_weights.sum() == pytest.approx(1.0)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert prediction.runtime_s > 0.0


def test_slices_without_head_get_no_weight(
    trained: TrainedUNet, toy_cases: list[TrainingCase]
) -> None:
    source = toy_cases[0].volume
    air = np.full((2, MATRIX, MATRIX), -1000.0, dtype=np.float32)
    volume = dataclasses.replace(
        source,
        hu=np.concatenate([air, source.hu]),
        sop_instance_uids=["1.2.826.0.2.0", "1.2.826.0.2.1", *source.sop_instance_uids],
    )

    prediction = predict_unet(volume, trained)

    assert prediction.slice_weights[:2].tolist() == [0.0, 0.0]
    assert not prediction.mask[:2].any()
    assert prediction.slice_weights[2:].sum() == pytest.approx(1.0)


def test_training_records_history(trained: TrainedUNet) -> None:
    assert len(trained.history) == 2
    assert trained.best_epoch == 2
    assert trained.training_case_count == 6
    assert trained.validation_case_count == 0
    assert trained.mask_case_count == 6
    assert trained.seed == 7


def test_training_with_same_seed_is_identical(
    trained: TrainedUNet, toy_cases: list[TrainingCase]
) -> None:
    again = train_unet(toy_cases, SMALL, seed=7)

    first_state = trained.network.state_dict()
    second_state = again.network.state_dict()
    assert list(first_state) == list(second_state)
    for name, tensor in first_state.items():
        assert torch.equal(tensor, second_state[name]), name
    assert [row["train_loss"] for row in again.history] == [
        row["train_loss"] for row in trained.history
    ]
    first = predict_unet(toy_cases[1].volume, trained)
    second = predict_unet(toy_cases[1].volume, again)
    assert first.probabilities == second.probabilities
    assert np.array_equal(first.mask, second.mask)


def test_training_with_other_seed_differs(
    trained: TrainedUNet, toy_cases: list[TrainingCase]
) -> None:
    other = train_unet(toy_cases, SMALL, seed=8)

    name = "classifier.3.weight"
    assert not torch.equal(trained.network.state_dict()[name], other.network.state_dict()[name])


def test_saved_model_predicts_identically(
    trained: TrainedUNet, saved_dir: Path, toy_cases: list[TrainingCase]
) -> None:
    loaded = load_unet(saved_dir)

    original = predict_unet(toy_cases[2].volume, trained)
    restored = predict_unet(toy_cases[2].volume, loaded)
    assert loaded.config == trained.config
    assert loaded.classes == CLASSES
    assert loaded.seed == 7
    assert loaded.mask_case_count == 6
    assert loaded.history == trained.history
    assert restored.probabilities == original.probabilities
    assert np.array_equal(restored.slice_probabilities, original.slice_probabilities)
    assert np.array_equal(restored.mask, original.mask)


def test_saved_metadata_records_provenance(saved_dir: Path) -> None:
    metadata = json.loads((saved_dir / METADATA_FILE).read_text())

    assert metadata["kind"] == "unet"
    assert metadata["intended_use"] == "research use; not a medical device"
    assert metadata["seed"] == 7
    assert metadata["torch_version"] == torch.__version__
    assert len(metadata["weights_sha256"]) == 64
    assert metadata["config"]["image_size"] == 32


class _RunsCodeOnLoad:
    """A pickle payload that would create a marker file if unpickling executed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "executed"))  # type: ignore[return-value]


def test_pickled_object_in_weights_is_rejected(saved_dir: Path, tmp_path: Path) -> None:
    directory = copy_artifact(saved_dir, tmp_path / "unsafe")
    marker = tmp_path / "marker.txt"
    weights_path = directory / WEIGHTS_FILE
    with weights_path.open("wb") as handle:
        pickle.dump({"unet.conv_0": _RunsCodeOnLoad(marker)}, handle, protocol=2)
    # Record the new file's hash, as an attacker who can write both files would, so that the
    # safe loader itself must refuse it.
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["weights_sha256"] = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    (directory / METADATA_FILE).write_text(json.dumps(metadata))

    with pytest.raises(ModelArtifactError) as caught:
        load_unet(directory)

    assert caught.value.code == "artifact_unsafe"
    assert not marker.exists()


def test_altered_weights_are_rejected(saved_dir: Path, tmp_path: Path) -> None:
    directory = copy_artifact(saved_dir, tmp_path / "altered")
    weights = bytearray((directory / WEIGHTS_FILE).read_bytes())
    weights[-100] ^= 0xFF
    (directory / WEIGHTS_FILE).write_bytes(bytes(weights))

    with pytest.raises(ModelArtifactError, match="altered") as caught:
        load_unet(directory)

    assert caught.value.code == "artifact_tampered"


def test_missing_metadata_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactError, match="unet.json not found") as caught:
        load_unet(tmp_path)

    assert caught.value.code == "artifact_missing"


def test_config_that_does_not_fit_weights_is_rejected(saved_dir: Path, tmp_path: Path) -> None:
    directory = copy_artifact(saved_dir, tmp_path / "mismatch")
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["config"]["features"] = [16, 16, 32, 64, 128, 16]
    (directory / METADATA_FILE).write_text(json.dumps(metadata))

    with pytest.raises(ModelArtifactError) as caught:
        load_unet(directory)

    assert caught.value.code == "artifact_mismatch"


def test_model_learns_easy_toy_set() -> None:
    cases = make_cases(9, seed=21)
    config = dataclasses.replace(SMALL, max_epochs=20, batch_size=4, learning_rate=5e-3)

    model = train_unet(cases, config, seed=3)

    losses = [row["train_loss"] for row in model.history]
    assert losses[-1] < 0.6 * losses[0]
    truth = cases[0].lesion_labels
    assert truth is not None
    prediction = predict_unet(cases[0].volume, model)
    # A 32 x 32 grid resolves the lesion only coarsely, hence the modest Dice bound.
    assert dice(prediction.mask, truth > 0) > 0.4
    # Slices 2..5 hold the lesion, so they carry almost all of the case probability.
    assert prediction.slice_weights[2:6].sum() > 0.9


def test_early_stopping_keeps_best_validation_epoch(toy_cases: list[TrainingCase]) -> None:
    cases = toy_cases + make_cases(3, seed=12)
    config = dataclasses.replace(SMALL, max_epochs=8, patience=1, validation_fraction=0.3)

    model = train_unet(cases, config, seed=5)

    validation_losses = [row["validation_loss"] for row in model.history]
    assert model.validation_case_count == 3
    assert model.training_case_count == 6
    assert model.best_epoch == int(np.argmin(validation_losses)) + 1
    assert len(model.history) <= model.best_epoch + config.patience


def test_unlabelled_cases_train_class_head(toy_cases: list[TrainingCase]) -> None:
    cases = [TrainingCase(case.volume, None, case.label) for case in toy_cases[:3]]
    config = dataclasses.replace(SMALL, max_epochs=1)

    model = train_unet(cases, config, seed=1)
    prediction = predict_unet(toy_cases[0].volume, model)

    assert len(model.history) == 1
    assert 0.0 <= model.history[0]["train_slice_accuracy"] <= 1.0
    assert model.mask_case_count == 0
    # The untrained mask output is ignored: no lesion, and every slice shows the head, so
    # every slice weighs the same.
    assert not prediction.mask.any()
    assert prediction.slice_weights == pytest.approx(np.full(SLICES, 1.0 / SLICES))


def test_unknown_label_is_rejected(toy_cases: list[TrainingCase]) -> None:
    cases = [TrainingCase(toy_cases[0].volume, toy_cases[0].lesion_labels, "ICH")]

    with pytest.raises(ValueError, match="'ICH'"):
        train_unet(cases, SMALL, seed=1)


def test_labels_without_lesion_voxels_are_rejected(toy_cases: list[TrainingCase]) -> None:
    volume = toy_cases[0].volume
    cases = [TrainingCase(volume, np.zeros(volume.shape, dtype=np.uint8), "HT")]

    with pytest.raises(ValueError, match="no training slice"):
        train_unet(cases, SMALL, seed=1)
