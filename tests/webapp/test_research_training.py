"""Retraining from the app, in process: request checks, features, run, promotion, pages.

The end-to-end test with a real ``db_worker`` is in test_research_training_worker.py.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from inference.models.registry import ModelRegistry
from inference.radiomics import case_feature_names, load_settings
from tests.webapp.test_ingest_support import named_files, register_test_model, write_study
from tests.webapp.test_research_training_support import FAST_CONFIG, add_case, build_cohort
from webapp.core.models import AuditEvent, Case
from webapp.core.services import ClientContext, RoleRequiredError
from webapp.ingest.services import ingest_files
from webapp.jobs.models import ModelVersion
from webapp.jobs.selection import APP_TRAINED_PREFIX, select_model_records
from webapp.research import retraining
from webapp.research.figures import NOTE_LINE_HEIGHT_PX
from webapp.research.models import TrainingRun
from webapp.research.retraining import (
    LabelledCase,
    TrainingRequestError,
    execute_training_run,
    feature_table,
    request_training,
    set_promotion,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_dir(settings: Any, tmp_path: Path) -> Path:
    """A registry with one shipped model (lr 1.0.0), used by runs and the selection."""
    folder = tmp_path / "models"
    register_test_model(folder)
    settings.INFERENCE = {**settings.INFERENCE, "MODEL_DIR": str(folder)}
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return folder


def _request(user: Any, **overrides: Any) -> TrainingRun:
    arguments: dict[str, Any] = {
        "label_source": "ground_truth",
        "train_split": "train",
        "test_split": "test",
        "kinds": ["lr"],
        "config": FAST_CONFIG,
    }
    arguments.update(overrides)
    return request_training(ClientContext(user, "127.0.0.1"), **arguments)


def _nothing_created() -> None:
    assert not TrainingRun.objects.exists()
    assert not ModelVersion.objects.exclude(version="1.0.0").exists()


# --- request checks ---------------------------------------------------------------------------


def test_empty_train_split_is_rejected_naming_the_split(
    researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator)
    Case.objects.filter(split="train").update(split="unassigned")
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher)
    assert caught.value.code == "split_empty"
    assert (
        "The split to train on, the Training split (train), has no case with a follow-up "
        "ground truth label" in str(caught.value)
    )
    _nothing_created()


def test_consensus_without_labels_is_empty(
    researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator)
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher, label_source="consensus")
    assert caught.value.code == "split_empty"
    assert "consensus adjudication label" in caught.value.message


def test_missing_class_is_named(researcher: Any, coordinator: Any, model_dir: Path) -> None:
    build_cohort(coordinator)
    Case.objects.filter(split="train", code__startswith="TR-CE-").update(split="unassigned")
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher)
    assert caught.value.code == "class_missing"
    assert "has no CE case" in caught.value.message
    assert "HT 4, CE 0, HT+CE 4" in caught.value.message
    _nothing_created()


def test_missing_class_in_the_test_split_is_named(
    researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator)
    Case.objects.filter(split="test", code__startswith="TE-HTCE-").update(split="unassigned")
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher)
    assert caught.value.code == "class_missing"
    assert (
        "The split to evaluate on, the Test split (test), has no HT+CE case" in caught.value.message
    )


def test_too_few_cases_per_class(researcher: Any, coordinator: Any, model_dir: Path) -> None:
    build_cohort(coordinator, train_per_class=4)
    Case.objects.filter(code="TR-HT-3").update(split="unassigned")
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher)
    assert caught.value.code == "too_few_cases"
    assert "HT 3" in caught.value.message
    assert caught.value.message == (
        "Too few labelled cases in the Training split (train): HT 3; logistic regression needs "
        "at least 4 per class (4-fold cross-validation). Label more cases of those classes."
    )
    _nothing_created()


def test_svm_minimum_with_three_folds(researcher: Any, coordinator: Any, model_dir: Path) -> None:
    # Three folds: one case per class per fold is 3, but the SVM's calibration needs 5.
    build_cohort(coordinator, train_per_class=4)
    config = {**FAST_CONFIG, "n_splits": 3}
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher, kinds=["svm", "lr"], config=config)
    assert caught.value.message == (
        "Too few labelled cases in the Training split (train): HT 4, CE 4, HT+CE 4; the chosen "
        "models (SVM and logistic regression) need at least 5 per class (3-fold "
        "cross-validation, SVM probability calibration). Label more cases of those classes, "
        "or leave the SVM out (logistic regression needs 3)."
    )
    assert retraining.minimum_cases_per_class(["lr"], 3) == 3
    assert retraining.minimum_cases_per_class(["svm"], 4) == 4


@pytest.mark.parametrize(
    ("overrides", "code", "text"),
    [
        ({"test_split": "train"}, "split_invalid", "both 'train'"),
        ({"kinds": ["unet"]}, "kind_not_trainable", "U-Net is not retrained from the app"),
        ({"kinds": []}, "kind_invalid", "choose one or more of svm, rf, lr"),
        ({"version": "bad version!"}, "version_invalid", "is not valid"),
        ({"version": "1.0.0"}, "version_exists", "already used by lr"),
    ],
)
def test_invalid_requests(
    researcher: Any,
    coordinator: Any,
    model_dir: Path,
    overrides: dict[str, Any],
    code: str,
    text: str,
) -> None:
    build_cohort(coordinator)
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher, **overrides)
    assert caught.value.code == code
    assert text in caught.value.message
    assert not TrainingRun.objects.exists()


def test_only_researchers_and_admins_may_train(reader: Any, coordinator: Any) -> None:
    build_cohort(coordinator)
    for user in (reader, coordinator):
        with pytest.raises(RoleRequiredError):
            _request(user)
    assert not TrainingRun.objects.exists()


# --- features --------------------------------------------------------------------------------


def test_stored_features_are_used_when_complete(coordinator: Any) -> None:
    rng = np.random.default_rng(1)
    seed_version = ModelVersion.objects.create(kind="lr", version="1.0.0", sha256="0" * 64)
    case = add_case("F-1", "train", "CE", coordinator, seed_version, rng=rng)
    settings = load_settings()
    names = case_feature_names(settings)
    table = feature_table([LabelledCase(case, "CE")], settings)

    stored = case.studies.get().inference_jobs.get().predictions.get().features
    assert table.case_details == [{"code": "F-1", "features": "stored"}]
    assert table.matrix.shape == (1, len(names))
    assert table.matrix[0, 0] == pytest.approx(stored[names[0]])
    assert np.isnan(table.matrix[0, -1])  # stored as null


@pytest.mark.parametrize("defect", ["incomplete", "other_settings"])
def test_unusable_features_without_images(coordinator: Any, defect: str) -> None:
    rng = np.random.default_rng(2)
    seed_version = ModelVersion.objects.create(kind="lr", version="1.0.0", sha256="0" * 64)
    options: dict[str, Any] = (
        {"features": {"n_lesions": 1.0}}
        if defect == "incomplete"
        else {"settings_sha256": "f" * 64}
    )
    case = add_case("F-2", "train", "HT", coordinator, seed_version, rng=rng, **options)
    with pytest.raises(TrainingRequestError) as caught:
        feature_table([LabelledCase(case, "HT")], load_settings())
    assert caught.value.code == "case_without_images"
    assert "Case F-2 has no stored features and no chosen baseline series" in caught.value.message


def test_features_are_recomputed_from_stored_instances(
    coordinator: Any, tmp_path: Path, settings: Any
) -> None:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    case = Case.objects.create(code="F-3", split="train")
    ingest_files(case, "baseline", 2, named_files(write_study(tmp_path / "in", 12)), coordinator)

    table = feature_table([LabelledCase(case, "HT")], load_settings())

    assert table.case_details == [{"code": "F-3", "features": "recomputed"}]
    names = table.feature_names
    # The synthetic series holds one 8 x 8 x 7 voxel block of 75 HU: one lesion of 0.896 mL.
    assert table.matrix[0, names.index("n_lesions")] == 1.0
    assert table.matrix[0, names.index("total_volume_ml")] == pytest.approx(0.896, rel=0.05)


# --- a run in process ------------------------------------------------------------------------


def _run_in_process(researcher: Any, coordinator: Any, **overrides: Any) -> TrainingRun:
    build_cohort(coordinator)
    run = _request(researcher, version="app-t1", **overrides)
    status = execute_training_run(run.pk, "in-process")
    run.refresh_from_db()
    assert status == run.status
    return run


def test_run_registers_unpromoted_versions_with_test_metrics(
    researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    run = _run_in_process(researcher, coordinator)

    assert run.status == "succeeded", run.error_message
    assert run.progress_step == "done"
    assert set(run.step_timings_s) == {"features", "train", "evaluate", "register"}
    version = ModelVersion.objects.get(kind="lr", version="app-t1")
    assert list(run.model_versions.all()) == [version]
    assert version.is_promoted is False
    assert version.registered_by == researcher
    assert version.params["model_id"] == "lr:app-t1"
    assert "Trained on synthetic data" in version.intended_use
    test = version.metrics["test"]
    assert test["n_cases"] == 6
    assert test["unit_of_analysis"] == "patient"
    # The first five features separate the classes by three standard deviations.
    assert test["accuracy"] == pytest.approx(1.0)
    assert run.report["models"]["lr"]["metrics"]["confusion_matrix"]["counts"] == [
        [2, 0, 0],
        [0, 2, 0],
        [0, 0, 2],
    ]
    assert version.training_cohort["train_cases"][:2] == ["TR-CE-0", "TR-CE-1"]
    assert len(version.training_cohort["train_cases"]) == 12
    assert version.training_cohort["class_counts"] == {"HT": 4, "CE": 4, "HT+CE": 4}
    assert {item["features"] for item in run.cohort["train_cases"]} == {"stored"}
    record = ModelRegistry(model_dir).read("lr", "app-t1")
    assert record.training_cohort_id == f"{APP_TRAINED_PREFIX}{run.pk}"
    assert record.sha256 == version.sha256
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions == ["model_training.requested", "model_version.registered"]


def test_failed_run_leaves_existing_versions_untouched(
    researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator)
    run = _request(researcher, version="app-t2")
    # Labels change after the request: every HT label is withdrawn from the train split.
    Case.objects.filter(code__startswith="TR-HT-").update(split="unassigned")
    before = list(ModelVersion.objects.values())

    assert execute_training_run(run.pk, "in-process") == "failed"

    run.refresh_from_db()
    assert run.error_code == "class_missing"
    assert "has no HT case" in run.error_message
    assert list(ModelVersion.objects.values()) == before
    assert not ModelRegistry(model_dir).version_dir("lr", "app-t2").exists()
    # A second claim of the same run does nothing.
    assert execute_training_run(run.pk, "in-process") == "skipped"


# --- promotion and selection ------------------------------------------------------------------


def test_selection_waits_for_promotion(researcher: Any, coordinator: Any, model_dir: Path) -> None:
    run = _run_in_process(researcher, coordinator)
    registry = ModelRegistry(model_dir)
    app_version = ModelVersion.objects.get(kind="lr", version="app-t1")
    shipped = ModelVersion.objects.get(kind="lr", version="1.0.0")

    assert select_model_records(registry)["lr"].model_id == "lr:1.0.0"

    set_promotion(ClientContext(researcher), app_version, True)
    assert select_model_records(registry)["lr"].model_id == "lr:app-t1"

    # Promoting the shipped version demotes the app version of the same kind.
    set_promotion(ClientContext(researcher), shipped, True)
    app_version.refresh_from_db()
    assert app_version.is_promoted is False
    assert select_model_records(registry)["lr"].model_id == "lr:1.0.0"

    set_promotion(ClientContext(researcher), shipped, False)
    assert not ModelVersion.objects.filter(is_promoted=True).exists()
    assert select_model_records(registry)["lr"].model_id == "lr:1.0.0"
    changes = AuditEvent.objects.filter(action="model_version.promotion_changed")
    assert [(e.details["version"], e.details["is_promoted"]) for e in changes.order_by("pk")] == [
        ("app-t1", True),
        ("app-t1", False),
        ("1.0.0", True),
        ("1.0.0", False),
    ]
    assert run.status == "succeeded"


def test_reader_cannot_promote(reader: Any, coordinator: Any) -> None:
    version = ModelVersion.objects.create(kind="svm", version="x", sha256="1" * 64)
    with pytest.raises(RoleRequiredError):
        set_promotion(ClientContext(reader), version, True)
    version.refresh_from_db()
    assert version.is_promoted is False


# --- pages -----------------------------------------------------------------------------------


def test_training_page_access(client: Client, reader: Any, researcher: Any) -> None:
    client.force_login(reader)
    assert client.get(reverse("research:training")).status_code == 403
    client.force_login(researcher)
    response = client.get(reverse("research:training"))
    assert response.status_code == 200
    assert "The U-Net is not retrained from the app" in response.content.decode()


def test_rejected_request_shows_what_is_missing(
    client: Client, researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator, train_per_class=2)
    client.force_login(researcher)
    response = client.post(
        reverse("research:training"),
        {"label_source": "ground_truth", "train_split": "train", "test_split": "test",
         "kinds": ["lr"]},
    )  # fmt: skip
    assert response.status_code == 400
    assert "Too few labelled cases in the Training split (train)" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_message_names_only_chosen_models(
    researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    # The 12-case demo's training split: too few for any model, whichever are chosen.
    build_cohort(coordinator, train_per_class=3)
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher, kinds=["rf", "lr"])
    message = caught.value.message
    assert message.startswith("Too few labelled cases in the Training split (train): HT 3, CE 3,")
    assert "the chosen models (random forest and logistic regression) need at least 4" in message
    assert "SVM" not in message
    # With four folds the SVM needs no more than the others, so leaving it out would not help.
    with pytest.raises(TrainingRequestError) as caught:
        _request(researcher, kinds=["svm", "lr"])
    assert "(SVM and logistic regression) need at least 4" in caught.value.message
    assert "leave the SVM out" not in caught.value.message
    assert "calibration" not in caught.value.message
    _nothing_created()


def test_requirements_text_per_kind() -> None:
    assert retraining.requirements_text(4) == (
        "Labelled cases needed per class in the training split: SVM, random forest and "
        "logistic regression need 4 (4-fold cross-validation)."
    )
    assert retraining.requirements_text(3) == (
        "Labelled cases needed per class in the training split: SVM needs 5; random forest "
        "and logistic regression need 3 (3-fold cross-validation; the SVM also calibrates its "
        "probabilities on inner folds)."
    )
    assert retraining.split_name("train") == "the Training split (train)"
    assert retraining.split_name("unassigned") == "the Unassigned split (unassigned)"


def _counts_row(page: str, split: str, source: str) -> list[str]:
    row = re.search(rf'<tr data-split="{split}" data-source="{source}">(.*?)</tr>', page)
    assert row is not None, (split, source)
    return [
        re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row[1])
    ]


def test_page_shows_counts_before_a_request(
    client: Client, researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator, train_per_class=3)
    Case.objects.filter(code="TR-HT-2").update(split="unassigned")
    client.force_login(researcher)

    page = client.get(reverse("research:training")).content.decode()

    assert _counts_row(page, "train", "ground_truth") == [
        "Training (train)", "Follow-up ground truth (latest version)", "2", "3", "3", "no model",
    ]  # fmt: skip
    assert _counts_row(page, "test", "ground_truth")[2:] == ["2", "2", "2", "no model"]
    assert _counts_row(page, "unassigned", "ground_truth")[2:] == ["1", "0", "0", "no model"]
    assert _counts_row(page, "train", "consensus")[2:] == ["0", "0", "0", "no model"]
    assert "SVM, random forest and logistic regression need 4" in page
    assert retraining.DEMO_HINT in page
    assert "restart the demo with DEMO_CASES=111" in retraining.DEMO_HINT
    assert not TrainingRun.objects.exists()


def test_demo_hint_hidden_with_enough_cases(
    client: Client, researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator, train_per_class=4)
    client.force_login(researcher)

    page = client.get(reverse("research:training")).content.decode()

    assert _counts_row(page, "train", "ground_truth")[2:] == ["4", "4", "4", "all models"]
    assert "DEMO_CASES" not in page


def test_queued_run_page_refreshes(
    client: Client, researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    build_cohort(coordinator)
    run = _request(researcher)
    client.force_login(researcher)
    response = client.get(reverse("research:training-detail", args=[run.pk]))
    assert response["Refresh"] == "3"
    assert "Waiting for a worker" in response.content.decode()
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"


def test_report_page_promotion_and_png_figure(
    client: Client, researcher: Any, coordinator: Any, model_dir: Path
) -> None:
    run = _run_in_process(researcher, coordinator)
    client.force_login(researcher)
    response = client.get(reverse("research:training-detail", args=[run.pk]))
    assert "Refresh" not in response
    page = response.content.decode()
    assert "Trained on synthetic data only" in page
    assert "Trained on synthetic data: lr." in page
    assert '<th scope="row">lr <span class="tag">trained on synthetic data</span></th>' in page
    assert "Promote for new cases" in page
    assert 'id="metrics"' in page

    status = client.get(reverse("research:training-status", args=[run.pk])).json()
    assert status["status"] == "succeeded"
    assert status["step_timings_s"].keys() == {"features", "train", "evaluate", "register"}

    png = client.get(reverse("research:training-figure", args=[run.pk, "lr", "roc", "png"]))
    assert png["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    # Three legend lines and one note line: the run was trained on synthetic cases.
    assert image.size == (720, 2 * (360 + 3 * 18 + NOTE_LINE_HEIGHT_PX + 6))

    version = run.model_versions.get()
    response = client.post(
        reverse("research:model-version-promotion", args=[version.pk]),
        {"promote": "1", "run_id": str(run.pk)},
    )
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.is_promoted is True
