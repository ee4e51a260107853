"""Re-analysis on request: the case page button, the all-cases button and the command."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    ingest_settings,
    named_files,
    test_model_dir,
    write_study,
)
from webapp.core.models import AuditEvent, Case, Study
from webapp.ingest.services import ingest_files
from webapp.jobs.models import InferenceJob

pytestmark = pytest.mark.usefixtures("ingest_settings")


def _finished_case(code: str, coordinator: Any, folder: Path) -> InferenceJob:
    case = Case.objects.create(code=code)
    ingest_files(case, "baseline", 2, named_files(write_study(folder)), coordinator)
    job = InferenceJob.objects.get(study__case=case)
    InferenceJob.objects.filter(pk=job.pk).update(status=InferenceJob.Status.SUCCEEDED)
    return job


@pytest.fixture
def finished_jobs(coordinator: Any, tmp_path: Path) -> list[InferenceJob]:
    return [
        _finished_case("RE-001", coordinator, tmp_path / "one"),
        _finished_case("RE-002", coordinator, tmp_path / "two"),
    ]


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _statuses(jobs: list[InferenceJob]) -> list[str]:
    return [InferenceJob.objects.get(pk=job.pk).status for job in jobs]


def test_researcher_reanalyses_one_case(finished_jobs: list[InferenceJob], researcher: Any) -> None:
    response = _client(researcher).post("/cases/RE-001/reanalyse/", follow=True)

    assert response.redirect_chain[-1][0] == "/cases/RE-001/"
    assert _statuses(finished_jobs) == ["queued", "succeeded"]
    assert InferenceJob.objects.get(pk=finished_jobs[0].pk).requested_by == researcher
    assert (
        "Re-analysis of case RE-001: 1 study queued with the model versions in use now; "
        "earlier predictions are kept." in response.content.decode()
    )
    event = AuditEvent.objects.get(action="case.reanalysis_requested")
    assert event.actor_username == "researcher_dee"
    assert event.object_id == str(Case.objects.get(code="RE-001").pk)
    assert event.details == {
        "study_ids": [Study.objects.get(case__code="RE-001").pk],
    }


@pytest.mark.parametrize("persona", ["reader", "coordinator"])
def test_other_roles_cannot_reanalyse(
    finished_jobs: list[InferenceJob], persona: str, request: pytest.FixtureRequest
) -> None:
    user = request.getfixturevalue(persona)
    response = _client(user).post("/cases/RE-001/reanalyse/")
    assert response.status_code == 403
    assert _statuses(finished_jobs) == ["succeeded", "succeeded"]
    assert not AuditEvent.objects.filter(action="case.reanalysis_requested").exists()


def test_reanalysis_is_post_only(
    finished_jobs: list[InferenceJob], researcher: Any, reader: Any
) -> None:
    assert _client(researcher).get("/cases/RE-001/reanalyse/").status_code == 405
    # Without the role, the method does not matter: 403 before 405.
    assert _client(reader).get("/cases/RE-001/reanalyse/").status_code == 403
    assert _statuses(finished_jobs) == ["succeeded", "succeeded"]


def test_all_cases_need_the_confirmation(
    finished_jobs: list[InferenceJob], researcher: Any
) -> None:
    client = _client(researcher)
    refused = client.post("/jobs/reanalyse-all/", follow=True)
    assert "Tick the confirmation box" in refused.content.decode()
    assert _statuses(finished_jobs) == ["succeeded", "succeeded"]

    accepted = client.post("/jobs/reanalyse-all/", {"confirm": "all"}, follow=True)
    assert accepted.redirect_chain[-1][0] == "/research/operations/"
    assert "Re-analysis of all cases: 2 studies queued" in accepted.content.decode()
    assert _statuses(finished_jobs) == ["queued", "queued"]
    assert AuditEvent.objects.filter(action="case.reanalysis_requested").count() == 2


def test_running_job_is_left_alone(finished_jobs: list[InferenceJob], researcher: Any) -> None:
    InferenceJob.objects.filter(pk=finished_jobs[1].pk).update(status="running")
    response = _client(researcher).post("/jobs/reanalyse-all/", {"confirm": "all"}, follow=True)
    assert "1 study queued" in response.content.decode()
    assert "1 already running, left alone." in response.content.decode()
    assert _statuses(finished_jobs) == ["queued", "running"]


def test_command_reanalyses_named_cases(finished_jobs: list[InferenceJob], researcher: Any) -> None:
    output = StringIO()
    call_command("reanalyse", "RE-002", username="researcher_dee", stdout=output)
    assert output.getvalue().strip() == "1 of 1 analysed studies queued; 0 were already running."
    assert _statuses(finished_jobs) == ["succeeded", "queued"]


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        ([], {"username": "researcher_dee"}, "Name one or more case codes, or pass --all"),
        (["RE-001"], {"username": "researcher_dee", "all": True}, "(not both)"),
        (["RE-404"], {"username": "researcher_dee"}, "No case with code RE-404"),
        (["RE-001"], {"username": "nobody"}, "No user 'nobody'"),
        (["RE-001"], {"username": "coordinator_cai"}, "needs the researcher or admin role"),
    ],
)
def test_command_rejects_bad_arguments(
    finished_jobs: list[InferenceJob],
    researcher: Any,
    arguments: list[str],
    options: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("reanalyse", *arguments, **options)
    assert _statuses(finished_jobs) == ["succeeded", "succeeded"]


@pytest.mark.parametrize(("persona", "shown"), [("researcher", True), ("coordinator", False)])
def test_case_page_offers_reanalysis_to_researchers(
    finished_jobs: list[InferenceJob], persona: str, shown: bool, request: pytest.FixtureRequest
) -> None:
    page = _client(request.getfixturevalue(persona)).get("/cases/RE-001/").content.decode()
    assert ('action="/cases/RE-001/reanalyse/"' in page) is shown
    assert ("Re-analyse this case" in page) is shown


@pytest.mark.parametrize(("persona", "shown"), [("researcher", True), ("coordinator", False)])
def test_operations_page_offers_reanalysis_of_all_to_researchers(
    finished_jobs: list[InferenceJob], persona: str, shown: bool, request: pytest.FixtureRequest
) -> None:
    page = _client(request.getfixturevalue(persona)).get("/research/operations/")
    assert page.status_code == 200
    assert ('action="/jobs/reanalyse-all/"' in page.content.decode()) is shown


def test_case_page_names_the_series_analysed(
    finished_jobs: list[InferenceJob], coordinator: Any
) -> None:
    # Kept with the re-analysis tests for their ingested fixture; the study description is
    # removed on de-identification, so the page shows the chosen series instead.
    from webapp.core.models import Series

    series = Series.objects.get(study__case__code="RE-001", is_chosen=True)
    page = _client(coordinator).get("/cases/RE-001/").content.decode()
    assert '<th scope="col">Series analysed</th>' in page
    expected = f"{series.series_number} {series.description or '(no description)'}"
    assert f"<td>{expected}</td>" in page
