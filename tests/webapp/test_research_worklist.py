"""The worklist on the case-list URL: statuses, blinding, filters, sorting, paging, query count."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.webapp.test_research_support import Cohort, build_cohort
from webapp.core.models import Case
from webapp.research.worklist import PAGE_SIZE, Status


@pytest.fixture
def cohort(coordinator: Any, reader: Any, second_reader: Any) -> Cohort:
    return build_cohort(coordinator, reader, second_reader)


def _rows(client: Client, user: Any, query: str = "") -> dict[str, Any]:
    client.force_login(user)
    response = client.get(f"/{query}")
    assert response.status_code == 200
    return {row.case.code: row for row in response.context["rows"]}


def test_each_case_gets_its_status(client: Client, researcher: Any, cohort: Cohort) -> None:
    rows = _rows(client, researcher)

    assert rows["R-01"].status == Status.ADJUDICATED
    assert rows["R-02"].status == Status.DISAGREEMENT
    assert rows["R-03"].status == Status.AWAITING_ADJUDICATION
    assert rows["R-04"].status == Status.AWAITING_FOLLOW_UP
    assert rows["R-05"].status == Status.PROCESSING
    assert rows["R-06"].status == Status.AWAITING_UPLOAD
    assert rows["R-07"].status == Status.FAILED
    assert rows["R-08"].status == Status.PREDICTED


def test_consensus_settles_disagreement(
    client: Client, researcher: Any, adjudicator: Any, cohort: Cohort
) -> None:
    from webapp.core.models import Adjudication

    Adjudication.objects.create(
        case=cohort.cases["R-02"], reader=adjudicator, version=1, is_consensus=True,
        label="CE", confidence=4,
    )  # fmt: skip

    assert _rows(client, researcher)["R-02"].status == Status.ADJUDICATED


def test_researcher_sees_prediction_and_truth(
    client: Client, researcher: Any, cohort: Cohort
) -> None:
    rows = _rows(client, researcher)

    assert rows["R-03"].blinded is False
    assert rows["R-03"].predicted_label == "HT+CE"
    assert rows["R-03"].truth_label == "HT"
    assert rows["R-03"].prediction_matches is False
    assert rows["R-01"].prediction_matches is True
    assert rows["R-01"].readers_done == 2


def test_reader_is_blinded_until_own_label(client: Client, reader: Any, cohort: Cohort) -> None:
    rows = _rows(client, reader)

    # The reader labelled, so only those show the model and the truth.
    assert rows["R-01"].blinded is False
    assert rows["R-01"].predicted_label == "HT"
    assert rows["R-03"].blinded is True
    assert rows["R-03"].predicted_label is None
    assert rows["R-03"].truth_label is None
    # The status would reveal that ground truth exists, so it is masked too.
    assert rows["R-03"].status == "ready_to_read"
    assert rows["R-03"].status_label == "Ready for your reading"
    assert rows["R-02"].status == Status.DISAGREEMENT
    assert rows["R-05"].status == Status.PROCESSING


def test_blinded_page_does_not_contain_labels(client: Client, reader: Any, cohort: Cohort) -> None:
    client.force_login(reader)
    content = client.get("/?q=R-03").content.decode()

    assert "hidden until you submit your label" in content
    assert "HT+CE" not in content.split("<tbody>")[1]


def test_unblinded_case_shows_values_to_reader(client: Client, reader: Any, cohort: Cohort) -> None:
    Case.objects.filter(code="R-03").update(readers_blinded=False)

    assert _rows(client, reader)["R-03"].predicted_label == "HT+CE"


def test_my_queue_lists_unlabelled_predicted_cases(
    client: Client, reader: Any, cohort: Cohort
) -> None:
    rows = _rows(client, reader, "?mine=1")

    assert sorted(rows) == ["R-03", "R-04", "R-08"]


def test_filters_by_status_split_and_code(client: Client, researcher: Any, cohort: Cohort) -> None:
    assert sorted(_rows(client, researcher, "?status=processing")) == ["R-05"]
    assert sorted(_rows(client, researcher, "?split=train")) == ["R-05", "R-06", "R-07"]
    assert sorted(_rows(client, researcher, "?q=r-0")) == [f"R-0{i}" for i in range(1, 9)]
    assert sorted(_rows(client, researcher, "?q=08")) == ["R-08"]


def test_unknown_filter_values_are_ignored(client: Client, researcher: Any, cohort: Cohort) -> None:
    rows = _rows(client, researcher, "?status=bogus&split=nope&sort=evil&page=x")

    assert len(rows) == 8


def test_sorting_by_readers_descending(client: Client, researcher: Any, cohort: Cohort) -> None:
    client.force_login(researcher)
    response = client.get("/?sort=readers&order=desc")
    codes = [row.case.code for row in response.context["rows"]]

    assert codes[:2] == ["R-01", "R-02"]
    assert codes[2:] == ["R-03", "R-04", "R-05", "R-06", "R-07", "R-08"]


def test_pages_hold_page_size_cases(client: Client, researcher: Any) -> None:
    Case.objects.bulk_create([Case(code=f"P-{i:03d}") for i in range(PAGE_SIZE + 3)])
    client.force_login(researcher)

    first = client.get("/")
    second = client.get("/?page=2")

    assert len(first.context["rows"]) == PAGE_SIZE
    assert [row.case.code for row in second.context["rows"]] == ["P-050", "P-051", "P-052"]
    assert b"Page 2 of 2" in second.content


def test_postgresql_connections_run_without_jit(db: None) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("JIT is a PostgreSQL setting")
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone() == ("off",)


def test_empty_worklist_says_no_cases(client: Client, researcher: Any) -> None:
    client.force_login(researcher)
    assert b"No cases yet." in client.get("/").content
    assert b"No cases match these filters." in client.get("/?q=zzz").content


@pytest.mark.parametrize("n_cases", [5, 50])
def test_query_count_does_not_grow_with_cases(
    client: Client,
    reader: Any,
    coordinator: Any,
    second_reader: Any,
    django_assert_num_queries: Any,
    n_cases: int,
) -> None:
    add_cases(n_cases, coordinator, reader, second_reader)
    client.force_login(reader)

    # Session, user, roles, count and page: five queries whatever the number of cases.
    with django_assert_num_queries(5):
        response = client.get("/")
    assert len(response.context["rows"]) == n_cases


def add_cases(n_cases: int, coordinator: Any, reader: Any, second_reader: Any) -> None:
    """Add cases with a study, job, prediction, ground truth and two disagreeing readers."""
    from webapp.core.models import Adjudication, GroundTruth, Study
    from webapp.jobs.models import InferenceJob, ModelVersion, Prediction

    version = ModelVersion.objects.create(kind="svm", version="q", sha256="c" * 64)
    for number in range(n_cases):
        case = Case.objects.create(code=f"Q-{number:03d}")
        if number % 5 == 4:
            continue  # every fifth case still awaits its upload
        study = Study.objects.create(
            case=case, role="baseline", study_instance_uid=f"2.25.9{number}"
        )
        job = InferenceJob.objects.create(study=study, pipeline_version="t", run_count=1)
        Prediction.objects.create(
            job=job, model_version=version, probabilities={"HT": 1.0}, predicted_label="HT"
        )
        GroundTruth.objects.create(case=case, version=1, label="CE", entered_by=coordinator)
        Adjudication.objects.create(case=case, reader=reader, version=1, label="HT", confidence=3)
        Adjudication.objects.create(
            case=case, reader=second_reader, version=1, label="CE", confidence=3
        )
