"""Core services: versioned, append-only changes with their audit events, and role checks."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from webapp.core.models import Adjudication, AppendOnlyError, AuditEvent, Case, GroundTruth, Study
from webapp.core.services import (
    ClientContext,
    RoleRequiredError,
    ServiceError,
    StaleVersionError,
    create_case,
    record_adjudication,
    record_ground_truth,
)
from webapp.jobs.models import ImmutableModelVersionError, ModelVersion


@pytest.fixture
def case(coordinator: Any) -> Case:
    return create_case(
        ClientContext(coordinator, "192.0.2.10"), code="CASE-001", split=Case.Split.TEST
    )


def test_create_case_writes_audit_event(case: Case, coordinator: Any) -> None:
    event = AuditEvent.objects.get(action="case.created")
    assert event.actor == coordinator
    assert event.actor_username == "coordinator_cai"
    assert event.object_type == "core.case"
    assert event.object_id == str(case.pk)
    assert event.client_address == "192.0.2.10"
    assert event.details == {"code": "CASE-001", "split": "test", "is_synthetic": False}


def test_create_case_duplicate_code_is_rejected(case: Case, coordinator: Any) -> None:
    with pytest.raises(ServiceError) as raised:
        create_case(ClientContext(coordinator), code="CASE-001")
    assert raised.value.code == "duplicate_case"
    assert "already exists" in raised.value.message
    assert Case.objects.count() == 1
    assert AuditEvent.objects.filter(action="case.created").count() == 1


def test_create_case_rejects_code_with_spaces(coordinator: Any) -> None:
    with pytest.raises(ServiceError, match="never a patient name"):
        create_case(ClientContext(coordinator), code="Doe John")
    assert Case.objects.count() == 0


def test_create_case_needs_coordinator_role(reader: Any) -> None:
    with pytest.raises(RoleRequiredError) as raised:
        create_case(ClientContext(reader), code="CASE-002")
    assert raised.value.code == "role_required"
    assert Case.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_ground_truth_edits_append_versions(case: Case, coordinator: Any) -> None:
    context = ClientContext(coordinator, "192.0.2.10")
    first = record_ground_truth(context, case, label="CE", expected_version=0)
    second = record_ground_truth(
        context, case, label="HT", heidelberg_subtype="PH1", expected_version=1
    )
    assert first.version == 1
    assert second.version == 2
    assert list(case.ground_truths.values_list("version", "label")) == [(2, "HT"), (1, "CE")]
    events = AuditEvent.objects.filter(action="ground_truth.recorded").order_by("id")
    assert [event.details["version"] for event in events] == [1, 2]
    assert events[1].details["heidelberg_subtype"] == "PH1"


def test_ground_truth_stale_edit_is_rejected(case: Case, coordinator: Any, admin_user: Any) -> None:
    record_ground_truth(ClientContext(coordinator), case, label="CE", expected_version=0)
    with pytest.raises(StaleVersionError) as raised:
        record_ground_truth(ClientContext(admin_user), case, label="HT", expected_version=0)
    assert "now version 1, you edited version 0" in raised.value.message
    assert case.ground_truths.count() == 1
    assert AuditEvent.objects.filter(action="ground_truth.recorded").count() == 1


def test_reader_cannot_record_ground_truth(case: Case, reader: Any) -> None:
    with pytest.raises(RoleRequiredError) as raised:
        record_ground_truth(ClientContext(reader), case, label="HT", expected_version=0)
    assert raised.value.code == "role_required"
    assert case.ground_truths.count() == 0


def test_ground_truth_rejects_unknown_label_and_subtype(case: Case, coordinator: Any) -> None:
    with pytest.raises(ServiceError) as bad_label:
        record_ground_truth(ClientContext(coordinator), case, label="ICH")
    assert bad_label.value.code == "invalid_label"
    with pytest.raises(ServiceError) as bad_subtype:
        record_ground_truth(ClientContext(coordinator), case, label="HT", heidelberg_subtype="PH3")
    assert bad_subtype.value.code == "invalid_subtype"
    assert case.ground_truths.count() == 0


def test_ground_truth_rejects_baseline_study(case: Case, coordinator: Any) -> None:
    baseline = Study.objects.create(
        case=case, role=Study.Role.BASELINE, study_instance_uid="1.2.3.4"
    )
    with pytest.raises(ServiceError) as raised:
        record_ground_truth(ClientContext(coordinator), case, label="HT", follow_up_study=baseline)
    assert raised.value.code == "invalid_study"


def test_ground_truth_row_cannot_be_changed(case: Case, coordinator: Any) -> None:
    ground_truth = record_ground_truth(ClientContext(coordinator), case, label="CE")
    ground_truth.label = "HT"
    with pytest.raises(AppendOnlyError, match="append-only"):
        ground_truth.save()
    assert GroundTruth.objects.get(pk=ground_truth.pk).label == "CE"


def test_adjudication_versions_are_per_reader(case: Case, reader: Any, second_reader: Any) -> None:
    first = record_adjudication(ClientContext(reader), case, label="HT", confidence=4)
    other = record_adjudication(ClientContext(second_reader), case, label="CE", confidence=2)
    revised = record_adjudication(
        ClientContext(reader),
        case,
        label="HT+CE",
        confidence=3,
        expected_version=1,
        model_shown=True,
    )
    assert (first.version, other.version, revised.version) == (1, 1, 2)
    assert Adjudication.objects.filter(case=case, reader=reader).count() == 2
    assert AuditEvent.objects.filter(action="adjudication.recorded").count() == 3
    newest_event = AuditEvent.objects.filter(action="adjudication.recorded").first()
    assert newest_event is not None
    assert newest_event.details["model_shown"] is True


def test_adjudication_stale_edit_is_rejected(case: Case, reader: Any) -> None:
    record_adjudication(ClientContext(reader), case, label="HT", confidence=4)
    record_adjudication(ClientContext(reader), case, label="CE", confidence=4, expected_version=1)
    with pytest.raises(StaleVersionError) as raised:
        record_adjudication(
            ClientContext(reader), case, label="HT+CE", confidence=5, expected_version=1
        )
    assert raised.value.code == "stale_version"
    assert "Reload the page" in raised.value.message
    latest = Adjudication.objects.filter(case=case, reader=reader).first()
    assert latest is not None
    assert (latest.version, latest.label) == (2, "CE")


def test_adjudication_needs_reader_role(case: Case, coordinator: Any) -> None:
    with pytest.raises(RoleRequiredError):
        record_adjudication(ClientContext(coordinator), case, label="HT", confidence=3)
    assert Adjudication.objects.count() == 0


@pytest.mark.parametrize("confidence", [0, 6])
def test_adjudication_confidence_outside_range_is_rejected(
    case: Case, reader: Any, confidence: int
) -> None:
    with pytest.raises(ServiceError) as raised:
        record_adjudication(ClientContext(reader), case, label="HT", confidence=confidence)
    assert raised.value.code == "invalid_confidence"


def test_consensus_needs_adjudicator(case: Case, reader: Any, adjudicator: Any) -> None:
    with pytest.raises(RoleRequiredError):
        record_adjudication(
            ClientContext(reader), case, label="HT", confidence=3, is_consensus=True
        )
    consensus = record_adjudication(
        ClientContext(adjudicator), case, label="HT", confidence=3, is_consensus=True
    )
    assert consensus.is_consensus is True
    assert consensus.version == 1
    # The adjudicator's own reading is a separate stream from the consensus.
    own = record_adjudication(ClientContext(adjudicator), case, label="CE", confidence=2)
    assert own.version == 1
    assert AuditEvent.objects.filter(action="adjudication.consensus_recorded").count() == 1


def test_audit_event_cannot_be_changed(case: Case) -> None:
    event = AuditEvent.objects.get(action="case.created")
    event.action = "case.deleted"
    with pytest.raises(AppendOnlyError):
        event.save()


@pytest.mark.parametrize(
    ("role", "hours", "expected"),
    [
        (Study.Role.BASELINE, Decimal("0.5"), False),
        (Study.Role.BASELINE, Decimal("6"), False),
        (Study.Role.BASELINE, Decimal("6.01"), True),
        (Study.Role.FOLLOW_UP, Decimal("23.99"), True),
        (Study.Role.FOLLOW_UP, Decimal("24"), False),
        (Study.Role.FOLLOW_UP, Decimal("72"), False),
        (Study.Role.FOLLOW_UP, Decimal("72.5"), True),
        (Study.Role.FOLLOW_UP, None, None),
    ],
)
def test_study_timing_window_flag(
    case: Case, role: str, hours: Decimal | None, expected: bool | None
) -> None:
    study = Study.objects.create(
        case=case, role=role, hours_after_mt=hours, study_instance_uid="1.2.840.99.1"
    )
    assert Study.objects.get(pk=study.pk).out_of_window is expected


def test_study_flag_follows_update_fields(case: Case) -> None:
    study = Study.objects.create(
        case=case,
        role=Study.Role.FOLLOW_UP,
        hours_after_mt=Decimal("30"),
        study_instance_uid="1.2.840.99.2",
    )
    study.hours_after_mt = Decimal("100")
    study.save(update_fields=["hours_after_mt"])
    assert Study.objects.get(pk=study.pk).out_of_window is True


def test_model_version_is_immutable_except_promotion(db: None) -> None:
    model_version = ModelVersion.objects.create(
        kind="lr", version="1.0.0", sha256="a" * 64, params={"C": 1.0}
    )
    model_version.is_promoted = True
    model_version.save()
    assert ModelVersion.objects.get(pk=model_version.pk).is_promoted is True

    model_version.params = {"C": 10.0}
    with pytest.raises(ImmutableModelVersionError, match=r"cannot change \(params\)"):
        model_version.save()
    assert ModelVersion.objects.get(pk=model_version.pk).params == {"C": 1.0}


def test_case_not_created_when_audit_fails(
    coordinator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_audit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr("webapp.core.services.record_audit_event", broken_audit)
    with pytest.raises(RuntimeError, match="audit table unavailable"):
        create_case(ClientContext(coordinator), code="CASE-NOAUDIT")
    assert not Case.objects.filter(code="CASE-NOAUDIT").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_edits_store_one_version(coordinator: Any, admin_user: Any) -> None:
    from django.db import connection

    case = create_case(ClientContext(coordinator), code="CASE-RACE")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def save(user: Any, label: str) -> None:
        try:
            barrier.wait(timeout=10)
            record_ground_truth(ClientContext(user), case, label=label, expected_version=0)
            outcomes.append("stored")
        except StaleVersionError:
            outcomes.append("stale")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=save, args=(coordinator, "HT")),
        threading.Thread(target=save, args=(admin_user, "CE")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["stale", "stored"]
    assert list(case.ground_truths.values_list("version", flat=True)) == [1]
