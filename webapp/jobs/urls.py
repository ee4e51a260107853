"""Re-analysis requests; the job status JSON is routed with the upload pages."""

from django.urls import path

from webapp.jobs import views

urlpatterns = [
    path("cases/<str:code>/reanalyse/", views.reanalyse_case, name="case-reanalyse"),
    path("jobs/reanalyse-all/", views.reanalyse_all, name="reanalyse-all"),
]
