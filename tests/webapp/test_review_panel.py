"""Review panel content: which predictions count, the agreement question, defaults, wording."""

# Fixtures imported from test_review_support are requested by name, which ruff reads as a
# redefinition of the import.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from tests.webapp.test_review_support import (  # noqa: F401 - fixtures
    CASE_CODE,
    SYNTHETIC_INTENDED_USE,
    ReviewedCase,
    reviewed_case,
    study_files,
)
from webapp.core.models import Adjudication, Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, ModelVersion, Prediction

PAGE = f"/cases/{CASE_CODE}/review/"
STATE = f"/cases/{CASE_CODE}/review/state.json"
ADJUDICATE = f"/cases/{CASE_CODE}/review/adjudication/"
CONSENSUS = f"/cases/{CASE_CODE}/review/consensus/"
READ_FIELDS = {"label": "HT", "confidence": "4", "notes": "", "expected_version": "0"}


def _model(kind: str, version: str = "1") -> ModelVersion:
    model, _ = ModelVersion.objects.get_or_create(
        kind=kind,
        version=version,
        defaults={"sha256": kind[0] * 64, "intended_use": SYNTHETIC_INTENDED_USE},
    )
    return model


@pytest.fixture
def two_studies_predicted(reviewed_case: ReviewedCase) -> ReviewedCase:
    """Add a hybrid prediction (CE) to the baseline run, and a follow-up job with two outputs."""
    Prediction.objects.create(
        job=reviewed_case.job,
        run_number=1,
        model_version=_model(ModelVersion.Kind.HYBRID),
        probabilities={"HT": 0.2, "CE": 0.7, "HT+CE": 0.1},
        predicted_label="CE",
        is_uncertain=False,
        runtime_s=1.5,
    )
    follow_up_job = InferenceJob.objects.create(
        study=reviewed_case.follow_up,
        pipeline_version="test",
        status=InferenceJob.Status.SUCCEEDED,
        run_count=1,
    )
    for kind, label in ((ModelVersion.Kind.LR, "HT+CE"), (ModelVersion.Kind.HYBRID, "HT+CE")):
        Prediction.objects.create(
            job=follow_up_job,
            run_number=1,
            model_version=_model(kind, "1.0.0" if kind == ModelVersion.Kind.LR else "1"),
            probabilities={"HT": 0.05, "CE": 0.05, "HT+CE": 0.9},
            predicted_label=label,
            is_uncertain=False,
            runtime_s=0.5,
        )
    return reviewed_case


def _section(page: str, start_marker: str, end_marker: str) -> str:
    start = page.index(start_marker)
    return page[start : page.index(end_marker, start)]


def test_only_baseline_predictions_are_the_predictions(
    client: Client, coordinator: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = json.loads(client.get(STATE).content)

    assert "Model predictions for the post-procedure CT" in page
    main_list = _section(page, 'id="predictions-heading"', "</section>")
    assert main_list.count('class="prediction"') == 2
    assert 'data-study-role="follow_up"' not in main_list
    follow_up = _section(page, 'id="follow-up-predictions"', "</details>")
    assert "Follow-up CT: model outputs, not used for evaluation" in follow_up
    assert follow_up.count('data-study-role="follow_up"') == 2
    assert [p["studyRole"] for p in state["predictions"]] == ["baseline", "baseline"]
    assert [p["label"] for p in state["followUpPredictions"]] == ["HT+CE", "HT+CE"]
    # Every prediction keeps its synthetic-training note, the follow-up ones included.
    assert page.count("trained on synthetic data — research use only.") == 4


def test_compared_model_is_newest_baseline_prediction(
    client: Client, coordinator: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(coordinator)

    state = json.loads(client.get(STATE).content)
    page = client.get(PAGE).content.decode()

    assert state["comparedPrediction"]["model"] == "Hybrid 1"
    assert state["comparedPrediction"]["studyRole"] == "baseline"
    assert [p["isCompared"] for p in state["predictions"]] == [True, False]
    assert "agreement with the model refers to <strong>Hybrid 1</strong>" in page


def test_promoted_model_is_compared(
    client: Client, coordinator: Any, two_studies_predicted: ReviewedCase
) -> None:
    ModelVersion.objects.filter(kind=ModelVersion.Kind.LR).update(is_promoted=True)
    client.force_login(coordinator)

    state = json.loads(client.get(STATE).content)

    assert state["comparedPrediction"]["model"] == "Logistic regression 1.0.0"
    assert state["comparedPrediction"]["label"] == "HT"


def test_blinded_form_does_not_ask_agreement(
    client: Client, reader: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(reader)

    page = client.get(PAGE).content.decode()

    assert 'name="agrees_with_model"' not in page
    assert "Hybrid 1" not in page
    assert "After you submit, the model's prediction is shown" in page


def test_revealed_form_names_compared_model(
    client: Client, reader: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(reader)
    client.post(ADJUDICATE, READ_FIELDS)

    page = client.get(PAGE).content.decode()

    form = _section(page, 'id="adjudication-form"', "</form>")
    assert "Does your label agree with Hybrid 1 on the post-procedure CT?" in form
    assert "Hybrid 1 predicted CE." in form
    model_id = ModelVersion.objects.get(kind=ModelVersion.Kind.HYBRID).pk
    assert f'name="compared_model_version" value="{model_id}"' in form


def _post_second_version(client: Client, agreement: str, compared_kind: str) -> str:
    """Post version 2 with an agreement value about ``compared_kind``; return the next page."""
    compared = ModelVersion.objects.get(kind=compared_kind)
    fields = {
        **READ_FIELDS,
        "expected_version": "1",
        "agrees_with_model": agreement,
        "compared_model_version": str(compared.pk),
    }
    return client.post(ADJUDICATE, fields, follow=True).content.decode()


def test_agreement_is_recorded_after_reveal(
    client: Client, reader: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(reader)
    client.post(ADJUDICATE, {**READ_FIELDS, "agrees_with_model": "yes"})

    page = _post_second_version(client, "no", ModelVersion.Kind.HYBRID)

    assert "Adjudication saved." in page
    versions = list(
        Adjudication.objects.filter(reader=reader)
        .order_by("version")
        .values_list("version", "label", "agrees_with_model", "model_shown")
    )
    assert versions == [(1, "HT", None, False), (2, "HT", False, True)]


def test_agreement_with_changed_model_is_rejected(
    client: Client, reader: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(reader)
    client.post(ADJUDICATE, READ_FIELDS)

    page = _post_second_version(client, "yes", ModelVersion.Kind.LR)

    assert "The compared model changed after this page was loaded" in page
    assert Adjudication.objects.filter(reader=reader).count() == 1


@pytest.mark.parametrize("url", [ADJUDICATE, CONSENSUS])
def test_missing_confidence_is_rejected(
    client: Client, adjudicator: Any, reviewed_case: ReviewedCase, url: str
) -> None:
    client.force_login(adjudicator)
    if url == CONSENSUS:
        client.post(ADJUDICATE, READ_FIELDS)
    fields = {key: value for key, value in READ_FIELDS.items() if key != "confidence"}

    page = client.post(url, fields, follow=True).content.decode()

    field = "Consensus confidence" if url == CONSENSUS else "Your confidence"
    assert f"{field}: Choose a confidence from 1 (guess) to 5 (certain)." in page
    assert Adjudication.objects.filter(is_consensus=url == CONSENSUS).count() == 0


def test_confidence_inputs_start_empty_and_required(
    client: Client, adjudicator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(adjudicator)
    blinded_page = client.get(PAGE).content.decode()
    client.post(ADJUDICATE, READ_FIELDS)

    page = client.get(PAGE).content.decode()

    first_read = re.search(r'<input[^>]*id="adjudication_confidence"[^>]*>', blinded_page)
    consensus = re.search(r'<input[^>]*id="consensus_confidence"[^>]*>', page)
    assert first_read is not None and consensus is not None
    for tag in (first_read.group(0), consensus.group(0)):
        assert "required" in tag
        assert "value=" not in tag
    # A later version starts from the reader's previous confidence.
    own = re.search(r'<input[^>]*id="adjudication_confidence"[^>]*>', page)
    assert own is not None
    assert 'value="4"' in own.group(0)


def test_saved_consensus_prefills_form(
    client: Client, adjudicator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(adjudicator)
    client.post(ADJUDICATE, READ_FIELDS)
    before = _section(client.get(PAGE).content.decode(), 'id="consensus-heading"', "</section>")
    assert "No consensus recorded yet." in before
    assert '<button type="submit">Record consensus</button>' in before
    assert "checked" not in before

    fields = {
        "label": "HT+CE",
        "confidence": "3",
        "notes": "agreed at the board",
        "expected_version": "0",
    }
    page = client.post(CONSENSUS, fields, follow=True).content.decode()

    assert "Consensus label saved." in page
    section = _section(page, 'id="consensus-heading"', "</section>")
    name = adjudicator.get_full_name() or adjudicator.get_username()
    current = re.search(r'<p id="consensus-current">(.*?)</p>', section)
    assert current is not None
    text = re.sub(r"<[^>]+>", "", current.group(1))
    assert text.startswith(f"Recorded consensus: HT+CE, confidence 3, by {name} (version 1, ")
    assert '<button type="submit">Change consensus</button>' in section
    assert "Record consensus" not in section
    # The form starts from the stored consensus, and a save must name version 1 as its base.
    checked = re.findall(r"<input[^>]*checked[^>]*>", section)
    assert len(checked) == 1
    assert 'value="HT+CE"' in checked[0]
    confidence = re.search(r'<input[^>]*id="consensus_confidence"[^>]*>', section)
    assert confidence is not None
    assert 'value="3"' in confidence.group(0)
    assert "agreed at the board</textarea>" in section
    assert 'name="expected_version" value="1"' in section


def test_forms_have_distinct_field_labels(
    client: Client, adjudicator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(adjudicator)
    client.post(ADJUDICATE, READ_FIELDS)

    page = client.get(PAGE).content.decode()

    own = _section(page, 'id="adj-heading"', "</form>")
    consensus = _section(page, 'id="consensus-heading"', "</form>")
    for field in ("label", "confidence", "notes"):
        assert f"Your {field}" in own
        assert f"Consensus {field}" in consensus
        assert f"Consensus {field}" not in own
        assert f"Your {field}" not in consensus
    assert re.search(r'<label for="consensus_confidence">Consensus confidence:</label>', consensus)
    assert re.search(r'<label for="adjudication_confidence">Your confidence:</label>', own)
    assert re.search(r"<legend>Consensus label:</legend>", consensus)


def test_ground_truth_form_is_prefilled(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    GroundTruth.objects.create(
        case=reviewed_case.case,
        version=1,
        label="HT+CE",
        heidelberg_subtype="PH1",
        notes="clot near the basal ganglia",
        entered_by=coordinator,
    )
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()

    form = _section(page, 'id="gt-heading"', "</form>")
    assert "Edit ground truth" in form
    assert re.search(r'value="HT\+CE"[^>]*checked|checked[^>]*value="HT\+CE"', form)
    assert len(re.findall(r"checked", form)) == 1
    assert re.search(r'<option value="PH1" selected>', form)
    assert "clot near the basal ganglia</textarea>" in form
    assert 'name="expected_version" value="1"' in form


def test_runtimes_shown_with_predictions(
    client: Client, reader: Any, researcher: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(reader)
    blinded_page = client.get(PAGE).content.decode()
    blinded_state = json.loads(client.get(STATE).content)
    client.post(ADJUDICATE, READ_FIELDS)
    reader_page = client.get(PAGE).content.decode()
    reader_state = json.loads(client.get(STATE).content)
    client.force_login(researcher)

    researcher_page = client.get(PAGE).content.decode()

    # Blinded, the reader gets no prediction, so no runtime either.
    assert 'class="runtime"' not in blinded_page
    assert "predictions" not in blinded_state
    assert "runtimeS" not in json.dumps(blinded_state)
    # After submitting, the reader sees each prediction's runtime, as the researcher does.
    for page in (reader_page, researcher_page):
        main_list = _section(page, 'id="predictions-heading"', "</section>")
        assert "· 0.25 s, analysis run 1" in main_list
        assert "· 1.50 s, analysis run 1" in main_list
        follow_up = _section(page, 'id="follow-up-predictions"', "</details>")
        assert follow_up.count("· 0.50 s, analysis run 1") == 2
    assert sorted(p["runtimeS"] for p in reader_state["predictions"]) == [0.25, 1.5]
    assert [p["runtimeS"] for p in reader_state["followUpPredictions"]] == [0.5, 0.5]


def test_runtimes_shown_on_unblinded_case(
    client: Client, reader: Any, two_studies_predicted: ReviewedCase
) -> None:
    Case.objects.filter(pk=two_studies_predicted.case.pk).update(readers_blinded=False)
    client.force_login(reader)

    page = client.get(PAGE).content.decode()

    assert Adjudication.objects.count() == 0
    assert "· 0.25 s, analysis run 1" in page
    assert "· 1.50 s, analysis run 1" in page


def test_uncertain_flag_is_shown(
    client: Client, coordinator: Any, two_studies_predicted: ReviewedCase
) -> None:
    # Only the hybrid model is unsure; the logistic regression stays without the tag.
    Prediction.objects.filter(
        job=two_studies_predicted.job, model_version__kind=ModelVersion.Kind.HYBRID
    ).update(is_uncertain=True, probabilities={"HT": 0.45, "CE": 0.4, "HT+CE": 0.15})
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = json.loads(client.get(STATE).content)

    main_list = _section(page, 'id="predictions-heading"', "</section>")
    # From each prediction's heading to its first probability bar: the line with the tag.
    hybrid = _section(main_list, 'data-model="hybrid-1"', 'class="bar-row"')
    logistic = _section(main_list, 'data-model="lr-1.0.0"', 'class="bar-row"')
    assert '<span class="tag warn">uncertain</span>' in hybrid
    assert "uncertain" not in logistic
    assert main_list.count(">uncertain<") == 1
    # The follow-up outputs are sure, so no tag appears there.
    follow_up = _section(page, 'id="follow-up-predictions"', "</details>")
    assert ">uncertain<" not in follow_up
    flags = {p["modelKind"]: p["isUncertain"] for p in state["predictions"]}
    assert flags == {"hybrid": True, "lr": False}


def test_panel_uses_human_wording(
    client: Client, coordinator: Any, two_studies_predicted: ReviewedCase
) -> None:
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    # The text a user reads: without scripts (the viewer's JSON) and without tags.
    visible = re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", " ", page, flags=re.S))

    assert "Post-procedure CT: analysed" in visible
    assert "Follow-up CT: analysed" in visible
    for raw in ("follow_up", "baseline:", "Succeeded", "secondary_capture", ", run 1)"):
        assert raw not in visible, raw
    assert "Post-procedure CT: 3 h after thrombectomy" in visible
    assert "Follow-up CT: 30 h after thrombectomy" in visible


def test_study_heading_shows_role_timing_and_series(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(coordinator)
    baseline = Study.objects.get(pk=reviewed_case.baseline.pk)
    description = baseline.series.get(is_chosen=True).description

    page = client.get(PAGE).content.decode()

    heading = _section(page, 'figure class="viewport-panel" data-role="baseline"', "</figcaption>")
    assert description
    assert f"Post-procedure CT · 3 h after thrombectomy · {description}" in heading
    assert (
        f'<small class="study-uid" title="Study Instance UID {baseline.study_instance_uid}">'
        in (heading)
    )


def test_lesion_slices_count_from_one(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    # The fixture's lesion lies on slice indexes 2 to 8, which the viewer shows as slices 3 to 9.
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = json.loads(client.get(STATE).content)

    assert '<td class="lesion-slices">3–9</td>' in page
    assert state["lesions"][0]["sliceNumbers"] == [3, 9]
    assert "Lesions (Post-procedure CT)</h2>" in page


def test_slider_starts_at_initial_slice(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()
    state = json.loads(client.get(STATE).content)

    assert state["studies"][0]["initialSlice"] == 7
    assert (
        '<input type="range" min="1" max="12" value="7" aria-valuetext="Slice 7 of 12" '
        'data-role="baseline">' in page
    )
    assert 'id="sync-scroll"' in page


def test_sync_toggle_hidden_with_one_series(
    client: Client, coordinator: Any, reviewed_case: ReviewedCase
) -> None:
    # Without a chosen follow-up series only the baseline is shown: nothing to synchronize.
    reviewed_case.follow_up.series.update(is_chosen=False)
    client.force_login(coordinator)

    page = client.get(PAGE).content.decode()

    assert "No series of this study was chosen for review." in page
    assert 'id="sync-scroll"' not in page
    assert "Synchronize scrolling" not in page
