from django.urls import path

from campaigns import owner_views, views

app_name = "campaigns"

urlpatterns = [
    path("", views.home, name="home"),
    path("campaigns/public.json", views.public_campaigns, name="public-campaigns"),
    # Owners' pages (members of the organization).
    path("orgs/<slug:slug>/campaigns/", owner_views.campaign_list, name="campaign_list"),
    path("orgs/<slug:slug>/campaigns/new/", owner_views.campaign_create, name="campaign_create"),
    path("orgs/<slug:slug>/kernels/", owner_views.kernel_list, name="kernel_list"),
    path(
        "orgs/<slug:slug>/kernels/<int:kernel_id>/delete/",
        owner_views.kernel_delete,
        name="kernel_delete",
    ),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/",
        owner_views.campaign_detail,
        name="campaign_detail",
    ),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/live.json",
        owner_views.campaign_live,
        name="campaign_live",
    ),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/results/",
        owner_views.campaign_results,
        name="campaign_results",
    ),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/results/<int:result_id>/output",
        owner_views.result_output,
        name="result_output",
    ),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/<str:action>/",
        owner_views.campaign_action,
        name="campaign_action",
    ),
    # Public demo pages of approved campaigns running the reference kernels.
    path("campaigns/<int:campaign_id>/demo/", owner_views.demo_page, name="demo"),
    path("campaigns/<int:campaign_id>/demo/feed.json", owner_views.demo_feed, name="demo_feed"),
]
