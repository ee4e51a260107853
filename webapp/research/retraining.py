"""Retraining from the app: train classical models on adjudicated cases, evaluate, promote.

Nothing here runs on its own. A researcher's explicit request (``request_training``) checks the
cohort, writes a ``TrainingRun`` and an audit event, and queues one task after commit. The task
(``webapp.research.tasks``) runs ``execute_training_run`` in a ``db_worker``:

1. features: each case's case-level radiomics vector, read from the features its last
   inference job stored when they are complete and were computed with the current radiomics
   settings, otherwise recomputed from the stored DICOM instances through ``inference.pipeline``;
2. train: ``inference.training.train_models`` (SVM, random forest, logistic regression and the
   stacked hybrid when two or more kinds are chosen) on the train split;
3. evaluate: ``inference.evaluation.report.evaluate_models`` on the test split;
4. register: one database ``ModelVersion`` per model, not promoted, each audited.

Promotion (``set_promotion``) is a separate, audited action; only promoted app-trained versions
run on new cases (``webapp.jobs.selection``). The U-Net is not retrained from the app.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inference.errors import InferenceError
from inference.evaluation.metrics import CLASS_LABELS
from inference.evaluation.report import evaluate_models
from inference.models.classical import (
    CALIBRATION_FOLDS,
    CLASSICAL_KINDS,
    TrainingConfig,
    predict_probabilities,
)
from inference.models.hybrid import predict_stacked
from inference.models.registry import ModelRegistry
from inference.models.registry import ModelVersion as RegistryVersion
from inference.radiomics import RadiomicsSettings, case_feature_names, load_settings
from inference.training import FeatureTable, train_models
from webapp.core import roles
from webapp.core.audit import Action, record_audit_event
from webapp.core.models import Case, Instance, Study
from webapp.core.services import ClientContext, RoleRequiredError, ServiceError
from webapp.jobs.models import ModelVersion
from webapp.jobs.selection import APP_TRAINED_PREFIX
from webapp.research.casefacts import CaseFacts, load_case_facts
from webapp.research.models import TrainingRun

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRAINING_ROLES = (roles.RESEARCHER, roles.ADMIN)
HYBRID = "hybrid"
# Settings of a run when the request gives none. Cross-validation is repeated once, not three
# times as on the command line, so a run takes about a third of the search time.
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "n_splits": 4,
    "n_repeats": 1,
    "k_features": [10, 20, 40],
    "rf_trees": 200,
    "n_resamples": 1000,
}
# TODO: the U-Net is not retrained from the app (hours of CPU, and its own data loaders).
UNET_NOTE = (
    "The U-Net is not retrained from the app; train it on the command line (python -m "
    "inference train) and register it in the model folder."
)
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
# The model kinds as sentences name them.
KIND_NAMES = {"svm": "SVM", "rf": "random forest", "lr": "logistic regression"}
DEMO_HINT = (
    "The 12-case demo has too few cases per class; restart the demo with DEMO_CASES=111 to "
    "try retraining."
)


class TrainingRequestError(ServiceError):
    """A retraining request or run that cannot proceed; the message states what to do."""

    code = "training_invalid"


@dataclass(frozen=True)
class LabelledCase:
    case: Case
    label: str


@dataclass
class CohortPlan:
    """The labelled cases of the train and test splits for one label source."""

    train: list[LabelledCase]
    test: list[LabelledCase]

    def class_counts(self, which: str) -> dict[str, int]:
        cases = self.train if which == "train" else self.test
        return {label: sum(1 for item in cases if item.label == label) for label in CLASS_LABELS}


def minimum_cases_per_class(kinds: list[str], n_splits: int) -> int:
    """Return the fewest training cases per class that the chosen models' cross-validation needs.

    Every model needs one case per class in each of ``n_splits`` folds. The SVM calibrates its
    probabilities on ``CALIBRATION_FOLDS`` inner folds of each training fold, so it needs more
    (the rule of ``inference.models.classical``).
    """
    needed = n_splits
    if "svm" in kinds:
        needed = max(needed, CALIBRATION_FOLDS + -(-CALIBRATION_FOLDS // (n_splits - 1)))
    return needed


def kind_requirements(n_splits: int) -> dict[str, int]:
    """Return the training cases per class that each classical model kind needs on its own."""
    return {kind: minimum_cases_per_class([kind], n_splits) for kind in CLASSICAL_KINDS}


def requirements_text(n_splits: int) -> str:
    """Return the per-class minimum of each model kind as one sentence for the Retraining page."""
    needs = kind_requirements(n_splits)
    groups: dict[int, list[str]] = {}
    for kind, needed in sorted(needs.items(), key=lambda item: -item[1]):
        groups.setdefault(needed, []).append(KIND_NAMES.get(kind, kind))
    parts = [
        f"{_join(names)} {'needs' if len(names) == 1 else 'need'} {needed}"
        for needed, names in groups.items()
    ]
    calibration = (
        "; the SVM also calibrates its probabilities on inner folds"
        if needs.get("svm", 0) > n_splits
        else ""
    )
    return (
        f"Labelled cases needed per class in the training split: {'; '.join(parts)} "
        f"({n_splits}-fold cross-validation{calibration})."
    )


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def split_name(split: str) -> str:
    """Name a split as the form shows it, with its value: "the Training split (train)"."""
    if split in Case.Split.values:
        return f"the {Case.Split(split).label} split ({split})"
    return f"the split {split!r}"


@dataclass(frozen=True)
class SplitCounts:
    """Labelled cases per class of one split under one label source, and what they can train."""

    label_source: str
    source_label: str
    split: str
    split_label: str
    counts: dict[str, int]
    trainable: list[str]

    @property
    def trainable_text(self) -> str:
        if not self.trainable:
            return "no model"
        if len(self.trainable) == len(CLASSICAL_KINDS):
            return "all models"
        return _join([KIND_NAMES.get(kind, kind) for kind in self.trainable])


def labelled_counts(n_splits: int) -> list[SplitCounts]:
    """Return the labelled case counts of every split under every label source.

    The Retraining page shows them before a request, so the user sees why one would fail.
    ``trainable`` lists the kinds whose per-class minimum the split meets as a training split.
    """
    needs = kind_requirements(n_splits)
    rows = []
    for split, split_label in Case.Split.choices:
        facts = load_case_facts(Case.objects.filter(split=split).order_by("code"))
        for source, source_label in TrainingRun.LabelSource.choices:
            labels = [_label_of(item, source) for item in facts]
            counts = {label: labels.count(label) for label in CLASS_LABELS}
            lowest = min(counts.values())
            rows.append(
                SplitCounts(
                    label_source=source,
                    source_label=source_label,
                    split=split,
                    split_label=split_label,
                    counts=counts,
                    trainable=[kind for kind, needed in needs.items() if lowest >= needed],
                )
            )
    return rows


def too_few_to_train(rows: list[SplitCounts]) -> bool:
    """True when no split has enough labelled cases per class to train any model kind."""
    return not any(row.trainable for row in rows)


def _label_of(item: CaseFacts, label_source: str) -> str | None:
    if label_source == TrainingRun.LabelSource.CONSENSUS:
        label = item.consensus.label if item.consensus else None
    else:
        label = item.ground_truth.label if item.ground_truth else None
    return label if label in CLASS_LABELS else None


def _labelled(split: str, label_source: str) -> list[LabelledCase]:
    facts = load_case_facts(Case.objects.filter(split=split).order_by("code"))
    return [
        LabelledCase(item.case, label)
        for item in facts
        if (label := _label_of(item, label_source)) is not None
    ]


def _source_name(label_source: str) -> str:
    return TrainingRun.LabelSource(label_source).label.split(" (")[0].lower()


def check_request(
    label_source: str, train_split: str, test_split: str, kinds: list[str], config: dict[str, Any]
) -> CohortPlan:
    """Return the cohort of a valid request; raise ``TrainingRequestError`` saying what is missing."""
    if label_source not in TrainingRun.LabelSource.values:
        raise TrainingRequestError(
            f"Label source {label_source!r} is not one of "
            f"{', '.join(TrainingRun.LabelSource.values)}; choose one of them.",
            code="label_source_invalid",
        )
    for field_name, split in (("train split", train_split), ("test split", test_split)):
        if split not in Case.Split.values:
            raise TrainingRequestError(
                f"The {field_name} {split!r} is not one of {', '.join(Case.Split.values)}.",
                code="split_invalid",
            )
    if train_split == test_split:
        raise TrainingRequestError(
            f"The train and test splits are both {train_split!r}; evaluate on cases the models "
            "were not trained on by choosing two different splits.",
            code="split_invalid",
        )
    if "unet" in kinds:
        raise TrainingRequestError(UNET_NOTE, code="kind_not_trainable")
    unknown = sorted(set(kinds) - set(CLASSICAL_KINDS))
    if unknown or not kinds:
        raise TrainingRequestError(
            f"Model kinds {unknown or '(none)'} cannot be trained here; choose one or more of "
            f"{', '.join(CLASSICAL_KINDS)}.",
            code="kind_invalid",
        )

    plan = CohortPlan(_labelled(train_split, label_source), _labelled(test_split, label_source))
    source = _source_name(label_source)
    for which, role, split, cases in (
        ("train", "train on", train_split, plan.train),
        ("test", "evaluate on", test_split, plan.test),
    ):
        if not cases:
            raise TrainingRequestError(
                f"The split to {role}, {split_name(split)}, has no case with a {source} label "
                f"(HT, CE or "
                f"HT+CE). Assign cases to the split and record their {source}, or choose "
                "another split or label source.",
                code="split_empty",
            )
        counts = plan.class_counts(which)
        missing = [label for label, count in counts.items() if count == 0]
        if missing:
            raise TrainingRequestError(
                f"The split to {role}, {split_name(split)}, has no {' or '.join(missing)} "
                "case with a "
                f"{source} label ({_counts_text(counts)}). Every class must appear in both "
                "splits; label or move cases of that class first.",
                code="class_missing",
            )
    counts = plan.class_counts("train")
    n_splits = int(config["n_splits"])
    chosen: list[str] = [kind for kind in CLASSICAL_KINDS if kind in kinds]
    needed = minimum_cases_per_class(chosen, n_splits)
    short = {label: count for label, count in counts.items() if count < needed}
    if short:
        raise TrainingRequestError(
            _too_few_message(train_split, short, chosen, n_splits, counts), code="too_few_cases"
        )
    return plan


def _too_few_message(
    train_split: str,
    short: dict[str, int],
    chosen: list[str],
    n_splits: int,
    counts: dict[str, int],
) -> str:
    """Explain a too-small training split, naming only the chosen model kinds."""
    needed = minimum_cases_per_class(chosen, n_splits)
    names = [KIND_NAMES.get(kind, kind) for kind in chosen]
    calibration = (
        ", SVM probability calibration"
        if "svm" in chosen and minimum_cases_per_class(["svm"], n_splits) > n_splits
        else ""
    )
    subject = f"the chosen models ({_join(names)}) need" if len(names) > 1 else f"{names[0]} needs"
    message = (
        f"Too few labelled cases in {split_name(train_split)}: {_counts_text(short)}; "
        f"{subject} at least {needed} per class ({n_splits}-fold cross-validation{calibration}). "
        "Label more cases of those classes"
    )
    others = [kind for kind in chosen if kind != "svm"]
    if "svm" in chosen and others:
        without_svm = minimum_cases_per_class(others, n_splits)
        if without_svm < needed and min(counts.values()) >= without_svm:
            other_names = _join([KIND_NAMES.get(kind, kind) for kind in others])
            verb = "needs" if len(others) == 1 else "need"
            message += f", or leave the SVM out ({other_names} {verb} {without_svm})"
    return message + "."


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} {count}" for label, count in counts.items())


def _check_version(version: str, kinds: list[str]) -> None:
    if not _VERSION_PATTERN.match(version):
        raise TrainingRequestError(
            f"Version {version!r} is not valid; use 1-32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            code="version_invalid",
        )
    names = [*kinds, HYBRID] if len(kinds) >= 2 else list(kinds)
    taken = sorted(
        ModelVersion.objects.filter(kind__in=names, version=version).values_list("kind", flat=True)
    )
    if taken or TrainingRun.objects.filter(version=version).exists():
        raise TrainingRequestError(
            f"Version {version!r} is already used{' by ' + ', '.join(taken) if taken else ''}; "
            "versions never change once registered, so choose a new name.",
            code="version_exists",
        )
    try:
        ModelRegistry(str(settings.INFERENCE["MODEL_DIR"])).ensure_new(names, version)
    except InferenceError as error:
        raise TrainingRequestError(error.message, code="version_exists") from error


def suggested_version() -> str:
    """Return a version name that no run has used: ``app-<date>-<n>``."""
    stem = f"app-{timezone.now():%Y%m%d}"
    used = set(
        TrainingRun.objects.filter(version__startswith=stem).values_list("version", flat=True)
    )
    number = 1
    while f"{stem}-{number}" in used:
        number += 1
    return f"{stem}-{number}"


def request_training(
    context: ClientContext,
    *,
    label_source: str,
    train_split: str,
    test_split: str,
    kinds: list[str],
    version: str = "",
    config: dict[str, Any] | None = None,
) -> TrainingRun:
    """Check the request, store the run with its audit event and queue it after commit."""
    if not roles.has_any_role(context.actor, *TRAINING_ROLES):
        raise RoleRequiredError(
            f"User {context.actor.get_username()!r} needs the researcher or admin role to train "
            "models."
        )
    merged = {**DEFAULT_CONFIG, **(config or {})}
    kinds = [kind for kind in CLASSICAL_KINDS if kind in kinds] + sorted(
        set(kinds) - set(CLASSICAL_KINDS)
    )
    plan = check_request(label_source, train_split, test_split, kinds, merged)
    version = version.strip() or suggested_version()
    _check_version(version, kinds)
    with transaction.atomic():
        run = TrainingRun.objects.create(
            version=version,
            label_source=label_source,
            train_split=train_split,
            test_split=test_split,
            kinds=kinds,
            config=merged,
            requested_by=context.actor,
        )
        record_audit_event(
            Action.MODEL_TRAINING_REQUESTED,
            actor=context.actor,
            target=run,
            client_address=context.client_address,
            details={
                "training_run_id": run.pk,
                "version": version,
                "kinds": kinds,
                "label_source": label_source,
                "train_split": train_split,
                "test_split": test_split,
                "train_class_counts": plan.class_counts("train"),
                "test_class_counts": plan.class_counts("test"),
            },
        )
        run_id = run.pk
        transaction.on_commit(lambda: send_training_task(run_id))
    logger.info(
        "Training run training_run_id=%s queued by user_id=%s (kinds %s)",
        run.pk,
        context.actor.pk,
        ",".join(kinds),
    )
    return run


def send_training_task(run_id: int) -> None:
    from webapp.research.tasks import run_training

    result = run_training.enqueue(run_id)
    TrainingRun.objects.filter(pk=run_id).update(task_result_id=str(result.id)[:64])


# --- the worker side -------------------------------------------------------------------------


def execute_training_run(run_id: int, worker_id: str) -> str:
    """Claim and run training run ``run_id``; return its status afterwards (or ``skipped``).

    A failure is stored on the run with its code and message, never raised; model versions
    registered before are untouched.
    """
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING,
        worker_id=worker_id[:64],
        started_at=timezone.now(),
        progress_step=TrainingRun.Step.PENDING,
    )
    if not claimed:
        logger.info("Training run training_run_id=%s not claimed (not queued)", run_id)
        return "skipped"
    # TODO: no lease or heartbeat as for inference jobs; a run whose worker dies stays
    # "running" and must be requested again under a new version.
    run = TrainingRun.objects.get(pk=run_id)
    logger.info("Training run training_run_id=%s started on worker %s", run.pk, worker_id)
    started = time.perf_counter()
    try:
        _train_evaluate_register(run)
    except (TrainingRequestError, InferenceError) as error:
        code = error.code
        _fail(run, code, error.message)
        return TrainingRun.Status.FAILED
    except ValueError as error:
        _fail(run, "training_failed", f"Training stopped: {error}.")
        return TrainingRun.Status.FAILED
    except Exception as error:  # noqa: BLE001
        logger.exception("Training run training_run_id=%s failed unexpectedly", run.pk)
        _fail(
            run,
            "internal_error",
            f"Training failed unexpectedly ({type(error).__name__}); the administrators can "
            "find the details in the worker log. Request a new run after a fix.",
        )
        return TrainingRun.Status.FAILED
    logger.info(
        "Training run training_run_id=%s succeeded in %.1f s", run.pk, time.perf_counter() - started
    )
    return TrainingRun.Status.SUCCEEDED


def _fail(run: TrainingRun, code: str, message: str) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED,
        error_code=code[:64],
        error_message=message,
        finished_at=timezone.now(),
        step_timings_s=run.step_timings_s,
    )
    logger.warning("Training run training_run_id=%s failed: %s", run.pk, code)


def _step(run: TrainingRun, step: str, work: Callable[[], T]) -> T:
    TrainingRun.objects.filter(pk=run.pk).update(
        progress_step=step, step_timings_s=run.step_timings_s
    )
    started = time.perf_counter()
    result = work()
    run.step_timings_s = {**run.step_timings_s, step: round(time.perf_counter() - started, 3)}
    return result


def _train_evaluate_register(run: TrainingRun) -> None:
    config = dict(run.config)
    kinds = list(run.kinds)
    # Labels may have changed since the request; the run trains on the state it finds.
    plan = check_request(run.label_source, run.train_split, run.test_split, kinds, config)
    radiomics = load_settings()
    train_table, test_table = _step(
        run,
        TrainingRun.Step.FEATURES,
        lambda: (
            feature_table(plan.train, radiomics),
            feature_table(plan.test, radiomics),
        ),
    )
    registry = ModelRegistry(str(settings.INFERENCE["MODEL_DIR"]))
    training_config = TrainingConfig(
        seed=int(config["seed"]),
        n_splits=int(config["n_splits"]),
        n_repeats=int(config["n_repeats"]),
        k_features=tuple(int(k) for k in config["k_features"]),
        rf_trees=int(config["rf_trees"]),
    )
    synthetic = all(item.case.is_synthetic for item in plan.train)

    def train() -> list[RegistryVersion]:
        names = [*kinds, HYBRID] if len(kinds) >= 2 else kinds
        try:
            registry.ensure_new(names, run.version)
        except InferenceError as error:
            raise TrainingRequestError(error.message, code="version_exists") from error
        return train_models(
            train_table,
            registry,
            version=run.version,
            cohort_id=f"{APP_TRAINED_PREFIX}{run.pk}",
            config=training_config,
            synthetic_training_data=synthetic,
            kinds=kinds,
            with_hybrid=len(kinds) >= 2,
        )

    records = _step(run, TrainingRun.Step.TRAIN, train)
    report = _step(
        run,
        TrainingRun.Step.EVALUATE,
        lambda: _evaluate(run, registry, records, test_table, config, synthetic),
    )
    cohort = {
        "label_source": run.label_source,
        "train_split": run.train_split,
        "test_split": run.test_split,
        "train_class_counts": plan.class_counts("train"),
        "test_class_counts": plan.class_counts("test"),
        "train_cases": _case_rows(train_table),
        "test_cases": _case_rows(test_table),
        "synthetic_training_data": synthetic,
        "radiomics_settings_id": radiomics.settings_id,
    }
    _step(run, TrainingRun.Step.REGISTER, lambda: _register(run, records, report, cohort, config))
    TrainingRun.objects.filter(pk=run.pk).update(step_timings_s=run.step_timings_s)


def _case_rows(table: FeatureTable) -> list[dict[str, Any]]:
    return [
        {"code": code, "label": label, "features": detail["features"]}
        for code, label, detail in zip(table.codes, table.labels, table.case_details, strict=True)
    ]


def feature_table(cases: list[LabelledCase], radiomics: RadiomicsSettings) -> FeatureTable:
    """Return the case-level feature vectors of ``cases``, stored where possible.

    A case's stored features are used when its latest prediction on the baseline study contains
    every case-level feature name and was computed with the current radiomics settings.
    Otherwise its baseline series is loaded from the stored instances and analysed again.
    """
    names = case_feature_names(radiomics)
    facts = {item.case.pk: item for item in load_case_facts([c.case for c in cases])}
    rows: list[np.ndarray] = []
    details: list[dict[str, Any]] = []
    started = time.perf_counter()
    for item in cases:
        stored = _stored_features(facts[item.case.pk], names, radiomics)
        if stored is not None:
            rows.append(stored)
            details.append({"code": item.case.code, "features": "stored"})
        else:
            rows.append(_recomputed_features(item.case, names, radiomics))
            details.append({"code": item.case.code, "features": "recomputed"})
    recomputed = sum(1 for detail in details if detail["features"] == "recomputed")
    logger.info(
        "Feature table of %d cases: %d stored, %d recomputed",
        len(rows),
        len(rows) - recomputed,
        recomputed,
    )
    return FeatureTable(
        codes=[item.case.code for item in cases],
        labels=[item.label for item in cases],
        matrix=np.vstack(rows),
        feature_names=names,
        settings_id=radiomics.settings_id,
        settings_sha256=radiomics.sha256,
        case_details=details,
        seconds=time.perf_counter() - started,
    )


def _stored_features(
    facts: CaseFacts, names: list[str], radiomics: RadiomicsSettings
) -> np.ndarray | None:
    if not facts.predictions:
        return None
    latest = max(facts.predictions.values(), key=lambda p: (p.created_at, p.pk))
    settings_sha = (latest.provenance or {}).get("radiomics", {}).get("settings_sha256")
    features = latest.features or {}
    if settings_sha != radiomics.sha256 or any(name not in features for name in names):
        return None
    # Non-finite values are stored as null (JSON has no NaN); the models impute them.
    return np.array(
        [math.nan if features[name] is None else float(features[name]) for name in names],
        dtype=np.float64,
    )


def _recomputed_features(case: Case, names: list[str], radiomics: RadiomicsSettings) -> np.ndarray:
    from inference.dicom import load_study
    from inference.pipeline import analyse_volume
    from webapp.ingest.storage import stored_path

    study = (
        Study.objects.filter(case=case, role=Study.Role.BASELINE).order_by("-created_at").first()
    )
    files = (
        list(
            Instance.objects.filter(series__study=study, series__is_chosen=True).values_list(
                "file", flat=True
            )
        )
        if study
        else []
    )
    if not files:
        raise TrainingRequestError(
            f"Case {case.code} has no stored features and no chosen baseline series to compute "
            "them from; upload its baseline CT (or move the case out of the split), then request "
            "the training again.",
            code="case_without_images",
        )
    volume, _scan = load_study([stored_path(name) for name in files])
    return analyse_volume(volume, radiomics).feature_vector(names)


def _evaluate(
    run: TrainingRun,
    registry: ModelRegistry,
    records: list[RegistryVersion],
    test: FeatureTable,
    config: dict[str, Any],
    synthetic: bool,
) -> dict[str, Any]:
    probabilities: dict[str, np.ndarray] = {}
    for record in records:
        estimator = registry.load_sklearn(record)
        if record.kind == HYBRID:
            bases = [str(item["name"]) for item in record.extra.get("base_models", [])]
            probabilities[record.name] = predict_stacked(
                estimator, {name: probabilities[name] for name in bases}, bases
            )
        else:
            columns = [test.feature_names.index(name) for name in record.extra["feature_names"]]
            probabilities[record.name] = predict_probabilities(estimator, test.matrix[:, columns])
    return evaluate_models(
        test.codes,
        test.labels,
        probabilities,
        n_resamples=int(config["n_resamples"]),
        seed=int(config["seed"]),
        model_info={
            record.name: {
                "kind": record.kind,
                "version": record.version,
                "model_id": record.model_id,
            }
            for record in records
        },
        dataset={
            "split": run.test_split,
            "reference": run.label_source,
            "training_run_id": run.pk,
            "synthetic_training_data": synthetic,
        },
    )


def split_summary(report: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the headline test-split figures of one model of ``report``."""
    model = report["models"][name]
    metrics = model["metrics"]
    return {
        "unit_of_analysis": report["unit_of_analysis"],
        "n_cases": report["n_cases"],
        "accuracy": metrics["accuracy"]["estimate"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "macro_f1_ci95": [model["bootstrap"]["macro_f1"].get(k) for k in ("ci_low", "ci_high")],
        "macro_auc": metrics["macro_auc"],
        "macro_auc_ci95": [model["bootstrap"]["macro_auc"].get(k) for k in ("ci_low", "ci_high")],
        "sensitivity": {
            item["label"]: item["sensitivity"]["estimate"] for item in metrics["per_class"]
        },
        "specificity": {
            item["label"]: item["specificity"]["estimate"] for item in metrics["per_class"]
        },
    }


def _register(
    run: TrainingRun,
    records: list[RegistryVersion],
    report: dict[str, Any],
    cohort: dict[str, Any],
    config: dict[str, Any],
) -> None:
    with transaction.atomic():
        rows = []
        for record in records:
            row = ModelVersion.objects.create(
                kind=record.kind,
                version=record.version,
                artifact_path=f"{record.name}/{record.version}/{record.artifact}",
                sha256=record.sha256,
                params={**record.params, "model_id": record.model_id},
                metrics={
                    "cross_validation": record.metrics,
                    "test": {
                        "split": run.test_split,
                        "reference": run.label_source,
                        **split_summary(report, record.name),
                    },
                },
                training_cohort={
                    "training_run_id": run.pk,
                    "label_source": run.label_source,
                    "train_split": run.train_split,
                    "test_split": run.test_split,
                    "train_cases": [item["code"] for item in cohort["train_cases"]],
                    "test_cases": [item["code"] for item in cohort["test_cases"]],
                    "class_counts": cohort["train_class_counts"],
                    "seed": int(config["seed"]),
                    "synthetic_training_data": cohort["synthetic_training_data"],
                },
                intended_use=record.intended_use,
                registered_by=run.requested_by,
                is_promoted=False,
            )
            rows.append(row)
            record_audit_event(
                Action.MODEL_VERSION_REGISTERED,
                actor=run.requested_by,
                target=row,
                details={
                    "kind": row.kind,
                    "version": row.version,
                    "is_promoted": False,
                    "via": "retraining",
                    "training_run_id": run.pk,
                },
            )
        run.model_versions.set(rows)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.SUCCEEDED,
            progress_step=TrainingRun.Step.DONE,
            report=report,
            cohort=cohort,
            finished_at=timezone.now(),
            error_code="",
            error_message="",
        )


# --- promotion -------------------------------------------------------------------------------


def set_promotion(context: ClientContext, version: ModelVersion, promoted: bool) -> ModelVersion:
    """Promote (or demote) a model version; promoting demotes the other versions of its kind.

    Only promoted versions trained from the app run on new cases. Each change is audited.
    """
    if not roles.has_any_role(context.actor, *TRAINING_ROLES):
        raise RoleRequiredError(
            f"User {context.actor.get_username()!r} needs the researcher or admin role to "
            "promote model versions."
        )
    with transaction.atomic():
        locked = list(
            ModelVersion.objects.select_for_update().filter(kind=version.kind).order_by("pk")
        )
        changed: list[ModelVersion] = []
        for row in locked:
            # Promoting leaves exactly this version of its kind promoted; demoting touches it only.
            if promoted:
                wanted = row.pk == version.pk
            else:
                wanted = row.is_promoted and row.pk != version.pk
            if row.is_promoted != wanted:
                row.is_promoted = wanted
                row.save(update_fields=["is_promoted"])
                changed.append(row)
        # Demotions of the other versions are recorded before the change they follow from.
        changed.sort(key=lambda row: row.pk == version.pk)
        for row in changed:
            record_audit_event(
                Action.MODEL_VERSION_PROMOTION_CHANGED,
                actor=context.actor,
                target=row,
                client_address=context.client_address,
                details={
                    "kind": row.kind,
                    "version": row.version,
                    "is_promoted": row.is_promoted,
                    "via": "retraining page",
                },
            )
    version.refresh_from_db()
    logger.info(
        "Model version model_version_id=%s promoted=%s by user_id=%s (%d rows changed)",
        version.pk,
        promoted,
        context.actor.pk,
        len(changed),
    )
    return version
