"""The worklist on the case-list URL: statuses, blinding, filters, sorting, paging, query count."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.webapp.test_research_support import (
    Cohort,
    _baseline,
    _follow_up,
    _predict,
    _read,
    _truth,
    build_cohort,
)
from webapp.core.models import Case
from webapp.research.worklist import (
    PAGE_SIZE,
    READ_BY_YOU,
    READY_FOR_YOUR_READING,
    STATUS_ORDER,
    Status,
    status_choices,
)


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
    assert rows["R-03"].status == Status.HIDDEN
    assert rows["R-03"].status_label == "Hidden until you submit your label"
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
    assert {row.reading_state for row in rows.values()} == {READY_FOR_YOUR_READING}


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


def _consensus(case: Case, adjudicator: Any, label: str) -> None:
    from webapp.core.models import Adjudication

    Adjudication.objects.create(
        case=case, reader=adjudicator, version=1, is_consensus=True, label=label, confidence=4
    )


@pytest.fixture
def extended(
    coordinator: Any, reader: Any, second_reader: Any, adjudicator: Any
) -> dict[str, Case]:
    """Add R-09 ... R-14 to the eight-case cohort: the hard cases of the status rules.

    ``reader`` labelled R-01, R-02 and R-09 only; ``adjudicator`` is a reader too.
    """
    cohort = build_cohort(coordinator, reader, second_reader)
    cases = dict(cohort.cases)
    for code in ("R-09", "R-10", "R-11", "R-12", "R-13", "R-14"):
        cases[code] = Case.objects.create(code=code, split="test")

    # ground truth and a single read: awaiting adjudication, not adjudicated.
    _predict(_baseline(cases["R-09"]), cohort.svm, "HT")
    _follow_up(cases["R-09"])
    _truth(cases["R-09"], "HT", coordinator)
    _read(cases["R-09"], reader, "HT")

    # baseline only, no ground truth, two readers disagree: awaiting follow-up.
    _predict(_baseline(cases["R-10"]), cohort.svm, "CE")
    _read(cases["R-10"], second_reader, "HT")
    _read(cases["R-10"], adjudicator, "CE")

    # baseline only, no ground truth, consensus recorded: still awaiting follow-up.
    _predict(_baseline(cases["R-11"]), cohort.svm, "HT")
    _read(cases["R-11"], second_reader, "CE")
    _read(cases["R-11"], adjudicator, "HT")
    _consensus(cases["R-11"], adjudicator, "HT")

    # ground truth, one reader and a consensus: adjudicated.
    _predict(_baseline(cases["R-12"]), cohort.svm, "HT")
    _truth(cases["R-12"], "HT", coordinator)
    _read(cases["R-12"], second_reader, "HT")
    _consensus(cases["R-12"], adjudicator, "HT")

    # ground truth, two other readers disagree, ``reader`` has not read it.
    _predict(_baseline(cases["R-13"]), cohort.svm, "CE")
    _truth(cases["R-13"], "CE", coordinator)
    _read(cases["R-13"], second_reader, "CE")
    _read(cases["R-13"], adjudicator, "HT")

    # follow-up CT uploaded, no ground truth, one read: predicted.
    _predict(_baseline(cases["R-14"]), cohort.svm, "HT+CE")
    _follow_up(cases["R-14"])
    _read(cases["R-14"], second_reader, "HT")
    return cases


RESEARCHER_STATUSES = {
    "R-01": Status.ADJUDICATED,
    "R-02": Status.DISAGREEMENT,
    "R-03": Status.AWAITING_ADJUDICATION,
    "R-04": Status.AWAITING_FOLLOW_UP,
    "R-05": Status.PROCESSING,
    "R-06": Status.AWAITING_UPLOAD,
    "R-07": Status.FAILED,
    "R-08": Status.PREDICTED,
    "R-09": Status.AWAITING_ADJUDICATION,
    "R-10": Status.AWAITING_FOLLOW_UP,
    "R-11": Status.AWAITING_FOLLOW_UP,
    "R-12": Status.ADJUDICATED,
    "R-13": Status.DISAGREEMENT,
    "R-14": Status.PREDICTED,
}


def test_status_rules_on_hard_cases(
    client: Client, researcher: Any, extended: dict[str, Case]
) -> None:
    rows = _rows(client, researcher)

    assert {code: row.status for code, row in rows.items()} == RESEARCHER_STATUSES


def test_reader_sees_hidden_until_read(
    client: Client, reader: Any, extended: dict[str, Case]
) -> None:
    rows = _rows(client, reader)

    hidden = {"R-03", "R-04", "R-08", "R-10", "R-11", "R-12", "R-13", "R-14"}
    assert {code for code, row in rows.items() if row.status == Status.HIDDEN} == hidden
    assert rows["R-02"].status == Status.DISAGREEMENT
    assert rows["R-09"].status == Status.AWAITING_ADJUDICATION
    assert rows["R-01"].status == Status.ADJUDICATED
    assert rows["R-07"].status == Status.FAILED


@pytest.mark.parametrize("persona", ["researcher", "reader", "adjudicator"])
def test_status_filter_matches_status_column(
    client: Client, request: pytest.FixtureRequest, persona: str, extended: dict[str, Case]
) -> None:
    user = request.getfixturevalue(persona)
    column_status = {code: row.status for code, row in _rows(client, user).items()}
    options = dict(status_choices(user))

    assert set(column_status.values()) <= set(options)
    for status in STATUS_ORDER:
        filtered = _rows(client, user, f"?status={status}")
        expected = sorted(code for code, value in column_status.items() if value == status)
        assert sorted(filtered) == expected, status
        assert all(row.status == status for row in filtered.values())


def test_blinded_reader_filter_reveals_nothing(
    client: Client, reader: Any, extended: dict[str, Case]
) -> None:
    # R-13 has readers who disagree and ground truth; R-10 and R-11 have other readers'
    # labels. ``reader`` has read none of them, so no filter other than "hidden" finds them.
    assert sorted(_rows(client, reader, "?status=disagreement")) == ["R-02"]
    assert sorted(_rows(client, reader, "?status=awaiting_adjudication")) == ["R-09"]
    assert sorted(_rows(client, reader, "?status=awaiting_follow_up")) == []
    assert sorted(_rows(client, reader, "?status=adjudicated")) == ["R-01"]
    assert "R-13" in _rows(client, reader, "?status=hidden")


def test_blinded_reader_page_hides_disagreement(
    client: Client, reader: Any, extended: dict[str, Case]
) -> None:
    client.force_login(reader)
    body = client.get("/?q=R-13").content.decode().split("<tbody>")[1]

    assert "Hidden until you submit your label" in body
    assert "disagree" not in body.lower()
    assert "Readers disagree" not in body


def test_researcher_sees_disagree_tag(
    client: Client, researcher: Any, extended: dict[str, Case]
) -> None:
    rows = _rows(client, researcher)
    client.force_login(researcher)
    body = client.get("/?q=R-10").content.decode().split("<tbody>")[1]

    assert rows["R-10"].readers_disagree is True
    assert rows["R-09"].readers_disagree is False
    assert '<span class="tag">disagree</span>' in body


def test_sorting_by_status_hides_true_status(
    client: Client, reader: Any, extended: dict[str, Case]
) -> None:
    client.force_login(reader)
    codes = [row.case.code for row in client.get("/?sort=status").context["rows"]]

    # Workflow order, with the hidden cases in code order, as if they shared one status.
    assert codes == [
        "R-06", "R-05", "R-07",
        "R-03", "R-04", "R-08", "R-10", "R-11", "R-12", "R-13", "R-14",
        "R-09", "R-02", "R-01",
    ]  # fmt: skip


def test_sorting_by_status_follows_workflow(
    client: Client, researcher: Any, extended: dict[str, Case]
) -> None:
    client.force_login(researcher)
    rows = client.get("/?sort=status&order=desc").context["rows"]
    ranks = [STATUS_ORDER.index(row.status) for row in rows]

    assert ranks == sorted(ranks, reverse=True)
    assert rows[0].status == Status.ADJUDICATED
    assert rows[-1].status == Status.AWAITING_UPLOAD


def test_required_readers_setting(
    client: Client, researcher: Any, extended: dict[str, Case], settings: Any
) -> None:
    settings.REQUIRED_READERS = 1
    rows = _rows(client, researcher)
    assert rows["R-09"].status == Status.ADJUDICATED
    assert rows["R-03"].status == Status.AWAITING_ADJUDICATION

    settings.REQUIRED_READERS = 3
    rows = _rows(client, researcher)
    assert rows["R-01"].status == Status.AWAITING_ADJUDICATION
    assert rows["R-12"].status == Status.ADJUDICATED


def test_reading_state_column(client: Client, reader: Any, extended: dict[str, Case]) -> None:
    rows = _rows(client, reader)
    client.force_login(reader)
    content = client.get("/").content.decode()

    assert rows["R-01"].reading_state == READ_BY_YOU
    assert rows["R-09"].reading_state == READ_BY_YOU
    assert rows["R-13"].reading_state == READY_FOR_YOUR_READING
    assert rows["R-05"].reading_state == ""
    assert rows["R-06"].reading_state == ""
    assert '<th scope="col">Your reading</th>' in content
    ready = {code for code, row in rows.items() if row.reading_state == READY_FOR_YOUR_READING}
    assert sorted(_rows(client, reader, "?mine=1")) == sorted(ready)


def test_non_reader_has_no_queue(
    client: Client, researcher: Any, extended: dict[str, Case]
) -> None:
    rows = _rows(client, researcher, "?mine=1")
    client.force_login(researcher)
    content = client.get("/").content.decode()

    assert len(rows) == len(RESEARCHER_STATUSES)
    assert {row.reading_state for row in rows.values()} == {""}
    assert "Your reading" not in content
    assert "ready for your reading" not in content


def test_status_help_and_options(client: Client, reader: Any, researcher: Any) -> None:
    client.force_login(researcher)
    content = client.get("/").content.decode()
    client.force_login(reader)
    reader_content = client.get("/").content.decode()

    assert "What the statuses mean" in content
    assert "2 or more readers agree or an adjudicator recorded the consensus label" in content
    assert "<code>REQUIRED_READERS</code>" in content
    assert "Readers done (of 2)" in content
    assert '<option value="hidden"' not in content
    assert '<option value="hidden"' in reader_content
    assert '<option value="ready_to_read"' not in reader_content


def test_jit_is_off_through_connection_options() -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("postgresql"):
        pytest.skip("JIT is a PostgreSQL setting")
    assert "-c jit=off" in database["OPTIONS"]["options"]
