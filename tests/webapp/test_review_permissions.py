"""Who may POST each form of the review page: ground truth, adjudication and consensus.

Every check is made on the server. A hidden form is no protection, so each test posts directly.
"""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import _make_user
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    CASE_CODE,
    ReviewedCase,
    reviewed_case,
    study_files,
)
from webapp.core.models import Adjudication, AuditEvent, Case, GroundTruth

PAGE = f"/cases/{CASE_CODE}/review/"
ADJUDICATE = f"/cases/{CASE_CODE}/review/adjudication/"
CONSENSUS = f"/cases/{CASE_CODE}/review/consensus/"
GROUND_TRUTH = f"/cases/{CASE_CODE}/review/ground-truth/"
TRUTH_FIELDS = {"label": "CE", "expected_version": "1"}
READ_FIELDS = {"label": "HT", "confidence": "4", "notes": "", "expected_version": "0"}


@pytest.fixture
def case_with_truth(reviewed_case: ReviewedCase, coordinator: Any) -> ReviewedCase:
    GroundTruth.objects.create(
        case=reviewed_case.case, version=1, label="HT", entered_by=coordinator
    )
    return reviewed_case


def _denials(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


def test_reader_truth_before_reading_is_403(
    client: Client, reader: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(reader)

    response = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert response.status_code == 403
    assert (
        f"Entering the follow-up ground truth of case {CASE_CODE} needs the role coordinator or "
        "admin, or the role reader after submitting your own adjudication of the case; your "
        "roles are reader." in response.content.decode()
    )
    assert list(GroundTruth.objects.values_list("version", "label")) == [(1, "HT")]
    denied = _denials("ground_truth.denied")
    assert len(denied) == 1
    assert denied[0].actor == reader
    assert denied[0].details == {"case": CASE_CODE, "roles": ["reader"]}


def test_reader_truth_unblinded_case_is_403(
    client: Client, reader: Any, case_with_truth: ReviewedCase
) -> None:
    # Without blinding the reader sees the truth, but must still label the case first.
    Case.objects.filter(pk=case_with_truth.case.pk).update(readers_blinded=False)
    client.force_login(reader)
    page = client.get(PAGE).content.decode()

    response = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert 'id="ground-truth-label">HT<' in page
    assert "Save ground truth" not in page
    assert response.status_code == 403
    assert GroundTruth.objects.count() == 1
    assert len(_denials("ground_truth.denied")) == 1


def test_reader_truth_after_reading_is_saved(
    client: Client, reader: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(reader)
    client.post(ADJUDICATE, READ_FIELDS)

    response = client.post(
        GROUND_TRUTH, {**TRUTH_FIELDS, "heidelberg_subtype": "PH1", "notes": "seen on day 2"}
    )

    assert response.status_code == 302
    latest = GroundTruth.objects.order_by("-version").first()
    assert (latest.version, latest.label, latest.entered_by) == (2, "CE", reader)
    assert (latest.heidelberg_subtype, latest.notes) == ("PH1", "seen on day 2")
    assert latest.follow_up_study == case_with_truth.follow_up
    recorded = AuditEvent.objects.get(action="ground_truth.recorded")
    assert recorded.actor == reader
    assert recorded.details["version"] == 2
    assert _denials("ground_truth.denied") == []


def test_reader_ground_truth_edit_is_versioned(
    client: Client, reader: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(reader)
    client.post(ADJUDICATE, READ_FIELDS)
    client.post(GROUND_TRUTH, TRUTH_FIELDS)

    stale = client.post(GROUND_TRUTH, {"label": "HT+CE", "expected_version": "1"}, follow=True)
    fresh = client.post(GROUND_TRUTH, {"label": "HT+CE", "expected_version": "2"})

    assert "now version 2, you edited version 1" in stale.content.decode()
    assert fresh.status_code == 302
    assert list(GroundTruth.objects.order_by("version").values_list("version", "label")) == [
        (1, "HT"),
        (2, "CE"),
        (3, "HT+CE"),
    ]


def test_reader_truth_form_after_reading(
    client: Client, reader: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(reader)
    blinded_page = client.get(PAGE).content.decode()
    client.post(ADJUDICATE, READ_FIELDS)

    page = client.get(PAGE).content.decode()

    assert "Save ground truth" not in blinded_page
    assert "review/ground-truth/" not in blinded_page
    assert 'id="ground-truth-label">HT<' in page
    assert "Edit ground truth" in page
    assert "Save ground truth" in page
    assert f'action="{GROUND_TRUTH}"' in page


def test_ground_truth_history_visibility(
    client: Client, reader: Any, coordinator: Any, researcher: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(coordinator)
    client.post(GROUND_TRUTH, TRUTH_FIELDS)
    coordinator_page = client.get(PAGE).content.decode()
    client.force_login(researcher)
    researcher_page = client.get(PAGE).content.decode()
    client.force_login(reader)
    blinded_page = client.get(PAGE).content.decode()
    client.post(ADJUDICATE, READ_FIELDS)
    reader_page = client.get(PAGE).content.decode()

    assert "<summary>Ground truth history</summary>" in coordinator_page
    assert coordinator_page.count("<li>v") == 2
    assert "<summary>Ground truth history</summary>" in reader_page
    assert "Ground truth history" not in blinded_page
    assert "Ground truth history" not in researcher_page


def test_other_readers_label_does_not_count(
    client: Client, reader: Any, second_reader: Any, case_with_truth: ReviewedCase
) -> None:
    # Another reader's submission does not count: each reader must have read the case.
    client.force_login(reader)
    client.post(ADJUDICATE, READ_FIELDS)
    client.force_login(second_reader)

    response = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert response.status_code == 403
    assert GroundTruth.objects.count() == 1


@pytest.mark.parametrize("held_roles", [["researcher"], ["adjudicator"]])
def test_other_roles_cannot_post_ground_truth(
    client: Client, held_roles: list[str], case_with_truth: Any
) -> None:
    client.force_login(_make_user("other_role", held_roles))

    response = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert response.status_code == 403
    assert GroundTruth.objects.count() == 1
    assert len(_denials("ground_truth.denied")) == 1


def test_reading_adjudicator_enters_truth(
    client: Client, adjudicator: Any, case_with_truth: ReviewedCase
) -> None:
    # The adjudicator persona also has the reader role, so the reader's rule applies.
    client.force_login(adjudicator)
    before = client.post(GROUND_TRUTH, TRUTH_FIELDS)
    client.post(ADJUDICATE, READ_FIELDS)

    after = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert before.status_code == 403
    assert after.status_code == 302
    assert GroundTruth.objects.order_by("-version").first().entered_by == adjudicator


def test_coordinator_ground_truth_post_is_saved(
    client: Client, coordinator: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(coordinator)

    response = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert response.status_code == 302
    latest = GroundTruth.objects.order_by("-version").first()
    assert (latest.version, latest.label, latest.entered_by) == (2, "CE", coordinator)
    assert _denials("ground_truth.denied") == []


def test_admin_ground_truth_post_is_saved(
    client: Client, admin_user: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(admin_user)

    response = client.post(GROUND_TRUTH, TRUTH_FIELDS)

    assert response.status_code == 302
    assert GroundTruth.objects.order_by("-version").first().entered_by == admin_user


def test_reader_ground_truth_api_post_is_403(reader: Any, case_with_truth: ReviewedCase) -> None:
    api = APIClient()
    api.force_authenticate(reader)

    response = api.post(
        "/api/v1/ground-truth/",
        {"case": CASE_CODE, "label": "CE", "expected_version": 1},
        format="json",
    )

    assert response.status_code == 403
    assert response.json()["code"] == "role_required"
    assert "own submitted adjudication" in response.json()["message"]
    assert GroundTruth.objects.count() == 1


def test_reader_ground_truth_api_post_after_reading(
    client: Client, reader: Any, case_with_truth: ReviewedCase
) -> None:
    client.force_login(reader)
    client.post(ADJUDICATE, READ_FIELDS)
    api = APIClient()
    api.force_authenticate(reader)

    response = api.post(
        "/api/v1/ground-truth/",
        {"case": CASE_CODE, "label": "CE", "expected_version": 1},
        format="json",
    )

    assert response.status_code == 201, response.json()
    latest = GroundTruth.objects.order_by("-version").first()
    assert (latest.version, latest.label, latest.entered_by) == (2, "CE", reader)


@pytest.mark.parametrize("user_fixture", ["coordinator", "researcher", "admin_user"])
def test_non_reader_adjudication_post_is_403(
    client: Client, request: pytest.FixtureRequest, user_fixture: str, reviewed_case: Any
) -> None:
    user = request.getfixturevalue(user_fixture)
    client.force_login(user)

    response = client.post(ADJUDICATE, READ_FIELDS)

    assert response.status_code == 403
    assert Adjudication.objects.count() == 0
    denied = _denials("adjudication.denied")
    assert len(denied) == 1
    assert denied[0].actor == user


def test_reader_adjudication_post_is_saved(
    client: Client, reader: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)

    response = client.post(ADJUDICATE, READ_FIELDS)

    assert response.status_code == 302
    assert Adjudication.objects.get().reader == reader


@pytest.mark.parametrize("user_fixture", ["reader", "coordinator", "researcher"])
def test_non_adjudicator_consensus_post_is_403(
    client: Client, request: pytest.FixtureRequest, user_fixture: str, reviewed_case: Any
) -> None:
    user = request.getfixturevalue(user_fixture)
    client.force_login(user)
    if user_fixture == "reader":
        client.post(ADJUDICATE, READ_FIELDS)

    response = client.post(CONSENSUS, READ_FIELDS)

    assert response.status_code == 403
    assert not Adjudication.objects.filter(is_consensus=True).exists()
    assert len(_denials("adjudication.consensus_denied")) == 1


def test_blinded_adjudicator_consensus_post_is_rejected(
    client: Client, adjudicator: Any, reviewed_case: ReviewedCase
) -> None:
    # The adjudicator also reads, and has not read this case: the consensus form is hidden.
    client.force_login(adjudicator)
    page = client.get(PAGE).content.decode()

    response = client.post(CONSENSUS, READ_FIELDS, follow=True)

    assert "Record consensus" not in page
    assert "submit your own adjudication before recording the consensus" in (
        response.content.decode()
    )
    assert not Adjudication.objects.filter(is_consensus=True).exists()


def test_adjudicator_consensus_post_is_saved(
    client: Client, adjudicator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(adjudicator)
    client.post(ADJUDICATE, READ_FIELDS)

    response = client.post(CONSENSUS, {**READ_FIELDS, "label": "CE"})

    assert response.status_code == 302
    consensus = Adjudication.objects.get(is_consensus=True)
    assert (consensus.label, consensus.reader) == ("CE", adjudicator)


def test_reading_coordinator_gets_truth_form(client: Client, case_with_truth: ReviewedCase) -> None:
    both = _make_user("coordinating_reader", ["coordinator", "reader"])
    client.force_login(both)
    blinded_page = client.get(PAGE).content.decode()
    client.post(ADJUDICATE, READ_FIELDS)

    revealed_page = client.get(PAGE).content.decode()

    assert "Save ground truth" not in blinded_page
    assert "Save ground truth" in revealed_page
