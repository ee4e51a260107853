"""The model-performance dashboard: each model version against the follow-up ground truth or
the consensus label on one cohort split, computed by ``inference.evaluation``.

The unit of analysis is the patient (one prediction per case). A model version enters the
comparison only when it has a prediction for every analysed case, because McNemar and DeLong
are paired tests and need the same cases for both models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.evaluation import CLASS_LABELS
from inference.evaluation.report import evaluate_models
from inference.evaluation.svg import unit_square_chart
from webapp.core.audit import Action, record_audit_event
from webapp.core.models import Case
from webapp.core.services import ClientContext
from webapp.jobs.models import ModelVersion
from webapp.research.casefacts import CaseFacts, load_case_facts, model_versions_used
from webapp.research.figures import add_svg_notes
from webapp.research.provenance import trained_on_synthetic_data

logger = logging.getLogger(__name__)

REFERENCES = {
    "ground_truth": "Follow-up ground truth (latest version)",
    "consensus": "Consensus adjudication (latest version)",
}
FIGURES = ("roc", "calibration")
# Bootstrap resamples for the 95% intervals of AUC and F1; the report's default is 2000, fewer
# here because the dashboard recomputes on every request.
DASHBOARD_RESAMPLES = 1000


@dataclass
class PerformanceReport:
    split: str
    reference: str
    n_cases_in_split: int
    codes: list[str]
    versions: list[ModelVersion]
    # (model version, reason) for versions left out of the comparison.
    excluded: list[tuple[ModelVersion, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    message: str = ""


def model_name(version: ModelVersion) -> str:
    return f"{version.kind} {version.version}"


def _reference_label(item: CaseFacts, reference: str) -> str | None:
    if reference == "consensus":
        return item.consensus.label if item.consensus else None
    return item.ground_truth.label if item.ground_truth else None


def build_performance_report(
    split: str, reference: str, *, n_resamples: int = DASHBOARD_RESAMPLES, seed: int = 0
) -> PerformanceReport:
    """Evaluate every model version with predictions on ``split`` against ``reference``.

    Raises ValueError for an unknown split or reference.
    """
    if split not in Case.Split.values:
        raise ValueError(f"Split {split!r} is not one of {', '.join(Case.Split.values)}.")
    if reference not in REFERENCES:
        raise ValueError(f"Reference {reference!r} is not one of {', '.join(REFERENCES)}.")

    facts = load_case_facts(Case.objects.filter(split=split).order_by("code"))
    labelled = [item for item in facts if _reference_label(item, reference)]
    result = PerformanceReport(split, reference, len(facts), [], [])
    for version in model_versions_used(labelled):
        covered = sum(1 for item in labelled if version.pk in item.predictions)
        if covered == len(labelled):
            result.versions.append(version)
        else:
            result.excluded.append(
                (version, f"predictions on {covered} of {len(labelled)} labelled cases")
            )
    result.codes = [item.case.code for item in labelled]
    if not labelled and reference == "consensus":
        result.message = (
            f"No consensus adjudication is recorded yet for the {split} split, so there is "
            "nothing to compare the models with. Choose the follow-up ground truth as the "
            "reference, or record consensus labels on the review page first."
        )
        return result
    if not labelled or not result.versions:
        result.message = (
            f"No labelled case with a prediction of every model version on the {split} split; "
            "enter ground truth or run the models first."
        )
        return result

    truth = [_reference_label(item, reference) or "" for item in labelled]
    if len(set(truth)) < 2:
        result.message = (
            f"All {len(truth)} labelled cases have the label {truth[0]}; metrics need at least "
            "two classes."
        )
        return result
    probabilities = {
        model_name(version): np.array(
            [
                [
                    float(item.predictions[version.pk].probabilities.get(label, 0.0))
                    for label in CLASS_LABELS
                ]
                for item in labelled
            ]
        )
        for version in result.versions
    }
    result.report = evaluate_models(
        result.codes,
        truth,
        probabilities,
        n_resamples=n_resamples,
        seed=seed,
        model_info={
            model_name(version): {
                "kind": version.kind,
                "version": version.version,
                "pk": version.pk,
                "trained_on_synthetic_data": trained_on_synthetic_data(version),
            }
            for version in result.versions
        },
        dataset={"split": split, "reference": reference},
    )
    logger.info(
        "Performance report split=%s reference=%s: %d cases, %d model versions",
        split,
        reference,
        len(labelled),
        len(result.versions),
    )
    return result


def synthetic_model_names(report: dict[str, Any]) -> list[str]:
    """Return the names of the report's models that were trained on synthetic data.

    Dashboard reports flag each model in its info; a retraining run's report flags its whole
    training set in ``dataset``.
    """
    whole_run = bool(report.get("dataset", {}).get("synthetic_training_data"))
    return [
        name
        for name, model in report["models"].items()
        if whole_run or model.get("info", {}).get("trained_on_synthetic_data")
    ]


def _missing_class_note(label: str, count: int, n_cases: int) -> str:
    if count == 0:
        return f"No {label} curve: no case has the label {label}."
    return f"No {label} curve: all {n_cases} cases have the label {label}."


def figure_svg(report: dict[str, Any], name: str, figure: str) -> str:
    """Return the ROC or calibration chart of one model as an SVG document.

    A class that no case has (and, for ROC, one that every case has) gets no curve, because
    its curve is undefined, and a note under the chart gives the reason. Models trained on synthetic
    data get a note too. Raises KeyError for a model not in the report and ValueError for an
    unknown figure.
    """
    model = report["models"][name]
    unit = report["unit_of_analysis"]
    n_cases = report["n_cases"]
    counts = report.get("class_counts", {})
    notes = []
    if figure == "roc":
        series = [(label, curve["fpr"], curve["tpr"]) for label, curve in model["roc"].items()]
        notes += [
            _missing_class_note(label, counts.get(label, 0), n_cases)
            for label in CLASS_LABELS
            if label not in model["roc"]
        ]
        chart = unit_square_chart(
            f"ROC one-vs-rest, {name} (unit: {unit}, n = {n_cases})",
            "1 - specificity (false-positive rate)",
            "Sensitivity (true-positive rate)",
            series,
            auc_in_legend=True,
        )
    elif figure == "calibration":
        curves = model["calibration"]["curves"]
        # With no positive case the observed fraction is 0 in every bin: a line, but no data.
        drawn = [label for label in curves if counts.get(label, 0) > 0]
        series = [
            (label, curves[label]["mean_predicted"], curves[label]["fraction_positive"])
            for label in drawn
        ]
        notes += [
            _missing_class_note(label, counts.get(label, 0), n_cases)
            for label in CLASS_LABELS
            if label not in drawn
        ]
        chart = unit_square_chart(
            f"Calibration one-vs-rest, {name} (unit: {unit}, n = {n_cases})",
            "Mean predicted probability",
            "Observed fraction of the class",
            series,
        )
    else:
        raise ValueError(f"Figure {figure!r} is not one of {', '.join(FIGURES)}.")
    if name in synthetic_model_names(report):
        notes.append("Model trained on synthetic data, not on patients.")
    return add_svg_notes(chart, notes)


def published_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per model and class: measured sensitivity/specificity beside the source's.

    The source study's figures exist per model kind (svm, lr, rf, unet); other kinds get none.
    """
    published = report["published"]["sensitivity_specificity_percent"]
    rows = []
    for name, model in report["models"].items():
        kind = model["info"].get("kind", "")
        for item in model["metrics"]["per_class"]:
            reference = published.get(kind, {}).get(item["label"])
            rows.append(
                {
                    "model": name,
                    "label": item["label"],
                    "sensitivity": item["sensitivity"],
                    "specificity": item["specificity"],
                    "published_sensitivity": reference[0] if reference else None,
                    "published_specificity": reference[1] if reference else None,
                }
            )
    return rows


def record_figure_download(
    context: ClientContext,
    version: ModelVersion,
    figure: str,
    file_format: str,
    split: str,
    reference: str,
) -> None:
    """Audit one downloaded dashboard figure, as every other export is audited."""
    record_audit_event(
        Action.EXPORT_DOWNLOADED,
        actor=context.actor,
        target=version,
        client_address=context.client_address,
        details={
            "kind": f"figure:{figure}",
            "format": file_format,
            "split": split,
            "reference": reference,
        },
    )
    logger.info(
        "Figure %s of model version %s downloaded as %s, user_id=%s",
        figure,
        version.pk,
        file_format,
        getattr(context.actor, "pk", None),
    )
