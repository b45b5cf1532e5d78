from django.urls import path

from operations import views

app_name = "operations"

urlpatterns = [
    path("status/", views.status_page, name="status_page"),
    path("metrics", views.metrics, name="metrics"),
    path("account/email/", views.email_prefs, name="email_prefs"),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/notifications/",
        views.campaign_notifications,
        name="campaign_notifications",
    ),
]
