"""A registry of immutable model versions on disk.

Layout: ``ROOT/<name>/<version>/model.json`` beside one artifact file. ``model.json`` records
the kind, the artifact's sha256, parameters, training cohort id, seed, library versions,
metrics and intended use. A version, once written, is never overwritten: registering it again
raises ``ModelArtifactError``.

Artifacts load without executing code: scikit-learn objects are skops files loaded with an
explicit list of trusted types, torch weights are safetensors or state dicts that the U-Net
loader opens with ``weights_only=True``. Pickle and joblib files are rejected, and so is any
artifact whose sha256 no longer matches ``model.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import skops.io as skops_io

from inference.errors import ModelArtifactError
from inference.evaluation.metrics import json_safe

logger = logging.getLogger(__name__)

ModelKind = Literal["svm", "rf", "lr", "unet", "hybrid"]
MODEL_KINDS: tuple[str, ...] = ("svm", "rf", "lr", "unet", "hybrid")
METADATA_FILE = "model.json"
SCHEMA_VERSION = 1

INTENDED_USE_RESEARCH = "Research use only; not a medical device."
INTENDED_USE_SYNTHETIC = "Research use only; not a medical device. Trained on synthetic data."

SKOPS_SUFFIX = ".skops"
TORCH_SUFFIXES = (".safetensors", ".pt")
# Formats that run arbitrary code when loaded; never accepted, whatever their hash.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle")

# Types that skops does not trust by default but that the pipelines built in
# inference.models.classical and inference.models.hybrid contain. Loading stops if an
# artifact contains any type outside skops' defaults and this list.
TRUSTED_SKOPS_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.tree._tree.Tree",
)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_TRACKED_LIBRARIES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "skops",
    "pyradiomics-bhklab",
    "SimpleITK",
    "torch",
    "monai",
)


def library_versions() -> dict[str, str]:
    """Return the versions of Python and the libraries that shape a model's output."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    """The metadata of one registered model version, as stored in its ``model.json``."""

    name: str
    kind: str
    version: str
    artifact: str
    sha256: str
    params: dict[str, Any]
    training_cohort_id: str
    seed: int
    library_versions: dict[str, str]
    metrics: dict[str, Any]
    intended_use: str
    created_utc: str
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    directory: Path | None = field(default=None, compare=False)

    @property
    def model_id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def artifact_path(self) -> Path:
        if self.directory is None:
            raise ModelArtifactError(f"model {self.model_id} has no directory on disk")
        return self.directory / self.artifact

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("directory")
        return json_safe(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], directory: Path) -> ModelVersion:
        known = {name for name in cls.__dataclass_fields__ if name != "directory"}
        missing = sorted(
            name for name in known if name not in data and name not in ("extra", "schema_version")
        )
        if missing:
            raise ModelArtifactError(
                f"{directory / METADATA_FILE} lacks fields {missing}; re-register the model",
                path=str(directory),
            )
        values = {name: data[name] for name in known if name in data}
        return cls(**values, directory=directory)


def _check_name(value: str, kind_of_name: str) -> None:
    if not _NAME_PATTERN.match(value):
        raise ValueError(
            f"invalid model {kind_of_name} {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _reject_unsafe_format(path: Path) -> None:
    """Raise unless ``path`` is in a format that loads without running code."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelArtifactError(
            f"{path.name} is a {suffix} file, a format that runs code when loaded; "
            "export the model as skops (scikit-learn) or safetensors (torch)",
            path=str(path),
            code="unsafe_model_format",
        )
    if suffix == SKOPS_SUFFIX:
        # A skops file is a zip archive; a pickle renamed to .skops is not.
        if not zipfile.is_zipfile(path):
            raise ModelArtifactError(
                f"{path.name} is not a skops archive (no zip header); it may be a renamed "
                "pickle. Re-export the model with skops.io.dump",
                path=str(path),
                code="unsafe_model_format",
            )
        return
    if suffix in TORCH_SUFFIXES:
        return
    raise ModelArtifactError(
        f"{path.name} has an unsupported artifact type {suffix or '(none)'}; "
        f"expected {SKOPS_SUFFIX} or one of {', '.join(TORCH_SUFFIXES)}",
        path=str(path),
        code="unsafe_model_format",
    )


class ModelRegistry:
    """Model versions under one root folder; see the module docstring for the layout."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def ensure_new(self, names: list[str] | tuple[str, ...], version: str) -> None:
        """Raise ``ModelArtifactError`` if any ``name``/``version`` is already registered.

        Call before a long training run, so a clash is reported before the work is done.
        """
        existing = [name for name in names if self.version_dir(name, version).exists()]
        if existing:
            raise ModelArtifactError(
                f"models {existing} already have version {version} in {self.root}; versions are "
                "immutable, so choose a new version",
                path=str(self.root),
                code="model_version_exists",
            )

    def register_sklearn(self, estimator: Any, **metadata_fields: Any) -> ModelVersion:
        """Save a scikit-learn estimator with skops and register it; see :meth:`register_file`."""
        with tempfile.TemporaryDirectory(prefix="skops-") as scratch:
            artifact = Path(scratch) / f"model{SKOPS_SUFFIX}"
            skops_io.dump(estimator, artifact)
            untrusted = set(skops_io.get_untrusted_types(file=artifact))
            unexpected = sorted(untrusted - set(TRUSTED_SKOPS_TYPES))
            if unexpected:
                raise ModelArtifactError(
                    f"estimator contains types {unexpected} that the registry does not trust; "
                    "add them to TRUSTED_SKOPS_TYPES after checking that they run no code on load",
                    code="untrusted_model_type",
                )
            return self.register_file(artifact, **metadata_fields)

    def register_file(
        self,
        artifact: Path,
        *,
        name: str,
        kind: str,
        version: str,
        params: dict[str, Any],
        training_cohort_id: str,
        seed: int,
        metrics: dict[str, Any] | None = None,
        synthetic_training_data: bool,
        extra: dict[str, Any] | None = None,
        artifact_name: str | None = None,
        companions: dict[str, Path] | None = None,
    ) -> ModelVersion:
        """Copy ``artifact`` into a new version folder and write its ``model.json``.

        ``artifact_name`` keeps a file name another loader expects (default ``model`` plus the
        artifact's suffix). ``companions`` maps file names to JSON sidecar files copied beside
        the artifact, such as the U-Net's ``unet.json``. Their sha256 values are recorded and
        checked with the artifact's. Raises ``ModelArtifactError`` if ``name``/``version``
        already exists, or if the artifact is in a format that runs code when loaded.
        """
        _check_name(name, "name")
        _check_name(version, "version")
        if kind not in MODEL_KINDS:
            raise ValueError(f"invalid model kind {kind!r}; expected one of {MODEL_KINDS}")
        artifact = Path(artifact)
        _reject_unsafe_format(artifact)
        companions = {str(key): Path(value) for key, value in (companions or {}).items()}
        for companion_name in companions:
            _check_name(companion_name, "companion file name")
            if not companion_name.endswith(".json"):
                raise ModelArtifactError(
                    f"companion file {companion_name} is not JSON; only JSON sidecars are stored",
                    code="unsafe_model_format",
                )
        stored_name = artifact_name or f"model{artifact.suffix.lower()}"
        _check_name(stored_name, "artifact name")
        if Path(stored_name).suffix.lower() != artifact.suffix.lower():
            raise ValueError(
                f"artifact name {stored_name} changes the file type of {artifact.name}; keep "
                f"the suffix {artifact.suffix}"
            )
        final_dir = self.version_dir(name, version)
        if final_dir.exists():
            raise ModelArtifactError(
                f"model {name} version {version} already exists at {final_dir}; versions are "
                "immutable, so register under a new version",
                path=str(final_dir),
                code="model_version_exists",
            )

        record = ModelVersion(
            name=name,
            kind=kind,
            version=version,
            artifact=stored_name,
            sha256=sha256_file(artifact),
            params=json_safe(params),
            training_cohort_id=training_cohort_id,
            seed=int(seed),
            library_versions=library_versions(),
            metrics=json_safe(metrics or {}),
            intended_use=INTENDED_USE_SYNTHETIC
            if synthetic_training_data
            else INTENDED_USE_RESEARCH,
            created_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            extra=json_safe(
                {
                    **(extra or {}),
                    **(
                        {
                            "companion_sha256": {
                                key: sha256_file(path) for key, path in companions.items()
                            }
                        }
                        if companions
                        else {}
                    ),
                }
            ),
        )

        # Build the version in a scratch folder beside its final place and rename it in one
        # step, so a reader never sees a version folder without its model.json.
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final_dir.parent))
        try:
            shutil.copyfile(artifact, scratch / record.artifact)
            for companion_name, companion_path in companions.items():
                shutil.copyfile(companion_path, scratch / companion_name)
            (scratch / METADATA_FILE).write_text(
                json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            for path in scratch.iterdir():
                path.chmod(0o444)
            scratch.chmod(0o755)
            try:
                os.rename(scratch, final_dir)
            except OSError as error:
                raise ModelArtifactError(
                    f"model {name} version {version} was registered concurrently at {final_dir}; "
                    "register under a new version",
                    path=str(final_dir),
                    code="model_version_exists",
                ) from error
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        logger.info("Registered model %s version %s (kind %s)", name, version, kind)
        return ModelVersion.from_dict(record.to_dict(), final_dir)

    def read(self, name: str, version: str) -> ModelVersion:
        """Return the metadata of one version; the artifact is not checked here."""
        directory = self.version_dir(name, version)
        metadata_path = directory / METADATA_FILE
        if not metadata_path.is_file():
            raise ModelArtifactError(
                f"model {name} version {version} not found: {metadata_path} is missing",
                path=str(metadata_path),
                code="model_not_found",
            )
        try:
            data = json.loads(metadata_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ModelArtifactError(
                f"{metadata_path} is not valid JSON ({error}); re-register the model",
                path=str(metadata_path),
            ) from error
        return ModelVersion.from_dict(data, directory)

    def list_versions(self) -> list[ModelVersion]:
        """Return every registered version, sorted by name and then version."""
        if not self.root.is_dir():
            return []
        versions = []
        for metadata_path in sorted(self.root.glob(f"*/*/{METADATA_FILE}")):
            version_dir = metadata_path.parent
            if version_dir.name.startswith("."):
                continue
            versions.append(self.read(version_dir.parent.name, version_dir.name))
        return versions

    def latest(self) -> dict[str, ModelVersion]:
        """Return the most recently created version of each model name."""
        newest: dict[str, ModelVersion] = {}
        for record in self.list_versions():
            current = newest.get(record.name)
            if current is None or (record.created_utc, record.version) > (
                current.created_utc,
                current.version,
            ):
                newest[record.name] = record
        return newest

    def verified_artifact(self, record: ModelVersion) -> Path:
        """Return the artifact path after checking its format and sha256.

        Raises ``ModelArtifactError`` when the file is missing, in an unsafe format, or its
        content no longer matches the sha256 recorded at registration.
        """
        path = record.artifact_path
        if not path.is_file():
            raise ModelArtifactError(
                f"artifact of model {record.model_id} is missing: {path}",
                path=str(path),
                code="model_not_found",
            )
        _reject_unsafe_format(path)
        actual = sha256_file(path)
        if actual != record.sha256:
            raise ModelArtifactError(
                f"artifact {path} of model {record.model_id} has sha256 {actual[:12]}..., but "
                f"{METADATA_FILE} records {record.sha256[:12]}...; the file was changed after "
                "registration, so restore it or register a new version",
                path=str(path),
                code="model_hash_mismatch",
            )
        for companion_name, expected in record.extra.get("companion_sha256", {}).items():
            companion = path.parent / companion_name
            if not companion.is_file() or sha256_file(companion) != expected:
                raise ModelArtifactError(
                    f"{companion} of model {record.model_id} is missing or changed after "
                    "registration; restore it or register a new version",
                    path=str(companion),
                    code="model_hash_mismatch",
                )
        return path

    def register_unet(self, model: Any, **metadata_fields: Any) -> ModelVersion:
        """Save a trained U-Net (``inference.models.unet.TrainedUNet``) and register it.

        The folder then contains ``weights.pt`` and ``unet.json`` as ``load_unet`` expects, so
        the U-Net's own loader (``torch.load(weights_only=True)``) opens it.
        """
        from inference.models.unet import save_unet
        from inference.models.unet.artifacts import METADATA_FILE as UNET_METADATA
        from inference.models.unet.artifacts import WEIGHTS_FILE

        with tempfile.TemporaryDirectory(prefix="unet-") as scratch:
            save_unet(model, scratch)
            return self.register_file(
                Path(scratch) / WEIGHTS_FILE,
                artifact_name=WEIGHTS_FILE,
                companions={UNET_METADATA: Path(scratch) / UNET_METADATA},
                **metadata_fields,
            )

    def load_sklearn(self, record: ModelVersion) -> Any:
        """Load a skops artifact after checking its hash, trusting only the listed types."""
        path = self.verified_artifact(record)
        if path.suffix != SKOPS_SUFFIX:
            raise ModelArtifactError(
                f"model {record.model_id} is a {path.suffix} artifact, not a skops file",
                path=str(path),
            )
        untrusted = skops_io.get_untrusted_types(file=path)
        unexpected = sorted(set(untrusted) - set(TRUSTED_SKOPS_TYPES))
        if unexpected:
            raise ModelArtifactError(
                f"{path} contains types {unexpected} outside the registry's trusted list; "
                "the artifact was not written by this registry, so it is not loaded",
                path=str(path),
                code="untrusted_model_type",
            )
        return skops_io.load(path, trusted=list(untrusted))
