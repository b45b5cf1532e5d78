from django.urls import path

from rewards import views

app_name = "rewards"

urlpatterns = [
    # The contribute page (workers/browser.py) shows the points its contributor has so far.
    path("contribute/points.json", views.contributor_points, name="contribute-points"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("leaderboard/<str:board>/", views.leaderboard, name="leaderboard_board"),
    path("profile/", views.my_profile, name="my_profile"),
    path("users/<int:user_id>/", views.user_profile, name="profile"),
    path("teams/", views.team_list, name="teams"),
    path("teams/new/", views.team_create, name="team_create"),
    path("teams/leave/", views.team_leave, name="team_leave"),
    path("teams/<slug:slug>/", views.team_detail, name="team"),
    path("teams/<slug:slug>/join/", views.team_join, name="team_join"),
    # Owners: validation state of an organization's campaigns.
    path("orgs/<slug:slug>/validation/", views.org_validation, name="org_validation"),
    path(
        "orgs/<slug:slug>/validation/<int:campaign_id>/",
        views.campaign_validation,
        name="campaign_validation",
    ),
]
