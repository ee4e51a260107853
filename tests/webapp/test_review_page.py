"""Review page and its JSON: blinding, versioned edits, stale edits, consensus, audit, queries."""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.conftest import _make_user
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    CASE_CODE,
    ReviewedCase,
    make_reviewed_case,
    reviewed_case,
    study_files,
)
from webapp.core.models import Adjudication, AuditEvent, Case, GroundTruth
from webapp.jobs.models import Lesion

PAGE = f"/cases/{CASE_CODE}/review/"
STATE = f"/cases/{CASE_CODE}/review/state.json"
ADJUDICATE = f"/cases/{CASE_CODE}/review/adjudication/"
CONSENSUS = f"/cases/{CASE_CODE}/review/consensus/"
GROUND_TRUTH = f"/cases/{CASE_CODE}/review/ground-truth/"


def _adjudicate(client: Client, url: str = ADJUDICATE, **fields: Any) -> Any:
    data = {"label": "CE", "confidence": "4", "notes": "", "expected_version": "0", **fields}
    return client.post(url, data, follow=True)


@pytest.fixture
def case_with_truth(reviewed_case: ReviewedCase, coordinator: Any, second_reader: Any) -> Case:
    case = reviewed_case.case
    GroundTruth.objects.create(case=case, version=1, label="HT+CE", entered_by=coordinator)
    Adjudication.objects.create(
        case=case, reader=second_reader, version=1, label="HT", confidence=5
    )
    return case


def test_blinded_reader_page_hides_model_and_labels(
    client: Client, reader: Any, case_with_truth: Case
) -> None:
    client.force_login(reader)

    page = client.get(PAGE).content.decode()

    assert "Blinded reading" in page
    assert 'id="predictions"' not in page
    assert "72%" not in page
    assert "HT+CE</strong>" not in page
    assert "reader_ben" not in page
    assert "overlay.json" not in page
    assert "Submit adjudication" in page
    assert 'name="expected_version" value="0"' in page


def test_blinded_reader_json_omits_model_and_labels(
    client: Client, reader: Any, case_with_truth: Case
) -> None:
    client.force_login(reader)

    state = json.loads(client.get(STATE).content)

    assert state["blinded"] is True
    assert "predictions" not in state
    assert "ground_truth" not in state
    assert "other_adjudications" not in state
    assert "lesions" not in state
    assert state["studies"][0]["status"] == "ok"
    assert len(state["studies"][0]["instances"]) == 12


def test_blinded_reader_overlay_is_403(
    client: Client, reader: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)

    response = client.get(f"/cases/{CASE_CODE}/review/jobs/{reviewed_case.job.pk}/overlay.json")

    assert response.status_code == 403


def test_submission_reveals_comparison(client: Client, reader: Any, case_with_truth: Case) -> None:
    client.force_login(reader)

    response = _adjudicate(client, label="CE", confidence="4", agrees_with_model="no")
    page = response.content.decode()
    state = json.loads(client.get(STATE).content)

    assert "Adjudication saved." in page
    assert "Blinded reading" not in page
    assert "72%" in page
    assert 'id="ground-truth-label">HT+CE<' in page
    assert "reader_ben" in page
    assert "trained on synthetic data — research use only" in page
    assert state["blinded"] is False
    assert state["predictions"][0]["label"] == "HT"
    assert state["predictions"][0]["probabilities"] == {"HT": 0.72, "CE": 0.18, "HT+CE": 0.1}
    assert state["ground_truth"]["label"] == "HT+CE"
    assert state["other_adjudications"][0]["reader"] == "reader_ben"
    assert state["lesions"][0]["volumeMl"] == 0.896
    saved = Adjudication.objects.get(case=case_with_truth, reader=reader)
    assert saved.version == 1
    assert saved.model_shown is False
    # The blinded form does not ask about agreement, so a value posted anyway is dropped.
    assert saved.agrees_with_model is None


def test_unblinded_case_shows_prediction_before_submission(
    client: Client, reader: Any, case_with_truth: Case
) -> None:
    case_with_truth.readers_blinded = False
    case_with_truth.save()
    client.force_login(reader)

    state = json.loads(client.get(STATE).content)

    assert state["blinded"] is False
    assert state["predictions"][0]["label"] == "HT"


def test_coordinator_is_not_blinded(
    client: Client, coordinator: Any, case_with_truth: Case
) -> None:
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()

    assert 'id="predictions"' in page
    assert "Save ground truth" in page
    assert "Submit adjudication" not in page


def test_edit_creates_new_version(client: Client, reader: Any, reviewed_case: ReviewedCase) -> None:
    client.force_login(reader)

    _adjudicate(client, label="CE", expected_version="0")
    page = _adjudicate(client, label="HT", expected_version="1").content.decode()

    versions = list(
        Adjudication.objects.filter(reader=reader)
        .order_by("version")
        .values_list("version", "label")
    )
    assert versions == [(1, "CE"), (2, "HT")]
    assert "version 2: HT" in page
    assert 'name="expected_version" value="2"' in page


def test_stale_edit_is_rejected(
    client: Client, reader: Any, second_reader: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)
    _adjudicate(client, label="CE", expected_version="0")
    _adjudicate(client, label="HT", expected_version="1")

    # A second tab still shows version 1 and saves on top of it.
    response = _adjudicate(client, label="HT+CE", expected_version="1")
    page = response.content.decode()

    assert "Not saved: The adjudication was changed by someone else (now version 2" in page
    latest = Adjudication.objects.filter(reader=reader).order_by("-version").first()
    assert latest.version == 2
    assert latest.label == "HT"


def test_stale_ground_truth_is_rejected(
    client: Client, coordinator: Any, admin_user: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(coordinator)
    client.post(GROUND_TRUTH, {"label": "HT", "expected_version": "0"})
    client.force_login(admin_user)

    page = client.post(
        GROUND_TRUTH, {"label": "CE", "expected_version": "0"}, follow=True
    ).content.decode()

    assert "now version 1, you edited version 0" in page
    assert list(GroundTruth.objects.values_list("version", "label")) == [(1, "HT")]
    assert GroundTruth.objects.get().follow_up_study == reviewed_case.follow_up


def test_blinded_reader_cannot_enter_ground_truth(
    client: Client, reviewed_case: ReviewedCase
) -> None:
    # A coordinator who also reads stays blinded, and cannot enter the truth, until they read.
    client.force_login(_make_user("coordinating_reader", ["coordinator", "reader"]))

    page = client.post(
        GROUND_TRUTH, {"label": "HT", "expected_version": "0"}, follow=True
    ).content.decode()

    assert "submit your own adjudication before entering the ground truth" in page
    assert GroundTruth.objects.count() == 0


def test_consensus_needs_adjudicator(
    client: Client, reader: Any, adjudicator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)
    reader_response = client.post(
        CONSENSUS, {"label": "HT", "confidence": "3", "expected_version": "0"}
    )
    client.force_login(adjudicator)
    _adjudicate(client, label="HT")
    adjudicator_response = _adjudicate(client, url=CONSENSUS, label="HT+CE")

    assert reader_response.status_code == 403
    assert "Consensus label saved." in adjudicator_response.content.decode()
    consensus = Adjudication.objects.get(is_consensus=True)
    assert consensus.label == "HT+CE"
    assert consensus.reader == adjudicator
    assert consensus.model_shown is True


def test_adjudication_writes_audit_event(
    client: Client, reader: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)

    _adjudicate(client, label="CE", confidence="2")

    event = AuditEvent.objects.get(action="adjudication.recorded")
    assert event.actor == reader
    assert event.client_address == "127.0.0.1"
    assert event.details["case"] == CASE_CODE
    assert event.details["label"] == "CE"
    assert event.details["confidence"] == 2
    assert event.details["model_shown"] is False


def test_history_visible_to_admin_only(
    client: Client, reader: Any, admin_user: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)
    _adjudicate(client, label="CE", expected_version="0")
    _adjudicate(client, label="HT", expected_version="1")
    reader_page = client.get(PAGE).content.decode()
    client.force_login(admin_user)
    admin_page = client.get(PAGE).content.decode()

    assert "Adjudication history" not in reader_page
    assert "Adjudication history" in admin_page
    assert admin_page.count("<td>reader_ann</td>") == 2


def test_next_unread_skips_adjudicated_case(
    client: Client, reader: Any, coordinator: Any, study_files: Any, reviewed_case: ReviewedCase
) -> None:
    Case.objects.create(code="REV-002")
    client.force_login(reader)
    _adjudicate(client)

    response = client.get("/review/next-unread/")

    assert response.status_code == 302
    assert response["Location"] == "/cases/REV-002/review/"


def test_next_case_for_those_who_do_not_read(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    Case.objects.create(code="REV-000")
    Case.objects.create(code="REV-002")
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    following = client.get(f"/review/next-case/?after={CASE_CODE}")
    wrapped = client.get("/review/next-case/?after=REV-002")

    assert 'id="next-case"' in page
    assert 'id="next-unread"' not in page
    assert following["Location"] == "/cases/REV-002/review/"
    assert wrapped["Location"] == "/cases/REV-000/review/"


def test_missing_series_is_stated(client: Client, reader: Any, db: None) -> None:
    Case.objects.create(code=CASE_CODE)
    client.force_login(reader)

    page = client.get(PAGE).content.decode()

    assert "No studies uploaded yet." in page


def test_missing_follow_up_has_placeholder(
    client: Client, reader: Any, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    reviewed_case.follow_up.delete()
    client.force_login(reader)
    reader_page = client.get(PAGE).content.decode()
    client.force_login(coordinator)

    coordinator_page = client.get(PAGE).content.decode()

    for page in (reader_page, coordinator_page):
        placeholder = page[
            page.index('id="follow-up-missing"') : page.index(
                "</figure>", page.index('id="follow-up-missing"')
            )
        ]
        assert "The follow-up CT is not uploaded yet." in placeholder
        assert "A coordinator uploads it on the" in placeholder
        assert "with the role Follow-up CT" in placeholder
        # One real viewport (the baseline), so no synchronized scrolling is offered.
        assert page.count('class="viewport" tabindex="0"') == 1
        assert 'id="sync-scroll"' not in page
    # Only users who may upload get a link to the upload page.
    assert 'href="/upload/"' not in reader_page
    assert '<a href="/upload/">Upload</a> page' in coordinator_page


def test_follow_up_present_has_no_placeholder(
    client: Client, reader: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(reader)

    page = client.get(PAGE).content.decode()

    assert "follow-up-missing" not in page
    assert "not uploaded yet" not in page
    assert page.count('class="viewport" tabindex="0"') == 2


def test_page_query_count_is_constant(
    client: Client,
    admin_user: Any,
    coordinator: Any,
    study_files: Any,
    reviewed_case: ReviewedCase,
    django_assert_num_queries: Any,
) -> None:
    client.force_login(admin_user)
    client.get(PAGE)
    # More reviewers and versions must not add queries.
    # 13: the true lesions of a synthetic case are one query of their own.
    with django_assert_num_queries(13) as small:
        client.get(PAGE)
    for version in range(1, 4):
        Adjudication.objects.create(
            case=reviewed_case.case, reader=coordinator, version=version, label="HT", confidence=3
        )
    with django_assert_num_queries(len(small.captured_queries)):
        client.get(PAGE)


def test_form_ids_are_unique_when_every_form_shows(client: Client, case_with_truth: Case) -> None:
    # After reading the case, a user with these three roles gets the adjudication, ground-truth
    # and consensus forms on one page. Each label must point at an input of its own form.
    client.force_login(_make_user("all_forms", ["reader", "coordinator", "adjudicator"]))
    _adjudicate(client)

    page = client.get(PAGE).content.decode()

    ids = re.findall(r'\sid="([^"]+)"', page)
    assert [name for name in set(ids) if ids.count(name) > 1] == []
    for prefix in ("adjudication", "consensus", "ground_truth"):
        assert f'<label for="{prefix}_label_0">' in page


def test_ground_truth_names_its_author_by_full_name(
    client: Client, coordinator: Any, case_with_truth: Case
) -> None:
    coordinator.first_name = "demo loader (synthetic cohort import)"
    coordinator.save(update_fields=["first_name"])
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = json.loads(client.get(STATE).content)

    assert "entered by demo loader (synthetic cohort import)" in page
    assert state["ground_truth"]["enteredBy"] == "demo loader (synthetic cohort import)"


@pytest.mark.parametrize(("synthetic_case", "warned"), [(False, True), (True, False)])
def test_synthetic_models_on_a_real_case_are_flagged(
    client: Client,
    coordinator: Any,
    reviewed_case: ReviewedCase,
    synthetic_case: bool,
    warned: bool,
) -> None:
    Case.objects.filter(pk=reviewed_case.case.pk).update(is_synthetic=synthetic_case)
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = json.loads(client.get(STATE).content)

    assert ('id="synthetic-model-warning"' in page) is warned
    assert state["syntheticModelsOnRealStudy"] is warned


def test_preset_values_agree_everywhere(client: Client, reader: Any, db: None) -> None:
    # The viewer's presets, the toolbar buttons and the user guide's table give the same values.
    root = Path(__file__).resolve().parents[2]
    script = (root / "static/js/viewer/presets.js").read_text(encoding="utf-8")
    guide = (root / "docs/user-guide.md").read_text(encoding="utf-8")
    Case.objects.create(code=CASE_CODE)
    client.force_login(reader)

    page = client.get(PAGE).content.decode()

    presets = {
        label: (int(level), int(width))
        for level, width, label in re.findall(r'level: (\d+), width: (\d+), label: "(\w+)"', script)
    }
    assert presets == {
        "Brain": (40, 80),
        "Stroke": (35, 35),
        "Subdural": (75, 215),
        "Bone": (600, 2800),
    }
    for label, (level, width) in presets.items():
        assert f">{label} L{level}/W{width}</button>" in page
        assert f"| {label} | L{level}/W{width} |" in guide


def test_split_lesion_parts_name_each_other(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    # The fixture's lesion 1 (75 HU) and a denser lesion 2 are the two parts of one
    # hyperdensity; lesion 3 is on its own.
    Lesion.objects.filter(job=reviewed_case.job, label_index=1).update(paired_with_index=2)
    for label, mean_hu, partner in ((2, 120.0, 1), (3, 60.0, None)):
        Lesion.objects.create(
            job=reviewed_case.job,
            run_number=1,
            label_index=label,
            volume_ml=0.2,
            mean_hu=mean_hu,
            max_hu=mean_hu,
            bbox_zyx_voxels=[2, 28, 24, 5, 30, 28],
            paired_with_index=partner,
        )
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    lesions = json.loads(client.get(STATE).content)["lesions"]

    notes = {item["labelIndex"]: item.get("pairNote") for item in lesions}
    assert notes == {
        1: "less dense part of one hyperdensity with #2",
        2: "denser part of one hyperdensity with #1",
        3: None,
    }
    assert "(less dense part of one hyperdensity with #2)" in page
    assert "(denser part of one hyperdensity with #1)" in page
    assert all("pairedWith" not in item for item in lesions)
