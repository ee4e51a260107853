"""URL configuration. Every URL needs login and a role except ``/healthz`` and the login page."""

from django.contrib import admin
from django.urls import include, path

from webapp.core import views

admin.site.site_header = "ceht-review administration (research use only)"

urlpatterns = [
    path("", views.case_list, name="case-list"),
    path("cases/<str:code>/", views.case_detail, name="case-detail"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", views.logout_view, name="logout"),
    # Before admin.site.urls, so the admin's own login form (which has no throttle) is never served.
    path("admin/login/", views.admin_login_redirect, name="admin-login-redirect"),
    path("admin/", admin.site.urls),
    # Before "api/": the upload endpoints live under api/v1/ beside the read-only router.
    path("", include("webapp.ingest.urls")),
    path("", include("webapp.review.urls")),
    path("", include("webapp.jobs.urls")),
    path("research/", include("webapp.research.urls")),
    path("api/", include("webapp.api.urls")),
]

# API paths answer 404 with the API's JSON error body; other paths with templates/404.html.
handler404 = "webapp.api.views.not_found"
