from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from webapp.api.views import CaseViewSet, api_docs
from webapp.research import api as research_api

# No ".json" suffix URLs: case codes may contain dots, which would make them ambiguous.
router = DefaultRouter()
router.include_format_suffixes = False
router.register("cases", CaseViewSet, basename="case")
router.register("studies", research_api.StudyViewSet, basename="study")
router.register("jobs", research_api.JobViewSet, basename="job")
router.register("model-versions", research_api.ModelVersionViewSet, basename="model-version")
router.register("predictions", research_api.PredictionViewSet, basename="prediction")
router.register("ground-truth", research_api.GroundTruthViewSet, basename="ground-truth")
router.register("adjudications", research_api.AdjudicationViewSet, basename="adjudication")

urlpatterns = [
    path("v1/", include((router.urls, "v1"))),
    path(
        "v1/exports/<slug:kind>/",
        research_api.ExportView.as_view(),
        name="v1-export",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", api_docs, name="api-docs"),
]
