from django.urls import path

from webapp.ingest import api, views
from webapp.jobs import views as job_views

urlpatterns = [
    path("upload/", views.upload_page, name="upload"),
    path(
        "cases/<str:code>/studies/<int:study_id>/role/",
        views.study_role,
        name="study-role",
    ),
    path(
        "api/v1/cases/<str:code>/studies/",
        api.CaseStudyUploadView.as_view(),
        name="api-case-studies",
    ),
    path(
        "api/v1/cases/<str:code>/identity-mapping/",
        api.IdentityMappingView.as_view(),
        name="api-identity-mapping",
    ),
    path("api/v1/uploads/<uuid:upload_id>/", api.UploadDetailView.as_view(), name="api-upload"),
    path(
        "api/v1/uploads/<uuid:upload_id>/complete/",
        api.UploadCompleteView.as_view(),
        name="api-upload-complete",
    ),
    path("dicomweb/studies", api.StowRsView.as_view(), name="dicomweb-stow"),
    # The job status endpoint sits here so the jobs app needs no URL module of its own.
    path("cases/<str:code>/jobs.json", job_views.case_job_status, name="case-job-status"),
]
