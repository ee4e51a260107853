"""Ground-truth CSV import: row-by-row validation, preview, confirmation and idempotence."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from webapp.core.models import AuditEvent, Case, GroundTruth
from webapp.core.services import ClientContext, RoleRequiredError
from webapp.research.imports import (
    ImportFileError,
    apply_ground_truth_import,
    preview_ground_truth_csv,
)

GOOD_CSV = b"case_code,label,heidelberg_subtype,notes\nG-01,HT,PH1,persists\nG-02,ce,,cleared\n"


@pytest.fixture
def cases(db: None, coordinator: Any) -> dict[str, Case]:
    cases = {code: Case.objects.create(code=code) for code in ("G-01", "G-02", "G-03")}
    GroundTruth.objects.create(case=cases["G-03"], version=1, label="CE", entered_by=coordinator)
    return cases


def _preview(user: Any, content: bytes) -> Any:
    return preview_ground_truth_csv(ClientContext(user), content)


def test_valid_rows_are_accepted_without_writing(coordinator: Any, cases: dict[str, Case]) -> None:
    preview = _preview(coordinator, GOOD_CSV)

    assert preview.rejected == []
    assert [(row.line, row.case_code, row.label) for row in preview.accepted] == [
        (2, "G-01", "HT"),
        (3, "G-02", "CE"),
    ]
    assert preview.accepted[0].heidelberg_subtype == "PH1"
    assert preview.accepted[0].change == "new"
    assert GroundTruth.objects.count() == 1


def test_each_invalid_row_is_rejected_with_reason(coordinator: Any, cases: dict[str, Case]) -> None:
    content = (
        b"case_code,label,heidelberg_subtype\n"
        b"G-01,HT,\n"
        b"NOPE-9,HT,\n"
        b"G-02,blood,\n"
        b"G-03,HT,PH9\n"
        b"G-01,CE,\n"
        b",HT,\n"
        b"G-02,CE,HI1\n"
    )
    preview = _preview(coordinator, content)

    reasons = {row.line: row.reason for row in preview.rejected}
    assert reasons[3] == "Unknown case code 'NOPE-9'; create the case or correct the code."
    assert reasons[4] == "Invalid label 'BLOOD'; use one of HT, CE, HT+CE."
    assert reasons[5].startswith("Invalid Heidelberg subtype 'PH9'; use one of HI1, HI2")
    assert reasons[6] == "Duplicate row: case 'G-01' already appears on line 2; keep one row."
    assert reasons[7] == "case_code is empty; fill in the pseudonymous case code."
    assert reasons[8] == "Subtype 'HI1' given for label CE; a subtype applies only to HT or HT+CE."
    assert len(preview.rejected) == 6
    assert [row.case_code for row in preview.accepted] == ["G-01"]


def test_missing_column_rejects_the_file(coordinator: Any, cases: dict[str, Case]) -> None:
    with pytest.raises(ImportFileError) as raised:
        _preview(coordinator, b"case_code,subtype\nG-01,PH1\n")

    assert raised.value.code == "missing_column"
    assert "missing the column(s) label" in raised.value.message


def test_non_utf8_file_is_rejected(coordinator: Any, cases: dict[str, Case]) -> None:
    with pytest.raises(ImportFileError, match="is not UTF-8 text"):
        _preview(coordinator, b"case_code,label\nG-01,\xff\n")


def test_reader_cannot_import(reader: Any, cases: dict[str, Case]) -> None:
    with pytest.raises(RoleRequiredError):
        _preview(reader, GOOD_CSV)


def test_apply_writes_csv_import_versions(coordinator: Any, cases: dict[str, Case]) -> None:
    added = apply_ground_truth_import(ClientContext(coordinator), _preview(coordinator, GOOD_CSV))

    assert added == 2
    truth = GroundTruth.objects.get(case=cases["G-01"])
    assert truth.label == "HT"
    assert truth.heidelberg_subtype == "PH1"
    assert truth.source == "csv_import"
    assert truth.notes == "persists"
    assert truth.entered_by == coordinator
    event = AuditEvent.objects.get(action="ground_truth.import_applied")
    assert event.details["versions_added"] == 2
    assert event.details["accepted_rows"] == 2
    assert AuditEvent.objects.filter(action="ground_truth.recorded").count() == 2


def test_reimport_adds_no_versions(coordinator: Any, cases: dict[str, Case]) -> None:
    context = ClientContext(coordinator)
    apply_ground_truth_import(context, _preview(coordinator, GOOD_CSV))
    second = _preview(coordinator, GOOD_CSV)

    assert [row.change for row in second.accepted] == ["unchanged", "unchanged"]
    assert apply_ground_truth_import(context, second) == 0
    assert GroundTruth.objects.filter(case__code__in=["G-01", "G-02"]).count() == 2


def test_changed_label_adds_a_version(coordinator: Any, cases: dict[str, Case]) -> None:
    preview = _preview(coordinator, b"case_code,label\nG-03,HT+CE\n")

    assert preview.accepted[0].change == "changed"
    assert apply_ground_truth_import(ClientContext(coordinator), preview) == 1
    latest = cases["G-03"].ground_truths.order_by("-version").first()
    assert latest is not None
    assert latest.version == 2
    assert latest.label == "HT+CE"


def _upload(client: Client, content: bytes) -> Any:
    return client.post(
        "/research/imports/ground-truth/",
        {"file": SimpleUploadedFile("truth.csv", content, content_type="text/csv")},
    )


def test_preview_page_then_confirm(
    client: Client, coordinator: Any, cases: dict[str, Case]
) -> None:
    client.force_login(coordinator)
    response = _upload(client, GOOD_CSV + b"BAD-1,HT,,\n")

    assert response.status_code == 200
    assert b"Unknown case code &#x27;BAD-1&#x27;" in response.content
    assert GroundTruth.objects.count() == 1
    sha256 = response.context["preview"].sha256

    confirmed = client.post("/research/imports/ground-truth/confirm/", {"sha256": sha256})

    assert confirmed.status_code == 302
    assert GroundTruth.objects.count() == 3
    # The pending import is consumed: confirming twice applies nothing more.
    again = client.post("/research/imports/ground-truth/confirm/", {"sha256": sha256}, follow=True)
    assert b"upload the file again" in again.content
    assert GroundTruth.objects.count() == 3


def test_confirm_with_other_hash_is_rejected(
    client: Client, coordinator: Any, cases: dict[str, Case]
) -> None:
    client.force_login(coordinator)
    _upload(client, GOOD_CSV)

    response = client.post("/research/imports/ground-truth/confirm/", {"sha256": "0" * 64})

    assert response.status_code == 302
    assert GroundTruth.objects.count() == 1


def test_missing_column_page_shows_error(
    client: Client, coordinator: Any, cases: dict[str, Case]
) -> None:
    client.force_login(coordinator)
    response = _upload(client, b"code,label\nG-01,HT\n")

    assert response.status_code == 400
    assert b"missing the column(s) case_code" in response.content


def test_researcher_cannot_open_import_page(client: Client, researcher: Any) -> None:
    client.force_login(researcher)
    assert client.get("/research/imports/ground-truth/").status_code == 403


def test_unchanged_import_cannot_be_applied(
    client: Client, coordinator: Any, cases: dict[str, Case]
) -> None:
    client.force_login(coordinator)
    response = _upload(client, b"case_code,label\nG-03,CE\n")
    content = response.content.decode()

    assert response.status_code == 200
    assert "Apply 0 change(s)" not in content
    assert "/research/imports/ground-truth/confirm/" not in content
    assert '<button type="button" disabled>Apply 0 changes</button>' in content
    assert "every accepted row equals the latest stored ground truth" in content
    assert "research_pending_ground_truth_import" not in client.session


def test_all_rejected_import_cannot_be_applied(
    client: Client, coordinator: Any, cases: dict[str, Case]
) -> None:
    client.force_login(coordinator)
    content = _upload(client, b"case_code,label\nBAD-1,HT\n").content.decode()

    assert "no row was accepted" in content
    assert "/research/imports/ground-truth/confirm/" not in content


def test_nothing_to_apply_drops_older_preview(
    client: Client, coordinator: Any, cases: dict[str, Case]
) -> None:
    client.force_login(coordinator)
    first = _upload(client, GOOD_CSV).context["preview"].sha256
    _upload(client, b"case_code,label\nG-03,CE\n")

    response = client.post("/research/imports/ground-truth/confirm/", {"sha256": first})

    assert response.status_code == 302
    assert GroundTruth.objects.count() == 1
