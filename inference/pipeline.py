"""The whole pipeline on one study: load, segment, radiomics, every registered model.

``predict_study`` returns each model's probabilities, label and ``uncertain`` flag. With them
comes the provenance a reviewer needs to trust or reproduce them: model version and artifact
sha256, library versions, radiomics settings hash, input series UID, pixel-data hash, and the
time each step took. A model that fails to load (a tampered artifact, a settings mismatch) is
reported with its error and does not stop the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import InferenceError, ModelArtifactError
from inference.evaluation.metrics import CLASS_LABELS
from inference.models.classical import (
    DEFAULT_UNCERTAINTY_MARGIN,
    Prediction,
    predict_probabilities,
    predictions_with_abstention,
)
from inference.models.hybrid import predict_stacked
from inference.models.registry import ModelRegistry, ModelVersion, library_versions
from inference.radiomics import (
    CaseFeatures,
    RadiomicsSettings,
    extract_case_features,
    load_settings,
    sha256_array,
)
from inference.segmentation import SegmentationResult, segment_hyperdensities
from inference.volume import Volume

logger = logging.getLogger(__name__)


@dataclass
class VolumeAnalysis:
    """Segmentation and radiomics of one volume, with step timings in seconds."""

    volume: Volume
    segmentation: SegmentationResult
    radiomics: CaseFeatures
    timings_s: dict[str, float]

    def feature_vector(self, feature_names: Sequence[str]) -> np.ndarray:
        """Return the case aggregate in ``feature_names`` order (NaN for absent names)."""
        aggregate = self.radiomics.aggregate
        return np.array([aggregate.get(name, np.nan) for name in feature_names], dtype=np.float64)


def analyse_volume(volume: Volume, settings: RadiomicsSettings | None = None) -> VolumeAnalysis:
    """Segment hyperdensities and compute their radiomics."""
    settings = settings or load_settings()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    segmentation = segment_hyperdensities(volume)
    timings["segment"] = time.perf_counter() - started
    started = time.perf_counter()
    labels, values = segmentation.hyperdensity_labels()
    features = extract_case_features(volume, labels, values, settings)
    timings["radiomics"] = time.perf_counter() - started
    return VolumeAnalysis(volume, segmentation, features, timings)


@dataclass
class ModelPrediction:
    """One registered model's output for the study, or the error that prevented it."""

    model_id: str
    kind: str
    version: str
    artifact_sha256: str
    intended_use: str
    prediction: Prediction | None
    runtime_s: float
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "kind": self.kind,
            "version": self.version,
            "artifact_sha256": self.artifact_sha256,
            "intended_use": self.intended_use,
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "runtime_s": self.runtime_s,
            "error": self.error,
        }


@dataclass
class StudyPrediction:
    """Predictions of every registered model for one study, with provenance."""

    study_path: str
    series_instance_uid: str
    pixel_sha256: str
    models: list[ModelPrediction]
    lesions: list[dict[str, Any]]
    radiomics_provenance: dict[str, Any]
    timings_s: dict[str, float]
    library_versions: dict[str, str]
    notes: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_path": self.study_path,
            "series_instance_uid": self.series_instance_uid,
            "pixel_sha256": self.pixel_sha256,
            "models": [model.to_dict() for model in self.models],
            "lesions": list(self.lesions),
            "radiomics_provenance": dict(self.radiomics_provenance),
            "timings_s": dict(self.timings_s),
            "library_versions": dict(self.library_versions),
            "notes": list(self.notes),
        }


class ModelSet:
    """The latest version of each registered model, loaded once and checked."""

    def __init__(
        self, registry: ModelRegistry, settings: RadiomicsSettings, device: str = "cpu"
    ) -> None:
        self.registry = registry
        self.settings = settings
        # Where torch models run: cpu, cuda or auto (inference.models.unet.resolve_device).
        self.device = device
        self.records = registry.latest()
        self._loaded: dict[str, Any] = {}
        self.load_errors: dict[str, InferenceError] = {}

    def estimator(self, record: ModelVersion) -> Any:
        """Load (once) and return the model object of ``record``; raise on a bad artifact."""
        if record.model_id in self._loaded:
            return self._loaded[record.model_id]
        if record.kind == "unet":
            from inference.models.unet import load_unet

            # The registry checks the weights and unet.json hashes; load_unet then reads the
            # weights with torch.load(weights_only=True).
            loaded = load_unet(self.registry.verified_artifact(record).parent)
        else:
            wanted = record.extra.get("radiomics_settings_sha256")
            if wanted is not None and wanted != self.settings.sha256:
                raise ModelArtifactError(
                    f"model {record.model_id} was trained on radiomics settings "
                    f"{record.extra.get('radiomics_settings_id')} (sha256 {str(wanted)[:12]}...), "
                    f"but the pipeline uses {self.settings.settings_id} "
                    f"({self.settings.sha256[:12]}...); retrain it or load matching settings",
                    code="radiomics_settings_mismatch",
                )
            loaded = self.registry.load_sklearn(record)
        self._loaded[record.model_id] = loaded
        return loaded

    def ordered(self) -> list[ModelVersion]:
        """Return records with base models before the hybrid models that stack them."""
        return sorted(
            self.records.values(), key=lambda record: (record.kind == "hybrid", record.name)
        )


def _predict_record(
    models: ModelSet,
    record: ModelVersion,
    analysis: VolumeAnalysis,
    base_probabilities: dict[str, np.ndarray],
    margin: float,
) -> np.ndarray:
    estimator = models.estimator(record)
    if record.kind == "unet":
        from inference.models.unet import predict_unet

        output = predict_unet(analysis.volume, estimator, models.device)
        return np.array([[output.probabilities[label] for label in CLASS_LABELS]])
    if record.kind == "hybrid":
        return _predict_hybrid(models, record, estimator, analysis, base_probabilities, margin)
    feature_names = record.extra.get("feature_names")
    if not feature_names:
        raise ModelArtifactError(
            f"model {record.model_id} lacks feature_names in model.json; re-register it",
            code="model_metadata_incomplete",
        )
    return predict_probabilities(estimator, analysis.feature_vector(feature_names))


def _predict_hybrid(
    models: ModelSet,
    record: ModelVersion,
    estimator: Any,
    analysis: VolumeAnalysis,
    base_probabilities: dict[str, np.ndarray],
    margin: float,
) -> np.ndarray:
    """Stack the exact base-model versions the hybrid was trained on, even if newer exist.

    A hybrid stacked on the U-Net gets the U-Net's case probabilities like any other base
    model's. A hybrid trained without it (``params["stacks_unet"]`` false or absent) does not
    run the U-Net.
    """
    base_models = record.extra.get("base_models") or []
    if not base_models:
        raise ModelArtifactError(
            f"hybrid {record.model_id} lists no base models in model.json; retrain it with "
            "`python -m inference train`",
            code="model_metadata_incomplete",
        )
    inputs: dict[str, np.ndarray] = {}
    for item in base_models:
        name, version = str(item["name"]), str(item["version"])
        try:
            base_record = models.registry.read(name, version)
        except ModelArtifactError as error:
            if error.code != "model_not_found":
                raise
            retrain = "python -m inference train" + (" --with-unet" if name == "unet" else "")
            raise ModelArtifactError(
                f"hybrid {record.model_id} was stacked on {name}:{version}, which is not in the "
                f"model registry {models.registry.root}; restore {name} version {version} or "
                f"retrain the hybrid with `{retrain}`",
                path=error.path,
                code="base_model_missing",
            ) from error
        if base_record.sha256 != item.get("sha256"):
            raise ModelArtifactError(
                f"hybrid {record.model_id} was trained on {name}:{version} with sha256 "
                f"{str(item.get('sha256'))[:12]}..., but the registry holds {base_record.sha256[:12]}...",
                code="model_hash_mismatch",
            )
        if base_record.model_id not in base_probabilities:
            base_probabilities[base_record.model_id] = _predict_record(
                models, base_record, analysis, base_probabilities, margin
            )
        inputs[name] = base_probabilities[base_record.model_id]
    return predict_stacked(estimator, inputs, list(inputs))


def predict_volume(
    analysis: VolumeAnalysis,
    models: ModelSet,
    margin: float | None = None,
) -> list[ModelPrediction]:
    """Run every registered model on an analysed volume."""
    outputs: list[ModelPrediction] = []
    probabilities_by_id: dict[str, np.ndarray] = {}
    for record in models.ordered():
        started = time.perf_counter()
        model_margin = float(
            margin
            if margin is not None
            else record.params.get("uncertainty_margin", DEFAULT_UNCERTAINTY_MARGIN)
        )
        try:
            probabilities = _predict_record(
                models, record, analysis, probabilities_by_id, model_margin
            )
        except (InferenceError, ValueError) as error:
            # One unusable model must not hide the others' results; the error is reported
            # on this model's row.
            details = (
                error.to_dict()
                if isinstance(error, InferenceError)
                else {
                    "code": "prediction_failed",
                    "message": str(error),
                    "path": None,
                }
            )
            logger.warning("Model %s failed: %s", record.model_id, details["message"])
            outputs.append(
                ModelPrediction(
                    record.model_id,
                    record.kind,
                    record.version,
                    record.sha256,
                    record.intended_use,
                    None,
                    time.perf_counter() - started,
                    details,
                )
            )
            continue
        probabilities_by_id[record.model_id] = probabilities
        prediction = predictions_with_abstention(probabilities, model_margin)[0]
        outputs.append(
            ModelPrediction(
                record.model_id,
                record.kind,
                record.version,
                record.sha256,
                record.intended_use,
                prediction,
                time.perf_counter() - started,
            )
        )
    return outputs


def predict_study(
    path: Path | str,
    registry_dir: Path | str,
    *,
    settings: RadiomicsSettings | None = None,
    margin: float | None = None,
    device: str = "cpu",
) -> StudyPrediction:
    """Load a DICOM study and return every registered model's prediction with provenance.

    ``device`` is where the U-Net runs: ``cpu``, ``cuda`` or ``auto``.

    Raises the loader's ``InferenceError`` subclasses when the study has no usable series,
    and ``ModelArtifactError`` when the registry contains no model.
    """
    from inference.dicom import load_study

    settings = settings or load_settings()
    registry = ModelRegistry(registry_dir)
    models = ModelSet(registry, settings, device)
    if not models.records:
        raise ModelArtifactError(
            f"no registered model in {registry_dir}; train one with "
            "`python -m inference train` or point --models at a model folder",
            path=str(registry_dir),
            code="model_not_found",
        )
    timings: dict[str, float] = {}
    started = time.perf_counter()
    volume, _scan = load_study(path)
    timings["load"] = time.perf_counter() - started
    analysis = analyse_volume(volume, settings)
    timings.update(analysis.timings_s)
    started = time.perf_counter()
    outputs = predict_volume(analysis, models, margin)
    timings["models"] = time.perf_counter() - started
    timings["total"] = sum(timings.values())
    logger.info("Predicted %d models on one study in %.2f s", len(outputs), timings["total"])
    return StudyPrediction(
        study_path=str(path),
        series_instance_uid=volume.series_instance_uid,
        pixel_sha256=sha256_array(np.asarray(volume.hu, dtype=np.float32)),
        models=outputs,
        lesions=[lesion.to_dict() for lesion in analysis.segmentation.lesions],
        radiomics_provenance=dict(analysis.radiomics.provenance),
        timings_s=timings,
        library_versions=library_versions(),
        notes=[note.to_dict() for note in volume.notes],
    )
