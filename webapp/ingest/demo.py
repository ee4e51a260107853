"""Load the synthetic demo cohort through the same services that a user's upload goes through.

Each generated case becomes a Case (``is_synthetic=True``, with the generator's split), its
baseline and follow-up studies are ingested with ``ingest_files`` (de-identification, storage
and queued inference included), the generator's label is recorded as ground truth, and its
true lesion mask is stored on the post-procedure (baseline) study with one TRUTH lesion per
label. The cases are synthetic: no real patient is involved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import Group, User
from django.core.files import File

from inference.synthetic import (
    DEFAULT_SEED,
    GENERATOR_VERSION,
    CohortCase,
    CohortManifest,
    load_cohort,
    make_cohort,
)
from webapp.core import roles
from webapp.core.models import Case, GroundTruth, HyperdensityLabel, Study
from webapp.core.services import ClientContext, ServiceError, create_case, record_ground_truth
from webapp.ingest.services import NamedFile, ingest_files
from webapp.ingest.truth import TruthMaskError, has_true_mask, store_true_mask

logger = logging.getLogger(__name__)

DEMO_LOADER_USERNAME = "demo-loader"
DEFAULT_DEMO_CASES = 12
# 256 x 256 pixels per slice: the smallest matrix the generator supports, which keeps
# generation and analysis short.
DEMO_MATRIX = 256
GROUND_TRUTH_NOTE = "synthetic label from the generator"


class DemoCohortError(ServiceError):
    """The demo cohort cannot be loaded (invalid options, or a non-synthetic case in the way)."""

    code = "demo_cohort_invalid"


@dataclass
class DemoCaseResult:
    """Outcome of loading one case: case created, studies ingested, ground truth recorded."""

    code: str
    label: str
    split: str
    case_created: bool = False
    studies_ingested: list[str] = field(default_factory=list)
    instances_stored: int = 0
    jobs_queued: int = 0
    ground_truth_recorded: bool = False
    # Lesions of the true mask stored by this load; None when the mask was not stored now.
    true_lesions_stored: int | None = None

    @property
    def changed(self) -> bool:
        return (
            self.case_created
            or bool(self.studies_ingested)
            or self.ground_truth_recorded
            or self.true_lesions_stored is not None
        )


@dataclass
class DemoLoadSummary:
    """Totals of one load; ``cases_unchanged`` counts cases that were already complete."""

    cohort_id: str
    cohort_generated: bool
    cases: list[DemoCaseResult] = field(default_factory=list)

    @property
    def cases_created(self) -> int:
        return sum(1 for result in self.cases if result.case_created)

    @property
    def cases_unchanged(self) -> int:
        return sum(1 for result in self.cases if not result.changed)

    @property
    def studies_ingested(self) -> int:
        return sum(len(result.studies_ingested) for result in self.cases)

    @property
    def jobs_queued(self) -> int:
        return sum(result.jobs_queued for result in self.cases)

    @property
    def ground_truths_recorded(self) -> int:
        return sum(1 for result in self.cases if result.ground_truth_recorded)


def ensure_demo_cohort(
    cohort_dir: Path, n_cases: int, seed: int = DEFAULT_SEED
) -> tuple[CohortManifest, bool]:
    """Return the cohort in ``cohort_dir``, generating it unless one with these options exists.

    Returns the manifest and whether it was generated now. A cohort with other options in the
    folder is replaced, because the folder contains only the demo's generated data.
    """
    if n_cases < 1:
        raise DemoCohortError(f"--cases {n_cases} is invalid; pass 1 or more cases.")
    try:
        existing = load_cohort(cohort_dir)
    except (FileNotFoundError, ValueError):
        existing = None
    if existing is not None and _matches(existing, n_cases, seed):
        return existing, False

    logger.info("Generating a synthetic demo cohort of %d cases (seed %d)", n_cases, seed)
    manifest = make_cohort(
        cohort_dir,
        n_cases=n_cases,
        seed=seed,
        matrix=DEMO_MATRIX,
        # Without counts the generator keeps the source study's class ratio: 12 cases become
        # 4 HT, 4 CE and 4 HT+CE, and 111 become 41, 34 and 36.
        class_counts=None,
        # Normal studies have no hyperdensity label, so they could get no ground truth.
        n_normal=0,
        # Also replaces the case folders of an interrupted run, which has no cohort.json.
        overwrite=True,
    )
    return manifest, True


def _matches(manifest: CohortManifest, n_cases: int, seed: int) -> bool:
    if manifest.generator_version != GENERATOR_VERSION or manifest.seed != seed:
        return False
    if manifest.matrix != DEMO_MATRIX or len(manifest.cases) != n_cases:
        return False
    return all(case.label in HyperdensityLabel.values for case in manifest.cases)


DEMO_LOADER_DISPLAY_NAME = "demo loader (synthetic cohort import)"


def demo_loader_user() -> User:
    """Return the system user that loads the demo, creating it with the coordinator role.

    The user has no usable password, so it cannot log in.
    """
    user, created = User.objects.get_or_create(username=DEMO_LOADER_USERNAME)
    if created:
        user.set_unusable_password()
    # Shown wherever the loader entered something (ground truth "entered by"), so readers of
    # the demo see what this account is.
    user.first_name = DEMO_LOADER_DISPLAY_NAME
    user.save(update_fields=["password", "first_name"] if created else ["first_name"])
    group, _ = Group.objects.get_or_create(name=roles.COORDINATOR)
    user.groups.add(group)
    return user


def load_demo_cohort(
    cohort_dir: Path,
    *,
    n_cases: int = DEFAULT_DEMO_CASES,
    seed: int = DEFAULT_SEED,
    on_case: Callable[[int, int, DemoCaseResult], None] | None = None,
) -> DemoLoadSummary:
    """Generate the demo cohort if needed and import every case that is not complete yet.

    Idempotent: a case that already has both studies and a ground truth is left unchanged,
    and a partly loaded case gets only what it lacks. ``on_case`` is called after each case
    with its position, the number of cases and the result. Raises DemoCohortError when a
    non-synthetic case already uses a generated case code.
    """
    manifest, generated = ensure_demo_cohort(cohort_dir, n_cases, seed)
    user = demo_loader_user()
    context = ClientContext(actor=user)
    summary = DemoLoadSummary(cohort_id=manifest.cohort_id, cohort_generated=generated)
    for position, cohort_case in enumerate(manifest.cases, start=1):
        result = _load_case(context, cohort_case)
        summary.cases.append(result)
        if on_case is not None:
            on_case(position, len(manifest.cases), result)
    logger.info(
        "Loaded demo cohort %s: %d cases, %d created, %d studies ingested, %d jobs queued",
        manifest.cohort_id,
        len(summary.cases),
        summary.cases_created,
        summary.studies_ingested,
        summary.jobs_queued,
    )
    return summary


def _load_case(context: ClientContext, cohort_case: CohortCase) -> DemoCaseResult:
    result = DemoCaseResult(code=cohort_case.code, label=cohort_case.label, split=cohort_case.split)
    # NOTE: cases are matched by code only. After a reload with another seed or --cases, a
    # code already in the database keeps its earlier images and label and is skipped.
    case = Case.objects.filter(code=cohort_case.code).first()
    if case is None:
        case = create_case(
            context, code=cohort_case.code, split=cohort_case.split, is_synthetic=True
        )
        result.case_created = True
    elif not case.is_synthetic:
        raise DemoCohortError(
            f"Case {cohort_case.code} exists and is not synthetic; load the demo into another "
            "database or rename that case.",
            code="case_not_synthetic",
        )

    existing_roles = set(case.studies.values_list("role", flat=True))
    for role, study_dir, hours in (
        (Study.Role.BASELINE, cohort_case.baseline_dir, cohort_case.baseline_hours),
        (Study.Role.FOLLOW_UP, cohort_case.follow_up_dir, cohort_case.follow_up_hours),
    ):
        if role in existing_roles:
            continue
        with _open_study_files(study_dir, cohort_case.code) as files:
            report = ingest_files(case, role, hours, files, context.actor)
        result.studies_ingested.append(str(role))
        result.instances_stored += report.instances_stored
        result.jobs_queued += len(report.jobs)

    if not case.ground_truths.exists():
        follow_up = case.studies.filter(role=Study.Role.FOLLOW_UP).order_by("pk").first()
        record_ground_truth(
            context,
            case,
            label=cohort_case.label,
            source=GroundTruth.Source.CSV_IMPORT,
            follow_up_study=follow_up,
            notes=GROUND_TRUTH_NOTE,
            expected_version=0,
        )
        result.ground_truth_recorded = True

    # The generator draws the true labels on the baseline grid.
    baseline = case.studies.filter(role=Study.Role.BASELINE).order_by("pk").first()
    if baseline is not None and not has_true_mask(baseline):
        try:
            compartments = {
                int(lesion["label"]): str(lesion["compartment"]) for lesion in cohort_case.lesions
            }
            stored = store_true_mask(baseline, cohort_case.masks_nifti, compartments)
            result.true_lesions_stored = len(stored)
        except TruthMaskError as error:
            # The case stays usable without its true mask; the next load tries again.
            logger.warning("True mask of case %s not stored: %s", cohort_case.code, error)
    return result


@contextmanager
def _open_study_files(study_dir: Path, code: str) -> Iterator[list[NamedFile]]:
    """Open every file of a generated study as an upload, with paths like a folder upload."""
    paths = sorted(path for path in study_dir.rglob("*") if path.is_file())
    if not paths:
        raise DemoCohortError(
            f"{study_dir} contains no files; delete the cohort folder so that it is generated "
            "again.",
            code="study_missing",
        )
    with ExitStack() as stack:
        files = []
        for path in paths:
            handle = stack.enter_context(open(path, "rb"))
            relative = f"{code}/{path.relative_to(study_dir.parent).as_posix()}"
            files.append(NamedFile(relative_path=relative, file=File(handle, name=path.name)))
        yield files
