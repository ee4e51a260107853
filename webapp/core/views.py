"""Server-rendered pages: case list, case page, health endpoint, login and logout."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.db import connection
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from webapp.core.forms import ThrottledAuthenticationForm
from webapp.core.models import Case, Series, Study
from webapp.core.roles import (
    ADMIN,
    ALL_ROLES,
    COORDINATOR,
    RESEARCHER,
    has_any_role,
    role_required,
)
from webapp.research.views import render_worklist

logger = logging.getLogger(__name__)

# Every role may open the case list and case pages; finer rules (blinding, editing) apply inside.
VIEW_CASE_ROLES = ALL_ROLES


class ThrottledLoginView(LoginView):
    form_class = ThrottledAuthenticationForm
    template_name = "registration/login.html"
    redirect_authenticated_user = True


@login_required
@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """Log out; POST only, so a link on another site cannot end a session."""
    logout(request)
    return HttpResponseRedirect(reverse(settings.LOGOUT_REDIRECT_URL))


def admin_login_redirect(request: HttpRequest) -> HttpResponse:
    """Send the admin site's login to the throttled login page, so there is one login form."""
    next_url = request.GET.get("next", reverse("admin:index"))
    return HttpResponseRedirect(f"{reverse('login')}?{urlencode({'next': next_url})}")


@role_required(*VIEW_CASE_ROLES)
@require_GET
def case_list(request: HttpRequest) -> HttpResponse:
    """Render the worklist: status, prediction and ground truth (blinded for readers), filters."""
    return render_worklist(request)


@role_required(*VIEW_CASE_ROLES)
@require_GET
def case_detail(request: HttpRequest, code: str) -> HttpResponse:
    case = get_object_or_404(Case, code=code)
    # De-identification removes the study description, so the page names the chosen series
    # (its cleaned description) instead.
    chosen = Prefetch("series", queryset=Series.objects.filter(is_chosen=True), to_attr="chosen")
    studies = case.studies.order_by("role", "created_at").prefetch_related(chosen)
    context = {
        "case": case,
        "studies": studies,
        # Coordinators and admins get a control per study to correct its role.
        "can_change_role": has_any_role(request.user, COORDINATOR, ADMIN),
        # Researchers and admins can queue the case's analysed studies again.
        "can_reanalyse": has_any_role(request.user, RESEARCHER, ADMIN),
        "study_roles": Study.Role.choices,
    }
    return render(request, "core/case_detail.html", context)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Report whether the database and the task queue are reachable; 200 when both are, else 503.

    This is the only URL served without login, so it returns no data beyond the checks.
    """
    checks: dict[str, str] = {}
    healthy = True

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["database"] = "ok"
    except Exception as error:  # any driver error means "not reachable" for a health probe
        logger.warning("Health check: database unreachable: %s", type(error).__name__)
        checks["database"] = "unreachable"
        healthy = False

    try:
        checks["queue"] = _check_queue()
    except Exception as error:
        logger.warning("Health check: task queue unreachable: %s", type(error).__name__)
        checks["queue"] = "unreachable"
        healthy = False

    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


def _check_queue() -> str:
    """Touch the task backend; for the database queue, read its table."""
    try:
        from django.tasks import task_backends  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from django_tasks import task_backends

    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    backend = task_backends["default"]
    if isinstance(backend, DatabaseBackend):
        DBTaskResult.objects.ready().exists()
    return "ok"
