"""Saving and loading trained U-Nets in formats that execute no code on load."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import monai
import torch

from inference.errors import ModelArtifactError
from inference.models.unet.network import SegmentClassifyUNet
from inference.models.unet.slices import UNetConfig
from inference.models.unet.training import TrainedUNet

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
METADATA_FILE = "unet.json"
ARTIFACT_FORMAT = "ceht-review-unet"
ARTIFACT_FORMAT_VERSION = 1
INTENDED_USE = "research use; not a medical device"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_unet(model: TrainedUNet, directory: Path | str) -> Path:
    """Write ``weights.pt`` (a plain tensor state dict) and ``unet.json`` into ``directory``.

    The JSON stores the config, classes, seed, training history, library versions and the
    weights' SHA-256, which ``load_unet`` checks. Returns the JSON file's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    state = {name: tensor.detach().cpu() for name, tensor in model.network.state_dict().items()}
    torch.save(state, weights_path)

    metadata = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "kind": "unet",
        "intended_use": INTENDED_USE,
        "classes": list(model.classes),
        "config": model.config.to_dict(),
        "seed": model.seed,
        "best_epoch": model.best_epoch,
        "history": model.history,
        "training_case_count": model.training_case_count,
        "validation_case_count": model.validation_case_count,
        "mask_case_count": model.mask_case_count,
        "training_seconds": model.training_seconds,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _sha256(weights_path),
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
    }
    metadata_path = directory / METADATA_FILE
    # The history contains NaN accuracy for epochs without class-labelled slices. Python's json
    # writes it as NaN and reads it back, although strict JSON parsers reject it.
    metadata_path.write_text(json.dumps(metadata, indent=2, allow_nan=True) + "\n")
    logger.info("Saved U-Net to %s (weights sha256 %s)", directory, metadata["weights_sha256"])
    return metadata_path


def _read_metadata(directory: Path) -> dict[str, Any]:
    metadata_path = directory / METADATA_FILE
    if not metadata_path.is_file():
        raise ModelArtifactError(
            f"{metadata_path} not found; pass a folder written by save_unet",
            path=str(metadata_path),
            code="artifact_missing",
        )
    try:
        metadata = json.loads(metadata_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelArtifactError(
            f"{metadata_path} is not valid JSON ({error}); save the model again",
            path=str(metadata_path),
            code="artifact_invalid",
        ) from error
    if not isinstance(metadata, dict) or metadata.get("format") != ARTIFACT_FORMAT:
        raise ModelArtifactError(
            f"{metadata_path} is not a U-Net artifact (format is not {ARTIFACT_FORMAT!r})",
            path=str(metadata_path),
            code="artifact_invalid",
        )
    if metadata.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ModelArtifactError(
            f"{metadata_path} has format_version {metadata.get('format_version')!r}; this "
            f"code reads version {ARTIFACT_FORMAT_VERSION}, so retrain or use matching code",
            path=str(metadata_path),
            code="artifact_version",
        )
    return metadata


def load_unet(directory: Path | str) -> TrainedUNet:
    """Load a U-Net written by ``save_unet``.

    The weights are checked against the SHA-256 in ``unet.json`` and read with
    ``torch.load(weights_only=True)``, which restores tensors and plain containers only and
    rejects any pickled object that would run code. Raises ``ModelArtifactError`` for a
    missing, altered, unsafe or mismatched artifact.
    """
    directory = Path(directory)
    metadata = _read_metadata(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelArtifactError(
            f"{weights_path} not found; the folder is incomplete, so save the model again",
            path=str(weights_path),
            code="artifact_missing",
        )
    actual_sha256 = _sha256(weights_path)
    if actual_sha256 != metadata.get("weights_sha256"):
        raise ModelArtifactError(
            f"{weights_path} has sha256 {actual_sha256}, but {METADATA_FILE} records "
            f"{metadata.get('weights_sha256')}; the file was altered, so restore or retrain it",
            path=str(weights_path),
            code="artifact_tampered",
        )

    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ModelArtifactError(
            f"{weights_path} is not a plain tensor state dict and was not loaded ({error}); "
            "only weights written by save_unet are accepted",
            path=str(weights_path),
            code="artifact_unsafe",
        ) from error
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ModelArtifactError(
            f"{weights_path} does not contain a mapping of names to tensors",
            path=str(weights_path),
            code="artifact_invalid",
        )

    try:
        config = UNetConfig.from_dict(metadata["config"])
        classes = tuple(str(name) for name in metadata["classes"])
        network = SegmentClassifyUNet(config, class_count=len(classes))
        network.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelArtifactError(
            f"{directory} has weights or settings that do not fit the U-Net ({error}); "
            "retrain the model with this version of the code",
            path=str(directory),
            code="artifact_mismatch",
        ) from error
    network.eval()
    return TrainedUNet(
        network=network,
        config=config,
        seed=int(metadata.get("seed", 0)),
        classes=classes,
        best_epoch=int(metadata.get("best_epoch", 0)),
        history=list(metadata.get("history", [])),
        training_case_count=int(metadata.get("training_case_count", 0)),
        validation_case_count=int(metadata.get("validation_case_count", 0)),
        mask_case_count=int(metadata.get("mask_case_count", 0)),
        training_seconds=float(metadata.get("training_seconds", 0.0)),
    )
