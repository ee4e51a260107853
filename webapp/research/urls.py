from django.urls import path

from webapp.research import views

app_name = "research"

urlpatterns = [
    path("exports/", views.export_index, name="exports"),
    path(
        "exports/<slug:kind>.<slug:export_format>",
        views.export_download,
        name="export-download",
    ),
    path(
        "exports/masks/<int:prediction_id>/<slug:mask_format>",
        views.mask_download,
        name="mask-download",
    ),
    path("performance/", views.performance_dashboard, name="performance"),
    path(
        "performance/<int:version_id>/<slug:figure>.svg",
        views.performance_figure,
        name="performance-figure",
    ),
    path("readers/", views.reader_dashboard, name="readers"),
    path("operations/", views.operations_dashboard, name="operations"),
    path("imports/ground-truth/", views.import_ground_truth, name="import"),
    path(
        "imports/ground-truth/confirm/",
        views.confirm_ground_truth_import,
        name="import-confirm",
    ),
]
