"""The load_demo_cohort command: synthetic cases imported through the upload services."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.synthetic import load_cohort
from tests.webapp.test_ingest_support import ingest_settings, test_model_dir  # noqa: F401
from webapp.core import roles
from webapp.core.models import AuditEvent, Case, GroundTruth, Instance, Study
from webapp.ingest.demo import DEMO_LOADER_USERNAME, GROUND_TRUTH_NOTE, ensure_demo_cohort
from webapp.jobs.models import InferenceJob

# Ingest queues inference with transaction.on_commit, so the tests need real commits.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("ingest_settings"),
]

N_CASES = 3


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-cohort")


def run_loader(cohort_dir: Path, *extra: str) -> str:
    output = StringIO()
    call_command(
        "load_demo_cohort",
        "--cases",
        str(N_CASES),
        "--cohort-dir",
        str(cohort_dir),
        *extra,
        stdout=output,
    )
    return output.getvalue()


def manifest_cases(cohort_dir: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((cohort_dir / "cohort.json").read_text(encoding="utf-8"))
    return {item["code"]: item for item in data["cases"]}


def test_first_run_loads_every_case(cohort_dir: Path) -> None:
    output = run_loader(cohort_dir)
    expected = manifest_cases(cohort_dir)

    assert len(expected) == N_CASES
    assert sorted(label["label"] for label in expected.values()) == ["CE", "HT", "HT+CE"]
    cases = {case.code: case for case in Case.objects.all()}
    assert sorted(cases) == sorted(expected)
    for code, item in expected.items():
        assert cases[code].is_synthetic is True
        assert cases[code].split == item["split"]
        assert cases[code].created_by is not None
        assert cases[code].created_by.username == DEMO_LOADER_USERNAME
    assert output.count("created; ingested baseline, follow_up") == N_CASES
    assert f"{N_CASES} synthetic cases, {N_CASES} created" in output

    assert Study.objects.count() == 2 * N_CASES
    for code, item in expected.items():
        baseline = Study.objects.get(case__code=code, role=Study.Role.BASELINE)
        follow_up = Study.objects.get(case__code=code, role=Study.Role.FOLLOW_UP)
        assert float(baseline.hours_after_mt) == pytest.approx(
            item["baseline_hours_after_thrombectomy"], abs=0.005
        )
        assert float(follow_up.hours_after_mt) == pytest.approx(
            item["follow_up_hours_after_thrombectomy"], abs=0.005
        )
        assert baseline.series.filter(is_chosen=True).count() == 1
        assert follow_up.series.filter(is_chosen=True).count() == 1
    stored_files = sum(1 for path in cohort_dir.rglob("*.dcm"))
    assert stored_files > 0
    assert Instance.objects.count() == stored_files

    assert AuditEvent.objects.filter(action="upload.received").count() == 2 * N_CASES
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    with default_storage.open(instance.file.name) as handle:
        stored = pydicom.dcmread(handle, stop_before_pixels=True)
    assert stored.PatientIdentityRemoved == "YES"
    assert stored.DeidentificationMethod != ""

    assert GroundTruth.objects.count() == N_CASES
    for code, item in expected.items():
        truth = GroundTruth.objects.get(case__code=code)
        assert truth.label == item["label"]
        assert truth.version == 1
        assert truth.source == GroundTruth.Source.CSV_IMPORT
        assert truth.notes == GROUND_TRUTH_NOTE
        assert truth.entered_by.username == DEMO_LOADER_USERNAME
        assert truth.follow_up_study is not None
        assert truth.follow_up_study.role == Study.Role.FOLLOW_UP
        assert truth.follow_up_study.case.code == code

    jobs = InferenceJob.objects.all()
    assert jobs.count() == 2 * N_CASES
    assert set(jobs.values_list("status", flat=True)) == {InferenceJob.Status.QUEUED}
    assert set(jobs.values_list("study_id", flat=True)) == set(
        Study.objects.values_list("pk", flat=True)
    )
    assert f"{2 * N_CASES} inference jobs queued" in output

    user = User.objects.get(username=DEMO_LOADER_USERNAME)
    assert roles.has_any_role(user, roles.COORDINATOR)
    assert user.has_usable_password() is False
    # Pages name the account for what it is wherever it entered ground truth.
    assert user.get_full_name() == "demo loader (synthetic cohort import)"


def test_second_run_adds_nothing(cohort_dir: Path) -> None:
    run_loader(cohort_dir)
    manifest_before = (cohort_dir / "cohort.json").read_text(encoding="utf-8")
    counts_before = (
        Case.objects.count(),
        Study.objects.count(),
        Instance.objects.count(),
        GroundTruth.objects.count(),
        InferenceJob.objects.count(),
    )

    output = run_loader(cohort_dir)

    counts_after = (
        Case.objects.count(),
        Study.objects.count(),
        Instance.objects.count(),
        GroundTruth.objects.count(),
        InferenceJob.objects.count(),
    )
    assert counts_after == counts_before
    assert counts_before == (N_CASES, 2 * N_CASES, counts_before[2], N_CASES, 2 * N_CASES)
    assert (cohort_dir / "cohort.json").read_text(encoding="utf-8") == manifest_before
    assert "(reused)" in output
    assert output.count("already loaded, skipped") == N_CASES
    assert f"0 created, {N_CASES} already loaded" in output


def test_partly_loaded_case_gets_missing_parts(cohort_dir: Path) -> None:
    run_loader(cohort_dir)
    code = sorted(manifest_cases(cohort_dir))[0]
    case = Case.objects.get(code=code)
    follow_up = Study.objects.get(case=case, role=Study.Role.FOLLOW_UP)
    # Simulates a run that stopped after the baseline upload. Ground truth is append-only, so
    # only a raw delete removes it.
    GroundTruth.objects.filter(case=case)._raw_delete(GroundTruth.objects.db)
    InferenceJob.objects.filter(study=follow_up).delete()
    follow_up.delete()

    output = run_loader(cohort_dir)

    assert f"{code} " in output
    assert "completed; ingested follow_up" in output
    assert Study.objects.filter(case=case).count() == 2
    assert GroundTruth.objects.filter(case=case).count() == 1
    assert output.count("already loaded, skipped") == N_CASES - 1


def test_real_case_with_same_code_is_rejected(cohort_dir: Path) -> None:
    code = "SYN-0001"
    Case.objects.create(code=code, is_synthetic=False)

    with pytest.raises(CommandError, match=f"Case {code} exists and is not synthetic"):
        run_loader(cohort_dir)

    assert Study.objects.count() == 0
    assert GroundTruth.objects.count() == 0


def test_zero_cases_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--cases 0 is invalid"):
        call_command("load_demo_cohort", "--cases", "0", "--cohort-dir", str(tmp_path))


def test_cohort_with_other_seed_is_regenerated(tmp_path: Path) -> None:
    first, first_generated = ensure_demo_cohort(tmp_path, 3, seed=11)
    same, same_generated = ensure_demo_cohort(tmp_path, 3, seed=11)
    other, other_generated = ensure_demo_cohort(tmp_path, 3, seed=12)

    assert first_generated is True
    assert same_generated is False
    assert same.cohort_id == first.cohort_id
    assert other_generated is True
    assert other.cohort_id != first.cohort_id
    assert load_cohort(tmp_path).cohort_id == other.cohort_id
