"""The upload page; the browser sends the files to the API in batches (static/js/upload.js)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from webapp.core import roles
from webapp.core.models import Case, Study


@roles.role_required(roles.COORDINATOR, roles.ADMIN)
def upload_page(request: HttpRequest) -> HttpResponse:
    """Render the upload form; ``?case=<code>`` preselects an existing case.

    ``?batch_size=`` (1-500 files per request, default 50) exists for testing and slow links.
    """
    try:
        batch_size = min(max(int(request.GET.get("batch_size", "50")), 1), 500)
    except ValueError:
        batch_size = 50
    context = {
        "cases": Case.objects.order_by("code").values_list("code", flat=True),
        "selected_case": request.GET.get("case", ""),
        "roles": Study.Role.choices,
        "batch_size": batch_size,
    }
    return render(request, "ingest/upload.html", context)
