"""The worklist: every case with its workflow status, filtered, sorted and paginated in SQL.

All per-case values are subqueries on the case row, so a page costs the same number of queries
at 5 cases and at 10,000 (one count and one page query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Case as SqlCase
from django.db.models import (
    CharField,
    Count,
    Exists,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from webapp.core import roles
from webapp.core.models import Adjudication, Case, GroundTruth, Study
from webapp.jobs.models import InferenceJob, Prediction


class Status:
    """Workflow states in the order a case passes through them."""

    AWAITING_UPLOAD = "awaiting_upload"
    PROCESSING = "processing"
    FAILED = "failed"
    AWAITING_FOLLOW_UP = "awaiting_follow_up"
    PREDICTED = "predicted"
    AWAITING_ADJUDICATION = "awaiting_adjudication"
    DISAGREEMENT = "disagreement"
    ADJUDICATED = "adjudicated"


STATUS_LABELS: dict[str, str] = {
    Status.AWAITING_UPLOAD: "Awaiting upload",
    Status.PROCESSING: "Processing",
    Status.FAILED: "Processing failed",
    Status.AWAITING_FOLLOW_UP: "Awaiting follow-up CT",
    Status.PREDICTED: "Predicted; follow-up to read",
    Status.AWAITING_ADJUDICATION: "Awaiting adjudication",
    Status.DISAGREEMENT: "Readers disagree",
    Status.ADJUDICATED: "Adjudicated",
}

BLINDED_STATUS = "ready_to_read"
BLINDED_STATUS_LABEL = "Ready for your reading"
STATUSES_HIDDEN_FROM_BLINDED = frozenset(
    {
        Status.AWAITING_FOLLOW_UP,
        Status.PREDICTED,
        Status.AWAITING_ADJUDICATION,
        Status.DISAGREEMENT,
        Status.ADJUDICATED,
    }
)

SORT_FIELDS: dict[str, str] = {
    "code": "code",
    "split": "split",
    "status": "status",
    "readers": "readers_done",
    "created": "created_at",
}
PAGE_SIZE = 50


@dataclass(frozen=True)
class WorklistQuery:
    """Parsed filters of the worklist page; unknown values fall back to the defaults."""

    search: str = ""
    status: str = ""
    split: str = ""
    sort: str = "code"
    descending: bool = False
    my_queue: bool = False
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> WorklistQuery:
        sort = params.get("sort", "code")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        status = params.get("status", "")
        split = params.get("split", "")
        return cls(
            search=params.get("q", "").strip()[:64],
            status=status if status in STATUS_LABELS else "",
            split=split if split in Case.Split.values else "",
            sort=sort if sort in SORT_FIELDS else "code",
            descending=params.get("order") == "desc",
            my_queue=params.get("mine") == "1",
            page=page,
        )


def is_blinded_reader(user: User | Any) -> bool:
    """Return whether the user reads cases, so blinding applies until they submit a label.

    A reader with another role as well is still blinded, because their labels are study data.
    """
    return roles.has_any_role(user, roles.READER)


def annotated_cases(user: User) -> QuerySet[Any]:
    """Return all cases annotated with their status and the values the worklist shows."""
    latest_truth = GroundTruth.objects.filter(case=OuterRef("pk")).order_by("-version")
    latest_consensus = Adjudication.objects.filter(case=OuterRef("pk"), is_consensus=True).order_by(
        "-version"
    )
    baseline_jobs = InferenceJob.objects.filter(
        study__case=OuterRef("pk"), study__role=Study.Role.BASELINE
    ).order_by("-queued_at", "-pk")
    # The worklist shows one prediction: a promoted model version's if any, else the newest.
    latest_prediction = Prediction.objects.filter(
        job__study__case=OuterRef("pk"), job__study__role=Study.Role.BASELINE
    ).order_by("-model_version__is_promoted", "-created_at", "-pk")
    reader_rows = Adjudication.objects.filter(case=OuterRef("pk"), is_consensus=False)
    readers_done = (
        reader_rows.order_by()
        .values("case")
        .annotate(count=Count("reader", distinct=True))
        .values("count")
    )
    # Readers disagree when their latest labels differ: keep each reader's highest version.
    newer = Adjudication.objects.filter(
        case=OuterRef("case"),
        reader=OuterRef("reader"),
        is_consensus=False,
        version__gt=OuterRef("version"),
    )
    distinct_labels = (
        reader_rows.filter(~Exists(newer))
        .order_by()
        .values("case")
        .annotate(count=Count("label", distinct=True))
        .values("count")
    )

    cases = Case.objects.annotate(
        has_baseline=Exists(Study.objects.filter(case=OuterRef("pk"), role=Study.Role.BASELINE)),
        has_follow_up=Exists(Study.objects.filter(case=OuterRef("pk"), role=Study.Role.FOLLOW_UP)),
        job_status=Subquery(baseline_jobs.values("status")[:1]),
        predicted_label=Subquery(latest_prediction.values("predicted_label")[:1]),
        prediction_model=Subquery(latest_prediction.values("model_version__kind")[:1]),
        truth_label=Subquery(latest_truth.values("label")[:1]),
        consensus_label=Subquery(latest_consensus.values("label")[:1]),
        readers_done=Coalesce(Subquery(readers_done, output_field=IntegerField()), 0),
        reader_labels=Coalesce(Subquery(distinct_labels, output_field=IntegerField()), 0),
        mine_done=Exists(reader_rows.filter(reader=user)),
    )
    return cases.annotate(
        status=SqlCase(
            When(has_baseline=False, then=Value(Status.AWAITING_UPLOAD)),
            When(
                predicted_label__isnull=True,
                job_status=InferenceJob.Status.FAILED,
                then=Value(Status.FAILED),
            ),
            When(predicted_label__isnull=True, then=Value(Status.PROCESSING)),
            When(consensus_label__isnull=False, then=Value(Status.ADJUDICATED)),
            When(reader_labels__gt=1, then=Value(Status.DISAGREEMENT)),
            When(
                truth_label__isnull=True, has_follow_up=False, then=Value(Status.AWAITING_FOLLOW_UP)
            ),
            When(truth_label__isnull=True, then=Value(Status.PREDICTED)),
            When(readers_done=0, then=Value(Status.AWAITING_ADJUDICATION)),
            default=Value(Status.ADJUDICATED),
            output_field=CharField(),
        )
    )


@dataclass(frozen=True)
class WorklistRow:
    case: Case
    status: str
    status_label: str
    blinded: bool
    predicted_label: str | None
    truth_label: str | None
    prediction_matches: bool | None
    readers_done: int
    mine_done: bool


def build_worklist(user: User, query: WorklistQuery) -> tuple[Page[Any], list[WorklistRow]]:
    """Return the requested page and its rows, with blinded values removed for readers."""
    return _build_worklist(user, query)


def _build_worklist(user: User, query: WorklistQuery) -> tuple[Page[Any], list[WorklistRow]]:
    cases = annotated_cases(user)
    if query.search:
        cases = cases.filter(code__icontains=query.search)
    if query.status:
        cases = cases.filter(status=query.status)
    if query.split:
        cases = cases.filter(split=query.split)
    if query.my_queue:
        # A reader's queue: cases with a prediction that they have not labelled yet.
        cases = cases.filter(mine_done=False, predicted_label__isnull=False)
    field = SORT_FIELDS[query.sort]
    cases = cases.order_by(f"-{field}" if query.descending else field, "code")

    page = Paginator(cases, PAGE_SIZE).get_page(query.page)
    reader = is_blinded_reader(user)
    rows = []
    for case in page.object_list:
        blinded = reader and case.readers_blinded and not case.mine_done
        # A blinded reader sees neither ground truth, consensus nor disagreement in the status.
        # NOTE: filtering by status still returns the true statuses' cases to such a reader.
        status = case.status
        if blinded and status in STATUSES_HIDDEN_FROM_BLINDED:
            status = BLINDED_STATUS
        predicted = None if blinded else case.predicted_label
        truth = None if blinded else case.truth_label
        rows.append(
            WorklistRow(
                case=case,
                status=status,
                status_label=STATUS_LABELS.get(status, BLINDED_STATUS_LABEL),
                blinded=blinded,
                predicted_label=predicted,
                truth_label=truth,
                prediction_matches=(predicted == truth) if predicted and truth else None,
                readers_done=case.readers_done,
                mine_done=case.mine_done,
            )
        )
    return page, rows


def status_counts(user: User) -> dict[str, int]:
    """Return the number of cases in each status, every status present (zero when none)."""
    counts = dict.fromkeys(STATUS_LABELS, 0)
    for row in annotated_cases(user).order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts
