"""Data for the review page: studies and their images, predictions, ground truth, adjudications.

Everything a blinded reader must not see is left out here, on the server, so neither the page
HTML nor its JSON contains it. Queries are a fixed number per page, independent of the number
of studies, instances, jobs, predictions or adjudications.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Prefetch
from django.urls import reverse

from webapp.core import roles
from webapp.core.models import Adjudication, Case, GroundTruth, HyperdensityLabel, Series, Study
from webapp.jobs.models import InferenceJob, Lesion, Prediction
from webapp.review.access import is_blinded

logger = logging.getLogger(__name__)

# Text in ModelVersion.intended_use that marks a model trained on the synthetic cohort.
SYNTHETIC_TRAINING_MARKER = "synthetic"
SYNTHETIC_TRAINING_NOTE = "trained on synthetic data — research use only"

# Names of the study roles on the page. The classification question is asked of the
# post-procedure (baseline) CT, and the follow-up CT gives the ground truth.
ROLE_NAMES: dict[str, str] = {
    Study.Role.BASELINE: "Post-procedure CT",
    Study.Role.FOLLOW_UP: "Follow-up CT",
}

# Text of the analysis list for each job status.
JOB_STATUS_TEXT: dict[str, str] = {
    InferenceJob.Status.QUEUED: "waiting for a worker",
    InferenceJob.Status.RUNNING: "analysis running",
    InferenceJob.Status.SUCCEEDED: "analysed",
    InferenceJob.Status.FAILED: "analysis failed",
}


@dataclass
class ReviewState:
    """The part of a case that one user may view on the review page."""

    case: Case
    blinded: bool
    can_adjudicate: bool
    can_enter_ground_truth: bool
    can_record_consensus: bool
    can_see_history: bool
    # Whether the user may open the upload page, linked from the missing follow-up note.
    can_upload_studies: bool
    studies: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    # Predictions on the post-procedure CT: the ones the reader study evaluates.
    predictions: list[dict[str, Any]]
    lesions: list[dict[str, Any]]
    lesion_job_id: int | None
    lesion_study_role: str | None
    ground_truth: GroundTruth | None
    own_adjudication: Adjudication | None
    other_adjudications: list[Adjudication]
    consensus: Adjudication | None
    history: list[Adjudication] = field(default_factory=list)
    ground_truth_history: list[GroundTruth] = field(default_factory=list)
    # Model outputs on the follow-up CT, shown apart and never used for evaluation.
    follow_up_predictions: list[dict[str, Any]] = field(default_factory=list)
    # The prediction that an adjudication's agrees_with_model value refers to.
    compared_prediction: dict[str, Any] | None = None
    lesion_study_name: str = ""
    # True lesions of a synthetic study: ground truth, so shown only where the ground truth is.
    truth_lesions: list[dict[str, Any]] = field(default_factory=list)
    truth_study_id: int | None = None
    truth_study_role: str | None = None

    @property
    def shown_series_count(self) -> int:
        """Number of studies whose images the viewer shows."""
        return sum(1 for study in self.studies if study.get("status") == "ok")

    @property
    def follow_up_missing(self) -> bool:
        """Whether the case has studies but no follow-up CT, whose place the page then marks."""
        return bool(self.studies) and all(
            study["role"] != Study.Role.FOLLOW_UP for study in self.studies
        )

    @property
    def synthetic_models_on_real_study(self) -> bool:
        """Whether models trained only on synthetic data predicted on a case that is not.

        Their output on a real (or phantom) study has no validated meaning, so the page says
        so above the predictions.
        """
        return not self.case.is_synthetic and any(
            prediction.get("syntheticNote") for prediction in self.predictions
        )

    @property
    def own_version(self) -> int:
        return self.own_adjudication.version if self.own_adjudication else 0

    @property
    def ground_truth_version(self) -> int:
        return self.ground_truth.version if self.ground_truth else 0

    @property
    def consensus_version(self) -> int:
        return self.consensus.version if self.consensus else 0

    def viewer_config(self) -> dict[str, Any]:
        """Return the JSON the viewer script reads: series, instances and the lesion URL."""
        return {
            "case": self.case.code,
            "studies": self.studies,
            "lesionJobId": None if self.blinded else self.lesion_job_id,
            "lesionStudyRole": None if self.blinded else self.lesion_study_role,
            "truthOverlayUrl": None
            if self.blinded or self.truth_study_id is None
            else reverse("review-truth-overlay", args=[self.case.code, self.truth_study_id]),
            "truthStudyRole": None if self.blinded else self.truth_study_role,
        }

    def as_json(self) -> dict[str, Any]:
        """Return the state as JSON; blinded fields are absent, not empty."""
        data: dict[str, Any] = {
            "case": self.case.code,
            "blinded": self.blinded,
            "studies": self.studies,
            "jobs": self.jobs,
            "own_adjudication": _adjudication_json(self.own_adjudication),
        }
        if not self.blinded:
            data["predictions"] = self.predictions
            data["followUpPredictions"] = self.follow_up_predictions
            data["comparedPrediction"] = self.compared_prediction
            data["syntheticModelsOnRealStudy"] = self.synthetic_models_on_real_study
            data["lesions"] = self.lesions
            data["truthLesions"] = self.truth_lesions
            data["ground_truth"] = _ground_truth_json(self.ground_truth)
            data["other_adjudications"] = [
                _adjudication_json(item) for item in self.other_adjudications
            ]
            data["consensus"] = _adjudication_json(self.consensus)
        return data


def build_review_state(user: User | AnonymousUser, case: Case) -> ReviewState:
    """Collect what ``user`` may see of ``case``; blinded data is never loaded into the result."""
    studies = list(
        Study.objects.filter(case=case)
        .order_by("role", "created_at")
        .prefetch_related(
            Prefetch(
                "series",
                queryset=Series.objects.filter(is_chosen=True).prefetch_related("instances"),
                to_attr="chosen_series",
            )
        )
    )
    adjudications = list(
        Adjudication.objects.filter(case=case)
        .select_related("reader")
        .order_by("is_consensus", "reader_id", "-version")
    )
    own_latest = _latest_own(adjudications, user)
    blinded = is_blinded(user, case, has_submitted=own_latest is not None)

    can_see_history = roles.has_any_role(user, roles.ADMIN)
    state = ReviewState(
        case=case,
        blinded=blinded,
        can_adjudicate=roles.has_any_role(user, *roles.ADJUDICATION_ROLES),
        # A reader writes the ground truth only after submitting their own label. A blinded
        # user gets no form, even one who is also a coordinator.
        can_enter_ground_truth=roles.may_enter_ground_truth(
            user, has_read_case=own_latest is not None
        )
        and not blinded,
        can_record_consensus=roles.has_any_role(user, *roles.CONSENSUS_ROLES) and not blinded,
        can_see_history=can_see_history,
        can_upload_studies=roles.has_any_role(user, roles.COORDINATOR, roles.ADMIN),
        studies=[_study_json(study, user) for study in studies],
        jobs=[],
        predictions=[],
        lesions=[],
        lesion_job_id=None,
        lesion_study_role=None,
        ground_truth=None,
        own_adjudication=own_latest,
        other_adjudications=[],
        consensus=None,
    )
    jobs = list(
        InferenceJob.objects.filter(study__case=case)
        .select_related("study")
        .order_by("study__role", "-queued_at")
    )
    state.jobs = [_job_json(job) for job in jobs]
    if blinded:
        return state

    _add_model_output(state, jobs)
    _add_truth_lesions(state)
    ground_truths = list(
        GroundTruth.objects.filter(case=case).select_related("entered_by").order_by("-version")
    )
    state.ground_truth = ground_truths[0] if ground_truths else None
    # Users who may write the ground truth see its versions. Admins see every history.
    state.ground_truth_history = (
        ground_truths if can_see_history or state.can_enter_ground_truth else []
    )
    _add_adjudications(state, adjudications, user)
    return state


def _latest_own(
    adjudications: list[Adjudication], user: User | AnonymousUser
) -> Adjudication | None:
    if not user.is_authenticated:
        return None
    own = [a for a in adjudications if not a.is_consensus and a.reader_id == user.pk]
    return max(own, key=lambda a: a.version) if own else None


def _add_adjudications(
    state: ReviewState, adjudications: list[Adjudication], user: User | AnonymousUser
) -> None:
    latest_by_reader: dict[int, Adjudication] = {}
    consensus: Adjudication | None = None
    for adjudication in adjudications:
        if adjudication.is_consensus:
            if consensus is None or adjudication.version > consensus.version:
                consensus = adjudication
        elif adjudication.reader_id != user.pk:
            current = latest_by_reader.get(adjudication.reader_id)
            if current is None or adjudication.version > current.version:
                latest_by_reader[adjudication.reader_id] = adjudication
    state.other_adjudications = sorted(
        latest_by_reader.values(), key=lambda a: a.reader.get_username()
    )
    state.consensus = consensus
    if state.can_see_history:
        state.history = adjudications


def _add_model_output(state: ReviewState, jobs: list[InferenceJob]) -> None:
    """Add the predictions and lesions of each study's latest job run (one query each)."""
    latest_jobs: dict[int, InferenceJob] = {}
    for job in jobs:
        # Jobs are ordered newest first within a study, so the first one seen is the latest.
        if job.study_id not in latest_jobs and job.run_count > 0:
            latest_jobs[job.study_id] = job
    if not latest_jobs:
        return
    run_of = {job.pk: job.run_count for job in latest_jobs.values()}
    predictions = [
        p
        for p in Prediction.objects.filter(job_id__in=run_of)
        .select_related("model_version", "job__study")
        .order_by("job__study__role", "model_version__kind", "model_version__version")
        if p.run_number == run_of[p.job_id]
    ]
    baseline = [p for p in predictions if p.job.study.role == Study.Role.BASELINE]
    compared = compared_prediction(baseline)
    state.predictions = [_prediction_json(p, is_compared=p is compared) for p in baseline]
    state.follow_up_predictions = [
        _prediction_json(p) for p in predictions if p.job.study.role != Study.Role.BASELINE
    ]
    if compared is not None:
        state.compared_prediction = _prediction_json(compared, is_compared=True)

    # The overlay shows the lesions of the baseline's latest run, where the hyperdensity is read.
    baseline_jobs = [j for j in latest_jobs.values() if j.study.role == Study.Role.BASELINE]
    lesion_job = baseline_jobs[0] if baseline_jobs else next(iter(latest_jobs.values()))
    lesions = Lesion.objects.filter(job=lesion_job, run_number=lesion_job.run_count).order_by(
        "source", "label_index"
    )
    state.lesions = _describe_pairs([_lesion_json(lesion) for lesion in lesions])
    state.lesion_study_name = ROLE_NAMES.get(lesion_job.study.role, lesion_job.study.role)
    if any(p.job_id == lesion_job.pk for p in predictions):
        state.lesion_job_id = lesion_job.pk
        state.lesion_study_role = lesion_job.study.role


def _add_truth_lesions(state: ReviewState) -> None:
    """Add the true lesions of the case's synthetic study (one query), if any are stored."""
    lesions = list(
        Lesion.objects.filter(study__case=state.case, source=Lesion.Source.TRUTH)
        .select_related("study")
        .order_by("study__role", "label_index")
    )
    if not lesions or lesions[0].study is None:
        return
    # The demo loader stores the true mask of one study, the post-procedure CT.
    study = lesions[0].study
    state.truth_lesions = _describe_pairs(
        [_lesion_json(lesion) for lesion in lesions if lesion.study == study]
    )
    state.truth_study_id = study.pk
    state.truth_study_role = study.role


def compared_prediction(baseline_predictions: list[Prediction]) -> Prediction | None:
    """Return the post-procedure CT prediction that readers' agreement values refer to.

    The rule is the worklist's and the reader dashboard's: a promoted model version's
    prediction, else the newest one, so "agrees with the model" means the same model everywhere.
    """
    return max(
        baseline_predictions,
        key=lambda p: (p.model_version.is_promoted, p.created_at, p.pk),
        default=None,
    )


def current_compared_prediction(case: Case) -> dict[str, Any] | None:
    """Return the compared prediction of the latest run on the case's post-procedure CT."""
    job = (
        InferenceJob.objects.filter(study__case=case, study__role=Study.Role.BASELINE)
        .exclude(run_count=0)
        .order_by("-queued_at", "-pk")
        .first()
    )
    if job is None:
        return None
    predictions = list(
        Prediction.objects.filter(job=job, run_number=job.run_count).select_related(
            "model_version", "job__study"
        )
    )
    compared = compared_prediction(predictions)
    return None if compared is None else _prediction_json(compared, is_compared=True)


def _study_json(study: Study, user: User | AnonymousUser) -> dict[str, Any]:
    chosen: list[Series] = getattr(study, "chosen_series", [])
    data: dict[str, Any] = {
        "role": study.role,
        "roleLabel": study.get_role_display(),
        "roleName": ROLE_NAMES.get(study.role, study.get_role_display()),
        "studyUid": study.study_instance_uid,
        "hoursAfterMt": float(study.hours_after_mt) if study.hours_after_mt is not None else None,
        "outOfWindow": study.out_of_window,
        "description": study.description,
    }
    if not chosen:
        data.update(status="missing", message="No series of this study was chosen for review.")
        return data
    series = chosen[0]
    data.update(
        seriesUid=series.series_instance_uid,
        seriesDescription=series.description,
        sliceThicknessMm=series.slice_thickness_mm,
        spacingZyxMm=series.spacing_zyx_mm,
    )
    if series.burned_in_annotation and not roles.has_any_role(user, roles.ADMIN):
        data.update(
            status="restricted",
            message="This series is flagged as having burned-in annotation; only admins can view it.",
        )
        return data
    instances = sorted(
        series.instances.all(),
        key=lambda i: (
            i.slice_position_mm if i.slice_position_mm is not None else 0.0,
            i.instance_number or 0,
        ),
    )
    if not instances:
        data.update(status="missing", message="The chosen series has no stored images.")
        return data
    data.update(
        status="ok",
        # 1-based, as every slice number shown to users; the viewer starts at the middle slice.
        initialSlice=len(instances) // 2 + 1,
        instances=[
            {"uid": i.sop_instance_uid, "positionMm": i.slice_position_mm} for i in instances
        ],
    )
    return data


def _job_json(job: InferenceJob) -> dict[str, Any]:
    return {
        "jobId": job.pk,
        "studyRole": job.study.role,
        "studyName": ROLE_NAMES.get(job.study.role, job.study.role),
        "statusText": JOB_STATUS_TEXT.get(job.status, job.get_status_display()),
        "status": job.status,
        "statusLabel": job.get_status_display(),
        "progressLabel": job.get_progress_step_display(),
        "errorMessage": job.error_message,
        "runCount": job.run_count,
    }


def _prediction_json(prediction: Prediction, *, is_compared: bool = False) -> dict[str, Any]:
    """Return one prediction as JSON, its runtime included."""
    model = prediction.model_version
    probabilities = {
        label: float(prediction.probabilities.get(label, 0.0)) for label in HyperdensityLabel.values
    }
    data = {
        "studyRole": prediction.job.study.role,
        "studyName": ROLE_NAMES.get(prediction.job.study.role, prediction.job.study.role),
        "model": f"{model.get_kind_display()} {model.version}",
        "modelVersionId": model.pk,
        "isCompared": is_compared,
        "modelKind": model.kind,
        "modelVersion": model.version,
        "label": prediction.predicted_label,
        "probabilities": probabilities,
        "probabilityPercents": {label: round(100 * p) for label, p in probabilities.items()},
        "isUncertain": prediction.is_uncertain,
        "runNumber": prediction.run_number,
        "runtimeS": prediction.runtime_s,
        "syntheticNote": SYNTHETIC_TRAINING_NOTE
        if SYNTHETIC_TRAINING_MARKER in model.intended_use.lower()
        else "",
    }
    return data


def _lesion_json(lesion: Lesion) -> dict[str, Any]:
    bbox = lesion.bbox_zyx_voxels or []
    return {
        "labelIndex": lesion.label_index,
        "source": lesion.source,
        "sourceLabel": lesion.get_source_display(),
        "volumeMl": round(lesion.volume_ml, 3),
        "meanHu": round(lesion.mean_hu, 1),
        "maxHu": round(lesion.max_hu, 1),
        "compartment": lesion.get_compartment_display(),
        # First and last slice as the viewer numbers them: from 1, in ascending slice position,
        # the order of the mask's z axis. The bounding box's z end is exclusive.
        "sliceNumbers": [bbox[0] + 1, bbox[3]] if len(bbox) == 6 else None,
        "pairedWith": lesion.paired_with_index,
    }


def _describe_pairs(lesions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``pairNote`` to both parts of each hyperdensity that the segmentation split."""
    by_label = {item["labelIndex"]: item for item in lesions}
    for item in lesions:
        partner = by_label.get(item.pop("pairedWith"))
        if partner is None:
            continue
        denser = (item["meanHu"], item["labelIndex"]) > (partner["meanHu"], partner["labelIndex"])
        part = "denser" if denser else "less dense"
        item["pairNote"] = f"{part} part of one hyperdensity with #{partner['labelIndex']}"
    return lesions


def _adjudication_json(adjudication: Adjudication | None) -> dict[str, Any] | None:
    if adjudication is None:
        return None
    return {
        "reader": adjudication.reader.get_username(),
        "version": adjudication.version,
        "label": adjudication.label,
        "confidence": adjudication.confidence,
        "notes": adjudication.notes,
        "agreesWithModel": adjudication.agrees_with_model,
        "isConsensus": adjudication.is_consensus,
        "createdAt": adjudication.created_at.isoformat(),
    }


def _ground_truth_json(ground_truth: GroundTruth | None) -> dict[str, Any] | None:
    if ground_truth is None:
        return None
    return {
        "version": ground_truth.version,
        "label": ground_truth.label,
        "heidelbergSubtype": ground_truth.heidelberg_subtype,
        "enteredBy": ground_truth.entered_by.get_full_name()
        or ground_truth.entered_by.get_username(),
        "source": ground_truth.source,
        "notes": ground_truth.notes,
    }


def next_case(after_code: str = "") -> Case | None:
    """Return the first case by code after ``after_code``, wrapping to the first; None if none."""
    cases = Case.objects.order_by("code")
    return cases.filter(code__gt=after_code).first() or cases.first()


def next_unread_case(user: User, after_code: str = "") -> Case | None:
    """Return the first case, by code after ``after_code`` (wrapping), the reader has not adjudicated."""
    adjudicated = Adjudication.objects.filter(reader=user, is_consensus=False).values("case_id")
    unread = Case.objects.exclude(pk__in=adjudicated).order_by("code")
    return unread.filter(code__gt=after_code).first() or unread.first()
