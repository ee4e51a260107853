"""The upload page; the browser sends the files to the API in batches (static/js/upload.js)."""

from __future__ import annotations

import logging
from typing import cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.core import roles
from webapp.core.audit import client_address_from_request
from webapp.core.models import Case, Study
from webapp.core.services import ClientContext, ServiceError, change_study_role

logger = logging.getLogger(__name__)


@roles.role_required(roles.COORDINATOR, roles.ADMIN)
def upload_page(request: HttpRequest) -> HttpResponse:
    """Render the upload form; ``?case=<code>`` preselects that existing case.

    Without it the form starts on "New case" and no existing case is preselected, so a study
    lands in an existing case only by an explicit choice.

    ``?batch_size=`` (1-500 files per request, default 50) exists for testing and slow links.
    """
    try:
        batch_size = min(max(int(request.GET.get("batch_size", "50")), 1), 500)
    except ValueError:
        batch_size = 50
    cases = list(Case.objects.order_by("code").values_list("code", flat=True))
    requested = request.GET.get("case", "")
    context = {
        "cases": cases,
        # Only a case that exists is preselected; otherwise the page starts on "New case".
        "selected_case": requested if requested in cases else "",
        "roles": Study.Role.choices,
        "batch_size": batch_size,
    }
    return render(request, "ingest/upload.html", context)


@roles.role_required(roles.COORDINATOR, roles.ADMIN)
@require_POST
def study_role(request: HttpRequest, code: str, study_id: int) -> HttpResponse:
    """Change a study's role from the case page, then show the case page again."""
    study = get_object_or_404(Study, pk=study_id, case__code=code)
    context = ClientContext(cast(User, request.user), client_address_from_request(request))
    try:
        changed = change_study_role(context, study, request.POST.get("role", ""))
    except ServiceError as error:
        logger.warning("Study role change rejected study_id=%s code=%s", study.pk, error.code)
        messages.error(request, error.message)
    else:
        window = {None: "timing unknown", True: "outside the expected window"}.get(
            changed.out_of_window, "within the expected window"
        )
        messages.success(request, f"The study is now {changed.get_role_display()} ({window}).")
    return HttpResponseRedirect(reverse("case-detail", kwargs={"code": code}))
