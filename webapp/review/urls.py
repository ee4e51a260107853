from django.urls import path

from webapp.review import dicomweb, views

urlpatterns = [
    path("cases/<str:code>/review/", views.review_page, name="review-page"),
    path("cases/<str:code>/review/state.json", views.review_state_json, name="review-state"),
    path("cases/<str:code>/review/adjudication/", views.adjudicate, name="review-adjudicate"),
    path("cases/<str:code>/review/consensus/", views.record_consensus, name="review-consensus"),
    path(
        "cases/<str:code>/review/ground-truth/",
        views.enter_ground_truth,
        name="review-ground-truth",
    ),
    path(
        "cases/<str:code>/review/jobs/<int:job_id>/overlay.json",
        views.lesion_overlay,
        name="review-overlay",
    ),
    path(
        "cases/<str:code>/review/studies/<int:study_id>/truth-overlay.json",
        views.truth_overlay,
        name="review-truth-overlay",
    ),
    path("review/next-unread/", views.next_unread, name="review-next-unread"),
    path("review/next-case/", views.next_case, name="review-next-case"),
    path("wado", views.wado_uri, name="wado-uri"),
    # WADO-RS (PS3.18 10.4): API views with token or session login; see dicomweb.py.
    path("dicomweb/studies/<str:study>", dicomweb.RetrieveView.as_view(), name="wado-rs-study"),
    path(
        "dicomweb/studies/<str:study>/metadata",
        dicomweb.MetadataView.as_view(),
        name="wado-rs-study-metadata",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>",
        dicomweb.RetrieveView.as_view(),
        name="wado-rs-series",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/metadata",
        dicomweb.MetadataView.as_view(),
        name="wado-rs-series-metadata",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>",
        dicomweb.RetrieveView.as_view(),
        name="wado-rs-instance",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/metadata",
        dicomweb.MetadataView.as_view(),
        name="wado-rs-metadata",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>"
        "/frames/<str:frame_list>",
        dicomweb.FramesView.as_view(),
        name="wado-rs-frames",
    ),
]
