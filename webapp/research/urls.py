from django.urls import path

from webapp.research import training_views, views

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
    path(
        "performance/<int:version_id>/<slug:figure>.png",
        views.performance_figure,
        {"file_format": "png"},
        name="performance-figure-png",
    ),
    path("training/", training_views.training_index, name="training"),
    path("training/<int:run_id>/", training_views.training_detail, name="training-detail"),
    path(
        "training/<int:run_id>/status.json",
        training_views.training_status,
        name="training-status",
    ),
    path(
        "training/<int:run_id>/figures/<slug:name>/<slug:figure>.<slug:file_format>",
        training_views.training_figure,
        name="training-figure",
    ),
    path(
        "model-versions/<int:version_id>/promotion/",
        training_views.model_version_promotion,
        name="model-version-promotion",
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
