"""Readers' and operations dashboards against hand-computed values on the shared cohort.

Readers (latest versions): R-01 ann HT, ben HT; R-02 ann CE, ben HT. Ground truth R-01 HT,
R-02 CE. The promoted svm model predicts HT on R-01 and CE on R-02. Ann first labelled R-01 CE
without the model, then HT with the model shown.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.webapp.test_research_support import Cohort, build_cohort
from webapp.research.dashboards import build_operations_dashboard, build_reader_dashboard


@pytest.fixture
def cohort(coordinator: Any, reader: Any, second_reader: Any) -> Cohort:
    return build_cohort(coordinator, reader, second_reader)


def test_pair_agreement_and_cohen_kappa(cohort: Cohort, reader: Any, second_reader: Any) -> None:
    pair = build_reader_dashboard()["pairs"][0]

    assert (pair.reader_a, pair.reader_b) == (f"reader_{reader.pk}", f"reader_{second_reader.pk}")
    assert pair.n_cases == 2
    assert pair.percent_agreement == 0.5
    # p_o = 0.5; p_e = 0.5 * 1.0 (HT) + 0.5 * 0.0 (CE) = 0.5, so kappa = 0.
    assert pair.kappa is not None
    assert pair.kappa["kappa"] == pytest.approx(0.0)


def test_fleiss_kappa_of_two_readers(cohort: Cohort) -> None:
    fleiss = build_reader_dashboard()["fleiss"]

    # Category shares HT 3/4, CE 1/4: P_e = 0.625; case agreement 1 and 0: P = 0.5.
    assert fleiss["kappa"] == pytest.approx((0.5 - 0.625) / (1 - 0.625))
    assert fleiss["n_subjects"] == 2
    assert fleiss["n_raters"] == 2


def test_readers_against_truth_and_model(cohort: Cohort, reader: Any, second_reader: Any) -> None:
    rows = {row["reader"]: row for row in build_reader_dashboard()["readers"]}
    ann = rows[f"reader_{reader.pk}"]
    ben = rows[f"reader_{second_reader.pk}"]

    assert ann["n_cases"] == 2
    assert (ann["vs_truth"]["successes"], ann["vs_truth"]["total"]) == (2, 2)
    assert (ben["vs_truth"]["successes"], ben["vs_truth"]["total"]) == (1, 2)
    assert (ann["vs_model"]["successes"], ann["vs_model"]["total"]) == (2, 2)
    assert (ben["vs_model"]["successes"], ben["vs_model"]["total"]) == (1, 2)


def test_change_of_mind_after_model(cohort: Cohort, reader: Any, second_reader: Any) -> None:
    rows = {row["reader"]: row for row in build_reader_dashboard()["readers"]}

    assert rows[f"reader_{reader.pk}"]["reviewed_with_model"] == 1
    assert rows[f"reader_{reader.pk}"]["changed_after_model"] == 1
    assert rows[f"reader_{reader.pk}"]["changed_toward_model"] == 1
    assert rows[f"reader_{second_reader.pk}"]["changed_after_model"] == 0


def test_split_without_readers_has_no_pairs(cohort: Cohort) -> None:
    dashboard = build_reader_dashboard("train")

    assert dashboard["pairs"] == []
    assert dashboard["readers"] == []
    assert dashboard["fleiss"] is None


def test_operations_counts_failures_and_steps(cohort: Cohort) -> None:
    dashboard = build_operations_dashboard()

    assert dashboard["counts"] == {"queued": 1, "running": 0, "succeeded": 5, "failed": 1}
    assert [job.study.case.code for job in dashboard["failures"]] == ["R-07"]
    assert dashboard["failures"][0].error_message.startswith("Series has one slice")
    steps = {row["step"]: row for row in dashboard["steps"]}
    assert list(steps) == ["load", "segment"]
    assert steps["load"]["n_jobs"] == 6
    assert steps["load"]["median_s"] == 1.0
    assert steps["segment"]["p95_s"] == 2.0


def test_reader_page_renders_kappa(client: Client, researcher: Any, cohort: Cohort) -> None:
    client.force_login(researcher)
    response = client.get("/research/readers/")

    assert response.status_code == 200
    assert b"Fleiss' kappa over cases read by every reader: -0.333" in response.content


def test_operations_page_lists_failure(client: Client, coordinator: Any, cohort: Cohort) -> None:
    client.force_login(coordinator)
    response = client.get("/research/operations/")

    assert response.status_code == 200
    assert b"load_failed" in response.content


@pytest.mark.parametrize("path", ["/research/readers/", "/research/operations/"])
def test_reader_cannot_open_dashboards(client: Client, reader: Any, path: str) -> None:
    client.force_login(reader)
    assert client.get(path).status_code == 403


def test_reader_page_names_compared_model(client: Client, researcher: Any, cohort: Cohort) -> None:
    from webapp.jobs.models import ModelVersion

    client.force_login(researcher)
    plain = client.get("/research/readers/").content.decode()
    ModelVersion.objects.filter(pk=cohort.svm.pk).update(
        intended_use="Research use only; not a medical device. Trained on synthetic data."
    )
    dashboard = build_reader_dashboard()
    marked = client.get("/research/readers/").content.decode()

    # Readers read, where the promoted svm 1.0 gives the shown prediction.
    assert dashboard["models"] == [{"name": "svm 1.0", "trained_on_synthetic_data": True}]
    assert "made by svm 1.0." in plain
    assert "trained on synthetic data" not in plain
    assert 'svm 1.0 <span class="tag">trained on synthetic data</span>' in marked
    assert "says nothing about its performance on patients" in marked
