from django.urls import path

from webapp.review import views

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
    path("review/next-unread/", views.next_unread, name="review-next-unread"),
    path("wado", views.wado_uri, name="wado-uri"),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>",
        views.wado_rs_instance,
        name="wado-rs-instance",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>/metadata",
        views.wado_rs_metadata,
        name="wado-rs-metadata",
    ),
    path(
        "dicomweb/studies/<str:study>/series/<str:series>/instances/<str:instance>"
        "/frames/<str:frame_list>",
        views.wado_rs_frames,
        name="wado-rs-frames",
    ),
]
