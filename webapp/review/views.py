"""Review page, its JSON, adjudication and ground-truth forms, lesion overlay and WADO-URI.

The WADO-RS endpoints under ``/dicomweb/`` are API views, in ``dicomweb.py``.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.core import roles
from webapp.core.audit import client_address_from_request, record_audit_event
from webapp.core.models import Adjudication, Case, GroundTruth, Study
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

# Audit actions for writes that the user's roles do not allow. Each event names the case and
# the roles the user held.
ACTION_GROUND_TRUTH_DENIED = "ground_truth.denied"
ACTION_ADJUDICATION_DENIED = "adjudication.denied"
ACTION_CONSENSUS_DENIED = "adjudication.consensus_denied"
DENIED_WRITES = {
    ACTION_GROUND_TRUTH_DENIED: "Entering the follow-up ground truth",
    ACTION_ADJUDICATION_DENIED: "Recording a reader's adjudication",
    ACTION_CONSENSUS_DENIED: "Recording the consensus label",
}


def _context(request: HttpRequest) -> ClientContext:
    assert isinstance(request.user, User)
    return ClientContext(actor=request.user, client_address=client_address_from_request(request))


@roles.role_required()
@require_GET
def review_page(request: HttpRequest, code: str) -> HttpResponse:
    case = get_object_or_404(Case, code=code)
    state = services.build_review_state(request.user, case)
    # The agreement question names the compared model, so it is asked only once that is shown.
    compared = None if state.blinded else state.compared_prediction
    return render(
        request,
        "review/review_page.html",
        {
            "case": case,
            "state": state,
            # The three forms share field names, so each gets its own id prefix. With duplicate
            # ids, a click on a consensus or ground-truth label checked the adjudication radio.
            "adjudication_form": AdjudicationForm(
                initial=_adjudication_initial(state.own_adjudication, state.own_version),
                auto_id="adjudication_%s",
                compared=compared,
            ),
            # Prefilled with the recorded consensus, so a change starts from what is stored.
            "consensus_form": AdjudicationForm(
                initial=_adjudication_initial(state.consensus, state.consensus_version),
                auto_id="consensus_%s",
                compared=compared,
                consensus=True,
            ),
            "ground_truth_form": GroundTruthForm(
                initial=_ground_truth_initial(state.ground_truth),
                auto_id="ground_truth_%s",
            ),
        },
    )


def _adjudication_initial(adjudication: Adjudication | None, version: int) -> dict[str, object]:
    # No confidence before the first version: the reader must choose one.
    initial: dict[str, object] = {"expected_version": version}
    if adjudication is not None:
        initial.update(
            label=adjudication.label,
            confidence=adjudication.confidence,
            notes=adjudication.notes,
        )
    return initial


def _ground_truth_initial(ground_truth: GroundTruth | None) -> dict[str, object]:
    """Return the edit form's values: the current version's, so a save changes only what is edited."""
    if ground_truth is None:
        return {"expected_version": 0}
    return {
        "expected_version": ground_truth.version,
        "label": ground_truth.label,
        "heidelberg_subtype": ground_truth.heidelberg_subtype,
        "notes": ground_truth.notes,
    }


def _form_errors(form: forms.Form) -> str:
    """Return the form's errors as one line, each prefixed with the field's label."""
    parts = []
    for name, messages_ in form.errors.items():
        field = form.fields.get(name)
        label = field.label if field is not None and field.label else name.replace("_", " ")
        parts.append(f"{str(label).capitalize()}: {' '.join(str(m) for m in messages_)}")
    return "; ".join(parts)


@roles.role_required()
@require_GET
def review_state_json(request: HttpRequest, code: str) -> JsonResponse:
    case = get_object_or_404(Case, code=code)
    return JsonResponse(services.build_review_state(request.user, case).as_json())


def _review_url(case: Case) -> str:
    return reverse("review-page", args=[case.code])


def _save(request: HttpRequest, case: Case, *, consensus: bool) -> HttpResponse:
    own_submitted = access.has_submitted(request.user, case)
    blinded = not consensus and access.is_blinded(request.user, case, own_submitted)
    # A blinded reader's form has no agreement question, so a value posted anyway is dropped.
    compared = None if blinded else services.current_compared_prediction(case)
    if blinded and request.POST.get("agrees_with_model"):
        logger.info(
            "agrees_with_model dropped: case %s, user %s is blinded", case.code, request.user.pk
        )
    form = AdjudicationForm(request.POST, compared=compared, consensus=consensus)
    if not form.is_valid():
        errors = _form_errors(form)
        kind = "consensus label" if consensus else "adjudication"
        logger.info(
            "%s not saved: case %s, user %s: invalid %s",
            kind,
            case.code,
            request.user.pk,
            ",".join(form.errors),
        )
        messages.error(request, f"The {kind} was not saved: {errors}")
        return HttpResponseRedirect(_review_url(case))
    try:
        record_adjudication(
            _context(request),
            case,
            label=form.cleaned_data["label"],
            confidence=form.cleaned_data["confidence"],
            notes=form.cleaned_data["notes"],
            agrees_with_model=form.agreement(),
            # The model is shown to a reader who is not blinded when the form is rendered.
            model_shown=consensus or not blinded,
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


def _deny_write(
    request: HttpRequest,
    case: Case,
    action: str,
    needed: tuple[str, ...],
    after_reading: tuple[str, ...] = (),
) -> NoReturn:
    """Audit and log a write the user's roles do not allow, then raise PermissionDenied (403).

    ``after_reading`` names the roles that may make the write once they have submitted their
    own adjudication of the case.
    """
    held_roles = sorted(roles.roles_of(request.user))
    record_audit_event(
        action,
        actor=request.user,
        target=case,
        client_address=client_address_from_request(request),
        details={"case": case.code, "roles": held_roles},
    )
    logger.warning(
        "%s: case_id=%s user_id=%s roles=%s", action, case.pk, request.user.pk, ",".join(held_roles)
    )
    also = (
        f", or the role {' or '.join(after_reading)} after submitting your own adjudication of "
        "the case"
        if after_reading
        else ""
    )
    raise PermissionDenied(
        f"{DENIED_WRITES[action]} of case {case.code} needs the role {' or '.join(needed)}"
        f"{also}; your roles are {', '.join(held_roles) or 'none'}."
    )


def _case_for_write(request: HttpRequest, code: str, action: str, *needed: str) -> Case:
    """Return the case named in the URL, or deny the write when the user lacks every role in ``needed``."""
    case = get_object_or_404(Case, code=code)
    if not roles.has_any_role(request.user, *needed):
        _deny_write(request, case, action, needed)
    return case


@roles.role_required()
@require_POST
def adjudicate(request: HttpRequest, code: str) -> HttpResponse:
    case = _case_for_write(request, code, ACTION_ADJUDICATION_DENIED, *roles.ADJUDICATION_ROLES)
    return _save(request, case, consensus=False)


@roles.role_required()
@require_POST
def record_consensus(request: HttpRequest, code: str) -> HttpResponse:
    case = _case_for_write(request, code, ACTION_CONSENSUS_DENIED, *roles.CONSENSUS_ROLES)
    if access.is_blinded(request.user, case, access.has_submitted(request.user, case)):
        logger.info("consensus not saved: case %s, user %s is blinded", case.code, request.user.pk)
        messages.error(
            request,
            "Not saved: submit your own adjudication before recording the consensus of a "
            "blinded case.",
        )
        return HttpResponseRedirect(_review_url(case))
    return _save(request, case, consensus=True)


@roles.role_required()
@require_POST
def enter_ground_truth(request: HttpRequest, code: str) -> HttpResponse:
    case = get_object_or_404(Case, code=code)
    submitted = access.has_submitted(request.user, case)
    if not roles.may_enter_ground_truth(request.user, has_read_case=submitted):
        _deny_write(
            request,
            case,
            ACTION_GROUND_TRUTH_DENIED,
            roles.GROUND_TRUTH_ROLES,
            roles.GROUND_TRUTH_AFTER_READING_ROLES,
        )
    if access.is_blinded(request.user, case, submitted):
        logger.info(
            "ground truth not saved: case %s, user %s is blinded", case.code, request.user.pk
        )
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


@roles.role_required()
@require_GET
def next_case(request: HttpRequest) -> HttpResponse:
    """Redirect to the review page of the next case by code, for users who are not readers."""
    case = services.next_case(after_code=request.GET.get("after", ""))
    if case is None:
        messages.info(request, "There are no cases yet.")
        return HttpResponseRedirect(reverse("case-list"))
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
def truth_overlay(request: HttpRequest, code: str, study_id: int) -> JsonResponse:
    """Return a synthetic study's true mask as row runs; 403 while the ground truth is hidden."""
    case = get_object_or_404(Case, code=code)
    study = get_object_or_404(Study, pk=study_id, case=case)
    # The rule of the ground truth on the page: hidden from a blinded reader until they submit.
    if access.is_blinded(request.user, case, access.has_submitted(request.user, case)):
        return JsonResponse(
            {"error": "The true mask is ground truth; submit your adjudication to see it."},
            status=403,
        )
    try:
        return JsonResponse(overlay.truth_overlay(study))
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
