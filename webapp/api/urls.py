from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from webapp.api.views import CaseViewSet

# No ".json" suffix URLs: case codes may contain dots, which would make them ambiguous.
router = DefaultRouter()
router.include_format_suffixes = False
router.register("cases", CaseViewSet, basename="case")

urlpatterns = [
    path("v1/", include((router.urls, "v1"))),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
]
