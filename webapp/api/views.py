"""REST API views: read-only for now; later features add writes through the core services.

Also the browsable API documentation page (``ApiDocsView``)."""

from __future__ import annotations

from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import viewsets

from webapp.api.serializers import CaseSerializer
from webapp.core.models import Case
from webapp.core.roles import role_required
from webapp.research.api import ErrorBodyMixin


class CaseViewSet(ErrorBodyMixin, viewsets.ReadOnlyModelViewSet[Case]):
    """Cases by pseudonymous code, for any user with a project role."""

    serializer_class = CaseSerializer
    lookup_field = "code"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"

    def get_queryset(self) -> QuerySet[Case]:
        return Case.objects.annotate(study_count=Count("studies", distinct=True)).order_by("code")


class ApiDocsView(SpectacularSwaggerView):
    """Browsable API documentation (Swagger UI) of the OpenAPI schema at ``/api/schema/``.

    The Swagger UI files come from drf-spectacular-sidecar as local static files, so the page
    loads without any request outside this server. ``api_docs`` wraps it in the login and role
    check of every other page.
    """

    template_name = "api/docs.html"
    title = "ceht-review API documentation"
    url_name = "api-schema"


api_docs = role_required()(ApiDocsView.as_view())


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Return the 404 response: the API's JSON error body under ``/api/``, else the HTML page.

    A path under ``/api/`` that matches no URL pattern (a malformed id, an unknown export kind)
    never reaches a DRF view, so without this handler it would get the HTML page.
    """
    if request.path.startswith("/api/"):
        return JsonResponse(
            {
                "code": "not_found",
                "message": f"Nothing at {request.path}; the endpoints are listed at /api/docs/.",
            },
            status=404,
        )
    return page_not_found(request, exception)
