"""The evaluation report: every model's metrics with intervals, paired comparisons, figures.

``evaluate_models`` returns a JSON-safe dictionary; ``write_report`` writes it as
``report.json``, ``metrics.csv``, ``predictions.csv``, ``report.md`` and SVG figures. The
Markdown page repeats the source study's table (sensitivity / specificity per class per
model) beside the figures measured here.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.evaluation.metrics import (
    CLASS_LABELS,
    Unit,
    calibration,
    classification_metrics,
    json_safe,
    roc_points,
)
from inference.evaluation.stats import (
    bootstrap_metric_ci,
    delong_test,
    holm_adjust,
    mcnemar_test,
)
from inference.evaluation.svg import unit_square_chart

# Source study: J Neuroradiol 2026;53(2):101530, test set of 39 patients; sensitivity /
# specificity in percent per class and model. Its unit of analysis is not stated for every
# figure (some specificities need more negatives than 39 patients give).
PUBLISHED_SENS_SPEC: dict[str, dict[str, tuple[float, float]]] = {
    "svm": {"HT": (94.1, 97.0), "CE": (92.3, 97.3), "HT+CE": (70.0, 91.2)},
    "lr": {"HT": (94.1, 100.0), "CE": (100.0, 97.3), "HT+CE": (90.0, 97.1)},
    "rf": {"HT": (82.4, 91.2), "CE": (91.7, 94.1), "HT+CE": (70.0, 88.2)},
    "unet": {"HT": (82.4, 94.1), "CE": (100.0, 100.0), "HT+CE": (100.0, 100.0)},
}
PUBLISHED_SOURCE = "J Neuroradiol 2026;53(2):101530 (39 test patients)"

UNIT: Unit = "patient"
AGGREGATION = (
    "One prediction per patient: radiomics models use the case vector (largest lesion and "
    "volume-weighted lesion mean); the label is the class with the highest probability"
)


def evaluate_models(
    codes: Sequence[str],
    y_true: Sequence[str],
    probabilities: Mapping[str, np.ndarray],
    *,
    margin: float = 0.15,
    n_resamples: int = 2000,
    seed: int = 0,
    model_info: Mapping[str, Mapping[str, Any]] | None = None,
    dataset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute every model's metrics and the paired comparisons between models.

    ``probabilities`` maps a model name to an (n_cases, 3) array in ``CLASS_LABELS`` order.
    Comparisons use exact McNemar on correctness and DeLong on each class's one-vs-rest AUC;
    Holm's correction runs over all McNemar tests and, separately, over all DeLong tests.
    """
    names = list(probabilities)
    truth = list(y_true)
    models: dict[str, Any] = {}
    predicted: dict[str, list[str]] = {}
    for name in names:
        proba = np.asarray(probabilities[name], dtype=np.float64)
        labels = [CLASS_LABELS[index] for index in np.argmax(proba, axis=1)]
        predicted[name] = labels
        ordered = np.sort(proba, axis=1)
        uncertain = int(np.sum(ordered[:, -1] - ordered[:, -2] < margin))
        metrics = classification_metrics(truth, labels, proba, unit=UNIT, aggregation=AGGREGATION)
        intervals = {
            metric: bootstrap_metric_ci(
                truth, proba, metric, n_resamples=n_resamples, seed=seed
            ).to_dict()
            for metric in (
                "macro_auc",
                "macro_f1",
                *(f"auc:{label}" for label in CLASS_LABELS),
                *(f"f1:{label}" for label in CLASS_LABELS),
            )
        }
        models[name] = {
            "metrics": metrics.to_dict(),
            "bootstrap": intervals,
            "calibration": calibration(truth, proba).to_dict(),
            "roc": roc_points(truth, proba),
            "uncertain_cases": uncertain,
            "uncertainty_margin": margin,
            "info": dict((model_info or {}).get(name, {})),
        }

    comparisons: list[dict[str, Any]] = []
    for first, second in itertools.combinations(names, 2):
        entry: dict[str, Any] = {
            "model_a": first,
            "model_b": second,
            "mcnemar": mcnemar_test(truth, predicted[first], predicted[second]).to_dict(),
            "delong": {},
        }
        for k, label in enumerate(CLASS_LABELS):
            positives = [int(value == label) for value in truth]
            try:
                result = delong_test(
                    positives, probabilities[first][:, k], probabilities[second][:, k]
                ).to_dict()
            except ValueError as error:
                result = {"error": str(error)}
            entry["delong"][label] = result
        comparisons.append(entry)
    _add_holm(comparisons)

    return json_safe(
        {
            "unit_of_analysis": UNIT,
            "aggregation": AGGREGATION,
            "n_cases": len(truth),
            "class_counts": {label: truth.count(label) for label in CLASS_LABELS},
            "dataset": dict(dataset or {}),
            "bootstrap": {
                "method": "BCa, stratified by true class, resampling patients",
                "n_resamples": n_resamples,
                "seed": seed,
            },
            "models": models,
            "comparisons": comparisons,
            "published": {
                "source": PUBLISHED_SOURCE,
                "sensitivity_specificity_percent": PUBLISHED_SENS_SPEC,
            },
            "predictions": [
                {
                    "code": code,
                    "truth": truth[index],
                    **{
                        name: {
                            "label": predicted[name][index],
                            "probabilities": dict(
                                zip(
                                    CLASS_LABELS,
                                    map(float, probabilities[name][index]),
                                    strict=True,
                                )
                            ),
                        }
                        for name in names
                    },
                }
                for index, code in enumerate(codes)
            ],
        }
    )


def _add_holm(comparisons: list[dict[str, Any]]) -> None:
    mcnemar_p = [entry["mcnemar"]["p_value"] for entry in comparisons]
    adjusted, _ = holm_adjust(mcnemar_p)
    for entry, value in zip(comparisons, adjusted, strict=True):
        entry["mcnemar"]["p_holm"] = value
    slots = [
        (entry, label)
        for entry in comparisons
        for label in CLASS_LABELS
        if "p_value" in entry["delong"][label]
    ]
    adjusted, _ = holm_adjust([entry["delong"][label]["p_value"] for entry, label in slots])
    for (entry, label), value in zip(slots, adjusted, strict=True):
        entry["delong"][label]["p_holm"] = value


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100.0 * float(value):.1f}"


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _interval(item: Mapping[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    low, high = item.get("ci_low"), item.get("ci_high")
    if low is None or high is None:
        return "n/a"
    return f"{scale * low:.{digits}f}–{scale * high:.{digits}f}"


def render_markdown(report: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    """Return the report as a Markdown page that links the SVG figures."""
    lines = [
        "# Evaluation report",
        "",
        "Research use only; not a medical device.",
        "",
        f"- Unit of analysis: **{report['unit_of_analysis']}**. {report['aggregation']}.",
        f"- Cases: {report['n_cases']} ({', '.join(f'{k} {v}' for k, v in report['class_counts'].items())}).",
        f"- Intervals: 95%; proportions by Wilson score, AUC and F1 by {report['bootstrap']['method']} "
        f"({report['bootstrap']['n_resamples']} resamples, seed {report['bootstrap']['seed']}).",
    ]
    for key, value in report.get("dataset", {}).items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "## Overall",
        "",
        "| model | accuracy % (95% CI) | balanced accuracy | macro F1 (95% CI) | macro AUC (95% CI) | uncertain cases |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in report["models"].items():
        metrics = model["metrics"]
        boot = model["bootstrap"]
        lines.append(
            f"| {name} | {_percent(metrics['accuracy']['estimate'])} ({_interval(metrics['accuracy'], 100)}) "
            f"| {_number(metrics['balanced_accuracy'])} "
            f"| {_number(metrics['macro_f1'])} ({_interval(boot['macro_f1'], 1, 3)}) "
            f"| {_number(metrics['macro_auc'])} ({_interval(boot['macro_auc'], 1, 3)}) "
            f"| {model['uncertain_cases']} |"
        )

    lines += [
        "",
        "## Sensitivity / specificity per class, beside the source study",
        "",
        f"Published figures: {report['published']['source']}; their unit of analysis is not "
        "stated for every figure. Measured figures here are per patient, with Wilson 95% CIs.",
        "",
        "| class | model | measured sens % (95% CI) | measured spec % (95% CI) | published sens / spec % |",
        "|---|---|---|---|---|",
    ]
    published = report["published"]["sensitivity_specificity_percent"]
    for label in CLASS_LABELS:
        for name, model in report["models"].items():
            per_class = next(
                item for item in model["metrics"]["per_class"] if item["label"] == label
            )
            reference = published.get(name, {}).get(label)
            reference_text = (
                "—" if reference is None else f"{reference[0]:.1f} / {reference[1]:.1f}"
            )
            sens, spec = per_class["sensitivity"], per_class["specificity"]
            lines.append(
                f"| {label} | {name} | {_percent(sens['estimate'])} ({_interval(sens, 100)}) "
                f"| {_percent(spec['estimate'])} ({_interval(spec, 100)}) | {reference_text} |"
            )

    lines += [
        "",
        "## Per-class detail",
        "",
        "| model | class | PPV % | NPV % | F1 (95% CI) | AUC (95% CI) | Brier |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, model in report["models"].items():
        for item in model["metrics"]["per_class"]:
            label = item["label"]
            lines.append(
                f"| {name} | {label} | {_percent(item['ppv']['estimate'])} | {_percent(item['npv']['estimate'])} "
                f"| {_number(item['f1'])} ({_interval(model['bootstrap'][f'f1:{label}'], 1, 3)}) "
                f"| {_number(item['auc'])} ({_interval(model['bootstrap'][f'auc:{label}'], 1, 3)}) "
                f"| {_number(model['calibration']['brier_per_class'][label])} |"
            )

    lines += ["", "## Confusion matrices (rows: truth, columns: prediction)", ""]
    for name, model in report["models"].items():
        matrix = model["metrics"]["confusion_matrix"]["counts"]
        lines += [
            f"**{name}**",
            "",
            "| truth \\ predicted | " + " | ".join(CLASS_LABELS) + " |",
            "|---" * 4 + "|",
        ]
        for label, row in zip(CLASS_LABELS, matrix, strict=True):
            lines.append(f"| {label} | " + " | ".join(str(value) for value in row) + " |")
        lines.append("")

    if report["comparisons"]:
        lines += [
            "## Paired comparisons",
            "",
            "Exact McNemar on per-patient correctness; DeLong on each class's one-vs-rest AUC. "
            "Holm-adjusted p-values within each test family.",
            "",
            "| model A | model B | McNemar p (Holm) | "
            + " | ".join(f"DeLong {label} p (Holm)" for label in CLASS_LABELS)
            + " |",
            "|---|---|---|" + "---|" * len(CLASS_LABELS),
        ]
        for entry in report["comparisons"]:
            cells = []
            for label in CLASS_LABELS:
                result = entry["delong"][label]
                cells.append(
                    "n/a"
                    if "p_value" not in result
                    else f"{_number(result['p_value'])} ({_number(result.get('p_holm'))})"
                )
            mcnemar = entry["mcnemar"]
            lines.append(
                f"| {entry['model_a']} | {entry['model_b']} | {_number(mcnemar['p_value'])} ({_number(mcnemar.get('p_holm'))}) | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")

    if figures:
        lines += ["## Figures", ""]
        for caption, filename in figures.items():
            lines += [f"![{caption}]({filename})", ""]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: Path | str) -> dict[str, Path]:
    """Write ``report.json``, ``metrics.csv``, ``predictions.csv``, figures and ``report.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    written["json"] = out / "report.json"

    with (out / "metrics.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["model", "class", "metric", "estimate", "ci_low", "ci_high", "ci_method", "unit"]
        )
        for name, model in report["models"].items():
            metrics = model["metrics"]
            accuracy = metrics["accuracy"]
            writer.writerow(
                [
                    name,
                    "all",
                    "accuracy",
                    accuracy["estimate"],
                    accuracy["ci_low"],
                    accuracy["ci_high"],
                    accuracy["ci_method"],
                    UNIT,
                ]
            )
            writer.writerow(
                [name, "all", "balanced_accuracy", metrics["balanced_accuracy"], "", "", "", UNIT]
            )
            for metric in ("macro_f1", "macro_auc"):
                boot = model["bootstrap"][metric]
                writer.writerow(
                    [
                        name,
                        "all",
                        metric,
                        metrics[metric],
                        boot["ci_low"],
                        boot["ci_high"],
                        boot["method"],
                        UNIT,
                    ]
                )
            for item in metrics["per_class"]:
                for metric in ("sensitivity", "specificity", "ppv", "npv"):
                    value = item[metric]
                    writer.writerow(
                        [
                            name,
                            item["label"],
                            metric,
                            value["estimate"],
                            value["ci_low"],
                            value["ci_high"],
                            value["ci_method"],
                            UNIT,
                        ]
                    )
                for metric in ("f1", "auc"):
                    boot = model["bootstrap"][f"{metric}:{item['label']}"]
                    writer.writerow(
                        [
                            name,
                            item["label"],
                            metric,
                            item[metric],
                            boot["ci_low"],
                            boot["ci_high"],
                            boot["method"],
                            UNIT,
                        ]
                    )
            writer.writerow(
                [
                    name,
                    "all",
                    "brier_multiclass",
                    model["calibration"]["brier_multiclass"],
                    "",
                    "",
                    "",
                    UNIT,
                ]
            )
    written["metrics_csv"] = out / "metrics.csv"

    model_names = list(report["models"])
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["code", "truth", "model", "predicted", *[f"p_{label}" for label in CLASS_LABELS]]
        )
        for row in report["predictions"]:
            for name in model_names:
                output = row[name]
                writer.writerow(
                    [
                        row["code"],
                        row["truth"],
                        name,
                        output["label"],
                        *[output["probabilities"][label] for label in CLASS_LABELS],
                    ]
                )
    written["predictions_csv"] = out / "predictions.csv"

    figures: dict[str, str] = {}
    for label in CLASS_LABELS:
        series = [
            (
                f"{name} (AUC {_number(model['metrics']['per_class'][k]['auc'], 2)})",
                model["roc"][label]["fpr"],
                model["roc"][label]["tpr"],
            )
            for name, model in report["models"].items()
            for k in [CLASS_LABELS.index(label)]
            if label in model["roc"]
        ]
        filename = f"roc-{label.replace('+', '-').lower()}.svg"
        (out / filename).write_text(
            unit_square_chart(
                f"ROC, {label} vs rest (per patient)", "1 - specificity", "sensitivity", series
            ),
            encoding="utf-8",
        )
        figures[f"ROC {label} vs rest"] = filename
        calibration_series = [
            (
                name,
                model["calibration"]["curves"][label]["mean_predicted"],
                model["calibration"]["curves"][label]["fraction_positive"],
            )
            for name, model in report["models"].items()
        ]
        filename = f"calibration-{label.replace('+', '-').lower()}.svg"
        (out / filename).write_text(
            unit_square_chart(
                f"Calibration, {label} vs rest (per patient)",
                "mean predicted probability",
                "observed fraction",
                calibration_series,
            ),
            encoding="utf-8",
        )
        figures[f"Calibration {label} vs rest"] = filename

    (out / "report.md").write_text(render_markdown(report, figures), encoding="utf-8")
    written["markdown"] = out / "report.md"
    return written
