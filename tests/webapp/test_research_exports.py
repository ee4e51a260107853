"""Exports: case and lesion tables, data dictionary, access rules, audit and identifier checks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.test import Client

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from tests.webapp.test_research_support import Cohort, build_cohort
from webapp.core.models import AuditEvent, Case
from webapp.research.exports import model_column_prefix


@pytest.fixture
def cohort(coordinator: Any, reader: Any, second_reader: Any) -> Cohort:
    return build_cohort(coordinator, reader, second_reader)


def _csv_rows(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def _get(client: Client, user: Any, path: str) -> Any:
    client.force_login(user)
    return client.get(path)


def test_model_column_prefix_replaces_punctuation(cohort: Cohort) -> None:
    assert model_column_prefix(cohort.svm) == "model_svm_1_0"
    assert model_column_prefix(cohort.lr) == "model_lr_2_0_beta"


def test_case_csv_has_one_row_per_case(client: Client, researcher: Any, cohort: Cohort) -> None:
    response = _get(client, researcher, "/research/exports/cases.csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="ceht-cases.csv"'
    rows = _csv_rows(response)
    assert [row["case_code"] for row in rows] == [f"R-0{i}" for i in range(1, 9)]


def test_case_csv_values_of_adjudicated_case(
    client: Client, researcher: Any, reader: Any, second_reader: Any, cohort: Cohort
) -> None:
    row = _csv_rows(_get(client, researcher, "/research/exports/cases.csv"))[0]

    assert row["split"] == "test"
    assert row["baseline_study_uid"] == f"2.25.1{cohort.cases['R-01'].pk:04d}"
    assert row["baseline_hours_after_mt"] == "2.5"
    assert row["baseline_out_of_window"] == "False"
    assert row["follow_up_hours_after_mt"] == "80.0"
    assert row["follow_up_out_of_window"] == "True"
    assert row["ground_truth_label"] == "HT"
    assert row["ground_truth_subtype"] == "PH1"
    assert row["ground_truth_version"] == "1"
    assert row["ground_truth_source"] == "reading"
    assert row["consensus_label"] == ""
    # The reader's second version (HT, confidence 4) replaces the first (CE, confidence 2).
    assert row[f"reader_{reader.pk}_label"] == "HT"
    assert row[f"reader_{reader.pk}_confidence"] == "4"
    assert row[f"reader_{reader.pk}_model_shown"] == "True"
    assert row[f"reader_{second_reader.pk}_label"] == "HT"
    assert row[f"reader_{second_reader.pk}_confidence"] == "5"
    assert row["lesion_count"] == "2"
    assert row["lesion_total_volume_ml"] == "3.75"
    assert row["lesion_max_hu"] == "120.0"


def test_case_csv_model_columns(client: Client, researcher: Any, cohort: Cohort) -> None:
    rows = _csv_rows(_get(client, researcher, "/research/exports/cases.csv"))
    first, second = rows[0], rows[1]

    assert first["model_svm_1_0_label"] == "HT"
    assert first["model_svm_1_0_p_HT"] == "0.8"
    assert first["model_svm_1_0_p_CE"] == "0.1"
    assert first["model_svm_1_0_uncertain"] == "False"
    assert first["model_lr_2_0_beta_label"] == "CE"
    assert first["model_lr_2_0_beta_p_CE"] == "0.45"
    assert first["model_lr_2_0_beta_uncertain"] == "True"
    # The LR version only ran on R-01: its cells stay empty elsewhere.
    assert second["model_lr_2_0_beta_label"] == ""
    assert second["model_svm_1_0_label"] == "CE"


def test_case_without_study_has_empty_cells(
    client: Client, researcher: Any, cohort: Cohort
) -> None:
    row = _csv_rows(_get(client, researcher, "/research/exports/cases.csv"))[5]

    assert row["case_code"] == "R-06"
    assert row["baseline_study_uid"] == ""
    assert row["ground_truth_label"] == ""
    assert row["lesion_count"] == ""
    assert row["model_svm_1_0_label"] == ""


def test_case_json_uses_nulls_and_numbers(client: Client, researcher: Any, cohort: Cohort) -> None:
    response = _get(client, researcher, "/research/exports/cases.json")

    assert response["Content-Type"] == "application/json; charset=utf-8"
    rows = json.loads(response.content)
    assert len(rows) == 8
    assert rows[0]["lesion_total_volume_ml"] == 3.75
    assert rows[0]["baseline_out_of_window"] is False
    assert rows[5]["baseline_study_uid"] is None
    assert rows[2]["model_svm_1_0_p_HT+CE"] == 0.8


def test_split_filter_limits_rows(client: Client, researcher: Any, cohort: Cohort) -> None:
    rows = _csv_rows(_get(client, researcher, "/research/exports/cases.csv?split=train"))

    assert [row["case_code"] for row in rows] == ["R-05", "R-06", "R-07"]


def test_invalid_split_is_rejected(client: Client, researcher: Any, cohort: Cohort) -> None:
    response = _get(client, researcher, "/research/exports/cases.csv?split=validation")

    assert response.status_code == 400
    assert b"'validation' is not one of train, test, unassigned" in response.content


def test_lesion_table_lists_each_lesion(client: Client, researcher: Any, cohort: Cohort) -> None:
    rows = _csv_rows(_get(client, researcher, "/research/exports/lesions.csv"))

    assert len(rows) == 2
    assert rows[0]["case_code"] == "R-01"
    assert rows[0]["label_index"] == "1"
    assert rows[0]["volume_ml"] == "1.5"
    assert rows[0]["max_hu"] == "85.0"
    assert rows[0]["compartment"] == "parenchymal"
    assert rows[0]["centroid_y_mm"] == "-20.5"
    assert rows[1]["mean_hu"] == "95.0"
    assert rows[1]["compartment"] == "unknown"
    assert [row["paired_with_index"] for row in rows] == ["2", "1"]


def test_dictionary_describes_every_column(
    client: Client, researcher: Any, reader: Any, cohort: Cohort
) -> None:
    cases = _csv_rows(_get(client, researcher, "/research/exports/cases.csv"))
    lesions = _csv_rows(_get(client, researcher, "/research/exports/lesions.csv"))
    dictionary = json.loads(_get(client, researcher, "/research/exports/dictionary.json").content)

    described = {(entry["table"], entry["column"]) for entry in dictionary}
    assert {("cases", name) for name in cases[0]} <= described
    assert {("lesions", name) for name in lesions[0]} <= described
    units = {entry["column"]: entry["unit"] for entry in dictionary}
    assert units["lesion_total_volume_ml"] == "mL"
    assert units["max_hu"] == "HU"
    assert all(entry["description"] for entry in dictionary)
    assert f"reader_{reader.pk}_label" in units


def test_every_export_is_audited(client: Client, researcher: Any, cohort: Cohort) -> None:
    _get(client, researcher, "/research/exports/cases.csv?split=test")
    _get(client, researcher, "/research/exports/lesions.json")

    events = list(AuditEvent.objects.filter(action="export.downloaded").order_by("id"))
    assert len(events) == 2
    assert events[0].actor == researcher
    assert events[0].details == {"kind": "cases", "format": "csv", "split": "test", "rows": 4}
    assert events[1].details == {"kind": "lesions", "format": "json", "split": "all", "rows": 2}


@pytest.mark.parametrize("persona", ["reader", "adjudicator", "outsider"])
def test_export_is_forbidden_without_export_role(
    client: Client, cohort: Cohort, persona: str, request: pytest.FixtureRequest
) -> None:
    response = _get(client, request.getfixturevalue(persona), "/research/exports/cases.csv")

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="export.downloaded").exists()


@pytest.mark.parametrize("persona", ["coordinator", "researcher", "admin_user"])
def test_export_page_opens_for_export_roles(
    client: Client, persona: str, request: pytest.FixtureRequest
) -> None:
    response = _get(client, request.getfixturevalue(persona), "/research/exports/")

    assert response.status_code == 200
    assert b"ceht-cases.csv" in response.content


def test_unknown_export_kind_is_404(client: Client, researcher: Any) -> None:
    assert _get(client, researcher, "/research/exports/patients.csv").status_code == 404
    assert _get(client, researcher, "/research/exports/cases.xlsx").status_code == 404


@pytest.mark.usefixtures("ingest_settings")
def test_uploaded_patient_identifiers_are_not_exported(
    client: Client, coordinator: Any, researcher: Any, tmp_path: Path
) -> None:
    from webapp.ingest.services import ingest_files

    case = Case.objects.create(code="LEAK-01")
    # The synthetic series carries PatientName SYNTHETIC^TEST and PatientID SYN-0.
    paths = write_study(tmp_path / "in")
    original_uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    ingest_files(case, "baseline", "2.0", named_files(paths), coordinator)

    for path in ("cases.csv", "cases.json", "lesions.csv", "dictionary.csv"):
        content = _get(client, researcher, f"/research/exports/{path}").content.decode()
        assert "SYNTHETIC" not in content
        assert "SYN-0" not in content
        assert original_uid not in content
    assert (
        coordinator.username
        not in _get(client, researcher, "/research/exports/cases.csv").content.decode()
    )


def test_model_synthetic_training_column(client: Client, researcher: Any, cohort: Cohort) -> None:
    from webapp.jobs.models import ModelVersion

    ModelVersion.objects.filter(pk=cohort.svm.pk).update(
        training_cohort={"synthetic_training_data": True}
    )
    rows = _csv_rows(_get(client, researcher, "/research/exports/cases.csv"))
    json_rows = json.loads(_get(client, researcher, "/research/exports/cases.json").content)
    dictionary = json.loads(_get(client, researcher, "/research/exports/dictionary.json").content)
    described = {entry["column"]: entry["description"] for entry in dictionary}

    # A property of the model: the same value in every row, with or without a prediction.
    assert {row["model_svm_1_0_trained_on_synthetic_data"] for row in rows} == {"True"}
    assert {row["model_lr_2_0_beta_trained_on_synthetic_data"] for row in rows} == {"False"}
    assert json_rows[0]["model_svm_1_0_trained_on_synthetic_data"] is True
    assert json_rows[5]["model_lr_2_0_beta_trained_on_synthetic_data"] is False
    assert "trained on synthetic data" in described["model_svm_1_0_trained_on_synthetic_data"]
