"""REST API views: read-only for now; later features add writes through the core services."""

from __future__ import annotations

from django.db.models import Count, QuerySet
from rest_framework import viewsets

from webapp.api.serializers import CaseSerializer
from webapp.core.models import Case


class CaseViewSet(viewsets.ReadOnlyModelViewSet[Case]):
    """Cases by pseudonymous code, for any user with a project role."""

    serializer_class = CaseSerializer
    lookup_field = "code"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"

    def get_queryset(self) -> QuerySet[Case]:
        return Case.objects.annotate(study_count=Count("studies", distinct=True)).order_by("code")
