"""Model-performance dashboard: every number against hand-computed values on six cases.

Truth (ground truth): P1 HT, P2 HT, P3 CE, P4 CE, P5 HT+CE, P6 HT+CE.
svm 1 predicts HT, HT, CE, HT, HT+CE, CE (4 of 6 correct); lr 1 is right on all six.
The consensus agrees with the ground truth except on P4, where it is HT.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.test import Client
from PIL import Image

from webapp.core.models import Adjudication, AuditEvent, Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction
from webapp.research.performance import build_performance_report, figure_svg

TRUTH = ["HT", "HT", "CE", "CE", "HT+CE", "HT+CE"]
CONSENSUS = ["HT", "HT", "CE", "HT", "HT+CE", "HT+CE"]
SVM = [("HT", 0.8), ("HT", 0.7), ("CE", 0.8), ("HT", 0.6), ("HT+CE", 0.7), ("CE", 0.5)]
LR = [("HT", 0.9), ("HT", 0.8), ("CE", 0.9), ("CE", 0.7), ("HT+CE", 0.8), ("HT+CE", 0.6)]
RESAMPLES = 200


def _probabilities(label: str, top: float) -> dict[str, float]:
    rest = (1.0 - top) / 2
    return {name: (top if name == label else rest) for name in ("HT", "CE", "HT+CE")}


@pytest.fixture
def versions(coordinator: Any, adjudicator: Any) -> dict[str, ModelVersion]:
    versions = {
        "svm": ModelVersion.objects.create(kind="svm", version="1", sha256="a" * 64),
        "lr": ModelVersion.objects.create(kind="lr", version="1", sha256="b" * 64),
        "rf": ModelVersion.objects.create(kind="rf", version="0.1", sha256="c" * 64),
    }
    for index in range(6):
        case = Case.objects.create(code=f"P{index + 1}", split="test")
        study = Study.objects.create(case=case, role="baseline", study_instance_uid=f"2.25.{index}")
        job = InferenceJob.objects.create(study=study, pipeline_version="t", run_count=1)
        for name, table in (("svm", SVM), ("lr", LR)):
            label, top = table[index]
            Prediction.objects.create(
                job=job,
                model_version=versions[name],
                probabilities=_probabilities(label, top),
                predicted_label=label,
            )
        if index < 3:
            Prediction.objects.create(
                job=job,
                model_version=versions["rf"],
                probabilities=_probabilities("HT", 0.9),
                predicted_label="HT",
            )
        GroundTruth.objects.create(case=case, version=1, label=TRUTH[index], entered_by=coordinator)
        Adjudication.objects.create(
            case=case, reader=adjudicator, version=1, is_consensus=True,
            label=CONSENSUS[index], confidence=4,
        )  # fmt: skip
    # A train case must not enter the test-split figures.
    Case.objects.create(code="T1", split="train")
    return versions


def _report(reference: str = "ground_truth") -> Any:
    return build_performance_report("test", reference, n_resamples=RESAMPLES)


def test_accuracy_and_counts(versions: dict[str, ModelVersion]) -> None:
    result = _report()
    report = result.report

    assert result.codes == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert report["unit_of_analysis"] == "patient"
    assert report["n_cases"] == 6
    assert report["class_counts"] == {"HT": 2, "CE": 2, "HT+CE": 2}
    svm = report["models"]["svm 1"]["metrics"]
    assert svm["accuracy"]["successes"] == 4
    assert svm["accuracy"]["total"] == 6
    # Wilson interval of 4/6.
    assert svm["accuracy"]["ci_low"] == pytest.approx(0.3000, abs=5e-4)
    assert svm["accuracy"]["ci_high"] == pytest.approx(0.9032, abs=5e-4)
    assert report["models"]["lr 1"]["metrics"]["accuracy"]["estimate"] == 1.0


def test_per_class_sensitivity_specificity(versions: dict[str, ModelVersion]) -> None:
    per_class = {
        item["label"]: item for item in _report().report["models"]["svm 1"]["metrics"]["per_class"]
    }

    assert (
        per_class["HT"]["sensitivity"]["successes"],
        per_class["HT"]["sensitivity"]["total"],
    ) == (2, 2)
    assert (
        per_class["HT"]["specificity"]["successes"],
        per_class["HT"]["specificity"]["total"],
    ) == (3, 4)
    assert per_class["CE"]["sensitivity"]["estimate"] == 0.5
    assert per_class["CE"]["specificity"]["estimate"] == 0.75
    assert per_class["HT+CE"]["sensitivity"]["estimate"] == 0.5
    assert per_class["HT+CE"]["specificity"]["estimate"] == 1.0


def test_confusion_matrix(versions: dict[str, ModelVersion]) -> None:
    confusion = _report().report["models"]["svm 1"]["metrics"]["confusion_matrix"]

    assert confusion["rows"] == "true label"
    assert confusion["counts"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]


def test_mcnemar_counts_discordant_pairs(versions: dict[str, ModelVersion]) -> None:
    comparisons = _report().report["comparisons"]

    assert len(comparisons) == 1
    mcnemar = comparisons[0]["mcnemar"]
    assert {comparisons[0]["model_a"], comparisons[0]["model_b"]} == {"svm 1", "lr 1"}
    assert mcnemar["both_correct"] == 4
    assert mcnemar["both_wrong"] == 0
    assert mcnemar["only_a_correct"] + mcnemar["only_b_correct"] == 2
    # Exact two-sided binomial test of 2 discordant pairs all one way: 2 * 0.5**2.
    assert mcnemar["p_value"] == pytest.approx(0.5)
    assert "p_holm" in comparisons[0]["delong"]["HT"]


def test_consensus_reference_changes_accuracy(versions: dict[str, ModelVersion]) -> None:
    models = _report("consensus").report["models"]

    assert models["svm 1"]["metrics"]["accuracy"]["successes"] == 5
    assert models["lr 1"]["metrics"]["accuracy"]["successes"] == 5


def test_incomplete_model_version_is_excluded(versions: dict[str, ModelVersion]) -> None:
    result = _report()

    assert [version.kind for version in result.versions] == ["lr", "svm"]
    assert [(version.kind, reason) for version, reason in result.excluded] == [
        ("rf", "predictions on 3 of 6 labelled cases")
    ]


def test_empty_split_gives_message(versions: dict[str, ModelVersion]) -> None:
    result = build_performance_report("train", "ground_truth")

    assert result.report is None
    assert result.message.startswith("No labelled case with a prediction")


def test_roc_svg_has_title_axes_and_unit(versions: dict[str, ModelVersion]) -> None:
    svg = figure_svg(_report().report, "svm 1", "roc")

    assert svg.startswith("<svg")
    assert "ROC one-vs-rest, svm 1 (unit: patient, n = 6)" in svg
    assert "Sensitivity (true-positive rate)" in svg
    assert "1 - specificity (false-positive rate)" in svg


def test_dashboard_page_shows_tables(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    client.force_login(researcher)
    response = client.get("/research/performance/?split=test&reference=ground_truth")
    content = response.content.decode()

    assert response.status_code == 200
    assert "Unit of analysis: <strong>patient</strong>" in content
    assert "66.7 (30.0–90.3), 4/6" in content
    # The source study's SVM HT figures stand beside the measured ones.
    assert "94.1 / 97.0" in content
    assert "Model rf 0.1 is left out of the comparison" in content
    assert content.count("<svg") == 4


def test_figure_download_is_svg(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    client.force_login(researcher)
    pk = versions["svm"].pk
    response = client.get(f"/research/performance/{pk}/calibration.svg?split=test")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert "calibration-svm-1-test-ground_truth.svg" in response["Content-Disposition"]
    assert b"Calibration one-vs-rest, svm 1" in response.content
    event = AuditEvent.objects.get(action="export.downloaded")
    assert event.actor == researcher
    assert event.object_id == str(pk)
    assert event.details == {
        "kind": "figure:calibration",
        "format": "svg",
        "split": "test",
        "reference": "ground_truth",
    }


def test_figure_png_download_and_links(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    client.force_login(researcher)
    pk = versions["svm"].pk
    page = client.get("/research/performance/?split=test&reference=ground_truth").content.decode()
    assert (
        f'href="/research/performance/{pk}/roc.png?split=test&amp;reference=ground_truth"' in page
    )
    assert (
        f'href="/research/performance/{pk}/roc.svg?split=test&amp;reference=ground_truth"' in page
    )

    response = client.get(f"/research/performance/{pk}/roc.png?split=test")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "roc-svm-1-test-ground_truth.png" in response["Content-Disposition"]
    image = Image.open(io.BytesIO(response.content)).convert("L")
    # Twice the SVG's 360 x (360 + 18 per class) pixels.
    assert image.size == (720, 2 * (360 + 3 * 18))


def test_figure_of_excluded_version_is_404(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    client.force_login(researcher)
    assert client.get(f"/research/performance/{versions['rf'].pk}/roc.svg").status_code == 404


def test_invalid_split_is_400(client: Client, researcher: Any) -> None:
    client.force_login(researcher)
    assert client.get("/research/performance/?split=validation").status_code == 400


@pytest.mark.parametrize("persona", ["reader", "coordinator"])
def test_dashboard_needs_researcher(
    client: Client, persona: str, request: pytest.FixtureRequest
) -> None:
    client.force_login(request.getfixturevalue(persona))
    assert client.get("/research/performance/").status_code == 403


def test_missing_consensus_message(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    result = build_performance_report("train", "consensus")
    client.force_login(researcher)
    content = client.get("/research/performance/?split=train&reference=consensus").content

    assert result.report is None
    assert result.message.startswith("No consensus adjudication is recorded yet for the train")
    assert "enter ground truth" not in result.message
    assert b"No consensus adjudication is recorded yet for the train split" in content


def test_non_synthetic_models_have_no_note(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    report = _report().report
    client.force_login(researcher)
    content = client.get("/research/performance/?split=test").content.decode()

    assert report["models"]["svm 1"]["info"]["trained_on_synthetic_data"] is False
    assert "trained on synthetic data" not in content.lower()
    assert "synthetic" not in figure_svg(report, "svm 1", "roc")


def test_synthetic_model_is_marked_everywhere(
    client: Client, researcher: Any, versions: dict[str, ModelVersion]
) -> None:
    ModelVersion.objects.filter(pk=versions["svm"].pk).update(
        intended_use="Research use only; not a medical device. Trained on synthetic data."
    )
    ModelVersion.objects.filter(pk=versions["lr"].pk).update(
        training_cohort={"synthetic_training_data": False}
    )
    report = _report().report
    client.force_login(researcher)
    content = client.get("/research/performance/?split=test").content.decode()

    assert report["models"]["svm 1"]["info"]["trained_on_synthetic_data"] is True
    assert report["models"]["lr 1"]["info"]["trained_on_synthetic_data"] is False
    assert "Trained on synthetic data: svm 1." in content
    # One tag per table row and section of svm 1: metrics, three classes, confusion matrix.
    assert content.count('<span class="tag">trained on synthetic data</span>') == 5
    for figure in ("roc", "calibration"):
        assert "Model trained on synthetic data, not on patients." in figure_svg(
            report, "svm 1", figure
        )
        assert "synthetic" not in figure_svg(report, "lr 1", figure)


def test_training_cohort_flag_marks_synthetic(db: None) -> None:
    from webapp.research.provenance import trained_on_synthetic_data

    flagged = ModelVersion(
        kind="svm", version="x", training_cohort={"synthetic_training_data": True}
    )
    marked = ModelVersion(kind="svm", version="y", intended_use="Trained on SYNTHETIC data.")
    plain = ModelVersion(kind="svm", version="z", intended_use="Research use only.")

    assert trained_on_synthetic_data(flagged) is True
    assert trained_on_synthetic_data(marked) is True
    assert trained_on_synthetic_data(plain) is False


@pytest.fixture
def no_ce_cases(coordinator: Any) -> ModelVersion:
    """Four train cases whose ground truth is HT or HT+CE only: no positive CE case."""
    version = ModelVersion.objects.create(kind="svm", version="nc", sha256="d" * 64)
    for index, (truth, predicted) in enumerate(
        [("HT", "HT"), ("HT", "CE"), ("HT+CE", "HT+CE"), ("HT+CE", "HT")]
    ):
        case = Case.objects.create(code=f"N{index}", split="train")
        study = Study.objects.create(
            case=case, role="baseline", study_instance_uid=f"2.25.8{index}"
        )
        job = InferenceJob.objects.create(study=study, pipeline_version="t", run_count=1)
        Prediction.objects.create(
            job=job,
            model_version=version,
            probabilities=_probabilities(predicted, 0.7),
            predicted_label=predicted,
        )
        GroundTruth.objects.create(case=case, version=1, label=truth, entered_by=coordinator)
    return version


def test_class_without_cases_gets_no_curve(no_ce_cases: ModelVersion) -> None:
    report = build_performance_report("train", "ground_truth", n_resamples=RESAMPLES).report

    assert report["class_counts"]["CE"] == 0
    for figure in ("calibration", "roc"):
        svg = figure_svg(report, "svm nc", figure)
        assert ">CE</text>" not in svg, figure
        assert ">CE (AUC" not in svg, figure
        # ROC legends carry each curve's AUC, computed by hand from the scores above.
        suffix = {"roc": (" (AUC 0.50)", " (AUC 0.75)"), "calibration": ("", "")}[figure]
        assert f">HT{suffix[0]}</text>" in svg
        assert f">HT+CE{suffix[1]}</text>" in svg
        assert "No CE curve: no case has the label CE." in svg
        assert svg.count("<polyline") == 2
