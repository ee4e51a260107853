"""Review page, its JSON, adjudication and ground-truth forms, lesion overlay and WADO endpoints."""

from __future__ import annotations

import logging

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.core import roles
from webapp.core.audit import client_address_from_request
from webapp.core.models import Adjudication, Case
from webapp.core.services import (
    ClientContext,
    ServiceError,
    record_adjudication,
    record_ground_truth,
)
from webapp.jobs.models import InferenceJob
from webapp.review import access, overlay, services, wado
from webapp.review.forms import AdjudicationForm, GroundTruthForm

logger = logging.getLogger(__name__)


def _context(request: HttpRequest) -> ClientContext:
    assert isinstance(request.user, User)
    return ClientContext(actor=request.user, client_address=client_address_from_request(request))


@roles.role_required()
@require_GET
def review_page(request: HttpRequest, code: str) -> HttpResponse:
    case = get_object_or_404(Case, code=code)
    state = services.build_review_state(request.user, case)
    return render(
        request,
        "review/review_page.html",
        {
            "case": case,
            "state": state,
            "adjudication_form": AdjudicationForm(
                initial=_adjudication_initial(state.own_adjudication, state.own_version)
            ),
            "consensus_form": AdjudicationForm(
                initial={"expected_version": state.consensus_version, "confidence": 3}
            ),
            "ground_truth_form": GroundTruthForm(
                initial={"expected_version": state.ground_truth_version}
            ),
        },
    )


def _adjudication_initial(adjudication: Adjudication | None, version: int) -> dict[str, object]:
    initial: dict[str, object] = {"expected_version": version, "confidence": 3}
    if adjudication is not None:
        initial.update(
            label=adjudication.label,
            confidence=adjudication.confidence,
            notes=adjudication.notes,
        )
    return initial


def _form_errors(form: forms.Form) -> str:
    return "; ".join(
        f"{name}: {' '.join(str(message) for message in messages_)}"
        for name, messages_ in form.errors.items()
    )


@roles.role_required()
@require_GET
def review_state_json(request: HttpRequest, code: str) -> JsonResponse:
    case = get_object_or_404(Case, code=code)
    return JsonResponse(services.build_review_state(request.user, case).as_json())


def _review_url(case: Case) -> str:
    return reverse("review-page", args=[case.code])


def _save(request: HttpRequest, case: Case, *, consensus: bool) -> HttpResponse:
    form = AdjudicationForm(request.POST)
    if not form.is_valid():
        errors = _form_errors(form)
        messages.error(request, f"The adjudication was not saved: {errors}")
        return HttpResponseRedirect(_review_url(case))
    own_submitted = access.has_submitted(request.user, case)
    try:
        record_adjudication(
            _context(request),
            case,
            label=form.cleaned_data["label"],
            confidence=form.cleaned_data["confidence"],
            notes=form.cleaned_data["notes"],
            agrees_with_model=form.agreement(),
            # The model is shown to a reader who is not blinded when the form is rendered.
            model_shown=consensus or not access.is_blinded(request.user, case, own_submitted),
            expected_version=form.cleaned_data["expected_version"],
            is_consensus=consensus,
        )
    except ServiceError as error:
        # StaleVersionError included, because its message asks the user to reload the page.
        logger.info(
            "adjudication not saved: case %s, user %s: %s", case.code, request.user.pk, error.code
        )
        messages.error(request, f"Not saved: {error.message}")
        return HttpResponseRedirect(_review_url(case))
    messages.success(request, "Consensus label saved." if consensus else "Adjudication saved.")
    return HttpResponseRedirect(_review_url(case))


@roles.role_required(roles.READER)
@require_POST
def adjudicate(request: HttpRequest, code: str) -> HttpResponse:
    return _save(request, get_object_or_404(Case, code=code), consensus=False)


@roles.role_required(roles.ADJUDICATOR, roles.ADMIN)
@require_POST
def record_consensus(request: HttpRequest, code: str) -> HttpResponse:
    return _save(request, get_object_or_404(Case, code=code), consensus=True)


@roles.role_required(roles.COORDINATOR, roles.READER, roles.ADMIN)
@require_POST
def enter_ground_truth(request: HttpRequest, code: str) -> HttpResponse:
    case = get_object_or_404(Case, code=code)
    if access.is_blinded(request.user, case, access.has_submitted(request.user, case)):
        messages.error(
            request,
            "Not saved: submit your own adjudication before entering the ground truth of a "
            "blinded case.",
        )
        return HttpResponseRedirect(_review_url(case))
    form = GroundTruthForm(request.POST)
    if not form.is_valid():
        errors = _form_errors(form)
        messages.error(request, f"The ground truth was not saved: {errors}")
        return HttpResponseRedirect(_review_url(case))
    try:
        record_ground_truth(
            _context(request),
            case,
            label=form.cleaned_data["label"],
            heidelberg_subtype=form.cleaned_data["heidelberg_subtype"],
            notes=form.cleaned_data["notes"],
            follow_up_study=case.studies.filter(role="follow_up").order_by("created_at").first(),
            expected_version=form.cleaned_data["expected_version"],
        )
    except ServiceError as error:
        logger.info(
            "ground truth not saved: case %s, user %s: %s", case.code, request.user.pk, error.code
        )
        messages.error(request, f"Not saved: {error.message}")
        return HttpResponseRedirect(_review_url(case))
    messages.success(request, "Ground truth saved.")
    return HttpResponseRedirect(_review_url(case))


@roles.role_required(roles.READER)
@require_GET
def next_unread(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    case = services.next_unread_case(request.user, after_code=request.GET.get("after", ""))
    if case is None:
        messages.info(request, "You have adjudicated every case.")
        return HttpResponseRedirect(reverse("case-list"))
    return HttpResponseRedirect(_review_url(case))


@roles.role_required()
@require_GET
def lesion_overlay(request: HttpRequest, code: str, job_id: int) -> JsonResponse:
    """Return the job's lesion mask as row runs; 403 while the user is blinded to model output."""
    case = get_object_or_404(Case, code=code)
    job = get_object_or_404(InferenceJob, pk=job_id, study__case=case)
    if access.is_blinded(request.user, case, access.has_submitted(request.user, case)):
        return JsonResponse(
            {"error": "The lesion overlay is model output; submit your adjudication to see it."},
            status=403,
        )
    try:
        return JsonResponse(overlay.job_overlay(job))
    except overlay.OverlayUnavailableError as error:
        return JsonResponse({"error": str(error)}, status=404)


@roles.role_required()
@require_GET
def wado_uri(request: HttpRequest) -> HttpResponse:
    """Serve one instance by WADO-URI; only ``contentType=application/dicom`` is supported."""
    params = request.GET
    if params.get("requestType") != "WADO":
        return HttpResponse("requestType must be WADO.", status=400, content_type="text/plain")
    missing = [name for name in ("studyUID", "seriesUID", "objectUID") if not params.get(name)]
    if missing:
        return HttpResponse(
            f"Missing WADO parameter(s): {', '.join(missing)}.",
            status=400,
            content_type="text/plain",
        )
    content_type = params.get("contentType", wado.DICOM_CONTENT_TYPE)
    if content_type != wado.DICOM_CONTENT_TYPE:
        return HttpResponse(
            f"contentType {content_type!r} is not supported; request application/dicom.",
            status=406,
            content_type="text/plain",
        )
    instance = access.instance_for_user(
        request.user, params["studyUID"], params["seriesUID"], params["objectUID"]
    )
    # A streaming FileResponse; role_required is typed for HttpResponse views only.
    return wado.instance_file_response(request, instance)  # type: ignore[return-value]


@roles.role_required()
@require_GET
def wado_rs_instance(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    stored = access.instance_for_user(request.user, study, series, instance)
    return wado.instance_multipart_response(request, stored)


@roles.role_required()
@require_GET
def wado_rs_metadata(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    stored = access.instance_for_user(request.user, study, series, instance)
    return wado.instance_metadata_response(request, stored)


@roles.role_required()
@require_GET
def wado_rs_frames(
    request: HttpRequest, study: str, series: str, instance: str, frame_list: str
) -> HttpResponse:
    stored = access.instance_for_user(request.user, study, series, instance)
    return wado.instance_frames_response(request, stored, frame_list)
