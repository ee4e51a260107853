"""The worklist: every case with its workflow status, filtered, sorted and paginated in SQL.

All per-case values are subqueries on the case row, so a page costs the same number of queries
at 5 cases and at 10,000 (one count and one page query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Case as SqlCase
from django.db.models import (
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Q,
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
    """Workflow states of a case, plus the state a blinded reader sees instead of the later ones."""

    AWAITING_UPLOAD = "awaiting_upload"
    PROCESSING = "processing"
    FAILED = "failed"
    # Shown to a reader instead of any later status until they submit their own label, because
    # the later statuses tell whether ground truth, other labels or a disagreement exist.
    HIDDEN = "hidden"
    AWAITING_FOLLOW_UP = "awaiting_follow_up"
    PREDICTED = "predicted"
    AWAITING_ADJUDICATION = "awaiting_adjudication"
    DISAGREEMENT = "disagreement"
    ADJUDICATED = "adjudicated"


# Statuses in workflow order; sorting by status follows it.
STATUS_ORDER: tuple[str, ...] = (
    Status.AWAITING_UPLOAD,
    Status.PROCESSING,
    Status.FAILED,
    Status.HIDDEN,
    Status.AWAITING_FOLLOW_UP,
    Status.PREDICTED,
    Status.AWAITING_ADJUDICATION,
    Status.DISAGREEMENT,
    Status.ADJUDICATED,
)
STATUS_RANK: dict[str, int] = {status: rank for rank, status in enumerate(STATUS_ORDER)}

STATUS_LABELS: dict[str, str] = {
    Status.AWAITING_UPLOAD: "Awaiting upload",
    Status.PROCESSING: "Processing",
    Status.FAILED: "Processing failed",
    Status.HIDDEN: "Hidden until you submit your label",
    Status.AWAITING_FOLLOW_UP: "Awaiting follow-up CT",
    Status.PREDICTED: "Predicted; ground truth to enter",
    Status.AWAITING_ADJUDICATION: "Awaiting adjudication",
    Status.DISAGREEMENT: "Readers disagree",
    Status.ADJUDICATED: "Adjudicated",
}


def status_help(required_readers: int) -> list[tuple[str, str]]:
    """Return (label, meaning) of each status in workflow order, for the page's help text."""
    meanings = {
        Status.AWAITING_UPLOAD: "No post-procedure (baseline) CT is uploaded yet.",
        Status.PROCESSING: "The baseline CT is being analysed; no prediction yet.",
        Status.FAILED: "The analysis of the baseline CT failed; the case page shows why.",
        Status.HIDDEN: "Shown to a reader of a blinded case, in place of the statuses below, "
        "until they submit their own label, so the status reveals neither the ground truth nor "
        "other readers' labels.",
        Status.AWAITING_FOLLOW_UP: "Predicted, but no follow-up CT is uploaded and no ground "
        "truth is entered.",
        Status.PREDICTED: "Predicted and the follow-up CT is uploaded, but no ground truth is "
        "entered yet.",
        Status.AWAITING_ADJUDICATION: f"Ground truth entered; fewer than {required_readers} "
        "readers have submitted a label, and those who did agree.",
        Status.DISAGREEMENT: "Ground truth entered; the readers' latest labels differ and no "
        "consensus is recorded.",
        Status.ADJUDICATED: f"Ground truth entered, and {required_readers} or more readers "
        "agree or an adjudicator recorded the consensus label.",
    }
    return [(STATUS_LABELS[status], meanings[status]) for status in STATUS_ORDER]


SORT_FIELDS: dict[str, str] = {
    "code": "code",
    "split": "split",
    "status": "status_rank",
    "readers": "readers_done",
    "created": "created_at",
}
PAGE_SIZE = 50

READY_FOR_YOUR_READING = "Ready for your reading"
READ_BY_YOU = "Read by you"


def required_readers() -> int:
    """Return how many agreeing readers complete a case's adjudication (``REQUIRED_READERS``)."""
    return int(getattr(settings, "REQUIRED_READERS", 2))


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


def _status_rank_expression(readers_needed: int, *, blinded_reader: bool) -> SqlCase:
    """Return the SQL rank (index in STATUS_ORDER) of the status each case shows to a user.

    The first matching rule wins. Cases without ground truth are ranked by the ground-truth
    steps whatever the readers did, so "Awaiting follow-up CT" finds every case that lacks
    both the follow-up CT and the ground truth. For a reader (``blinded_reader``), every
    status after processing becomes "hidden" on a blinded case they have not labelled.
    """

    def rank(status: str) -> Value:
        return Value(STATUS_RANK[status])

    blinding = (
        [When(Q(readers_blinded=True, mine_done=False), then=rank(Status.HIDDEN))]
        if blinded_reader
        else []
    )
    return SqlCase(
        When(has_baseline=False, then=rank(Status.AWAITING_UPLOAD)),
        When(
            predicted_label__isnull=True,
            job_status=InferenceJob.Status.FAILED,
            then=rank(Status.FAILED),
        ),
        When(predicted_label__isnull=True, then=rank(Status.PROCESSING)),
        *blinding,
        When(truth_label__isnull=True, has_follow_up=False, then=rank(Status.AWAITING_FOLLOW_UP)),
        When(truth_label__isnull=True, then=rank(Status.PREDICTED)),
        When(consensus_label__isnull=False, then=rank(Status.ADJUDICATED)),
        When(reader_labels__gt=1, then=rank(Status.DISAGREEMENT)),
        When(readers_done__gte=readers_needed, then=rank(Status.ADJUDICATED)),
        default=rank(Status.AWAITING_ADJUDICATION),
        output_field=IntegerField(),
    )


def annotated_cases(user: User) -> QuerySet[Any]:
    """Return all cases annotated with the status this user sees and the values the worklist shows.

    ``status_rank`` is the index in STATUS_ORDER of the status in the user's status column.
    The status filter and the sort use it too, so for a reader of a blinded case they have not
    labelled, neither reveals more than the column ("hidden").
    """
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

    # alias() values feed the status only; annotate() values are also selected for the rows.
    return (
        Case.objects.alias(
            has_baseline=Exists(
                Study.objects.filter(case=OuterRef("pk"), role=Study.Role.BASELINE)
            ),
            has_follow_up=Exists(
                Study.objects.filter(case=OuterRef("pk"), role=Study.Role.FOLLOW_UP)
            ),
            job_status=Subquery(baseline_jobs.values("status")[:1]),
            consensus_label=Subquery(latest_consensus.values("label")[:1]),
        )
        .annotate(
            predicted_label=Subquery(latest_prediction.values("predicted_label")[:1]),
            truth_label=Subquery(latest_truth.values("label")[:1]),
            readers_done=Coalesce(Subquery(readers_done, output_field=IntegerField()), 0),
            reader_labels=Coalesce(Subquery(distinct_labels, output_field=IntegerField()), 0),
            mine_done=Exists(reader_rows.filter(reader=user)),
        )
        .annotate(
            status_rank=_status_rank_expression(
                required_readers(), blinded_reader=is_blinded_reader(user)
            )
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
    readers_disagree: bool
    mine_done: bool
    # The reader's own queue state: READY_FOR_YOUR_READING, READ_BY_YOU or "" (not analysed).
    reading_state: str


def build_worklist(user: User, query: WorklistQuery) -> tuple[Page[Any], list[WorklistRow]]:
    """Return the requested page and its rows, with blinded values removed for readers."""
    cases = annotated_cases(user)
    reader = is_blinded_reader(user)
    if query.search:
        cases = cases.filter(code__icontains=query.search)
    if query.status:
        cases = cases.filter(status_rank=STATUS_RANK[query.status])
    if query.split:
        cases = cases.filter(split=query.split)
    if query.my_queue and reader:
        # The reader's queue: analysed cases they have not labelled yet.
        cases = cases.filter(mine_done=False, predicted_label__isnull=False)
    field = SORT_FIELDS[query.sort]
    cases = cases.order_by(f"-{field}" if query.descending else field, "code")

    page = Paginator(cases, PAGE_SIZE).get_page(query.page)
    rows = []
    for case in page.object_list:
        status = STATUS_ORDER[case.status_rank]
        blinded = reader and case.readers_blinded and not case.mine_done
        predicted = None if blinded else case.predicted_label
        truth = None if blinded else case.truth_label
        if not reader:
            reading_state = ""
        elif case.mine_done:
            reading_state = READ_BY_YOU
        elif case.predicted_label is not None:
            reading_state = READY_FOR_YOUR_READING
        else:
            reading_state = ""
        rows.append(
            WorklistRow(
                case=case,
                status=status,
                status_label=STATUS_LABELS[status],
                blinded=blinded,
                predicted_label=predicted,
                truth_label=truth,
                prediction_matches=(predicted == truth) if predicted and truth else None,
                readers_done=case.readers_done,
                readers_disagree=not blinded and case.reader_labels > 1,
                mine_done=case.mine_done,
                reading_state=reading_state,
            )
        )
    return page, rows


def status_choices(user: User | Any) -> list[tuple[str, str]]:
    """Return the status filter's options for ``user``: "hidden" only for readers."""
    reader = is_blinded_reader(user)
    return [
        (status, STATUS_LABELS[status])
        for status in STATUS_ORDER
        if status != Status.HIDDEN or reader
    ]
