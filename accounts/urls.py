"""Account settings, the dashboard and organization pages. Sign-up, sign-in, password and email
pages are django-allauth's, under /accounts/ (see ccgsc/urls.py)."""

from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("account/", views.account_settings, name="settings"),
    path("account/delete/", views.account_delete, name="delete"),
    path("dashboard/", views.dashboard, name="dashboard"),
    # Mail kept on this machine in the embedded mode (accounts.mailbox).
    path("dev/mailbox/", views.dev_mailbox, name="mailbox"),
    path("orgs/<slug:slug>/", views.org_home, name="org_home"),
    path("orgs/<slug:slug>/members/", views.org_members, name="org_members"),
    path(
        "orgs/<slug:slug>/members/<int:membership_id>/role/",
        views.org_member_role,
        name="org_member_role",
    ),
    path(
        "orgs/<slug:slug>/members/<int:membership_id>/remove/",
        views.org_member_remove,
        name="org_member_remove",
    ),
    path("orgs/<slug:slug>/tokens/", views.org_tokens, name="org_tokens"),
    path(
        "orgs/<slug:slug>/tokens/<int:token_id>/revoke/",
        views.org_token_revoke,
        name="org_token_revoke",
    ),
    path("orgs/<slug:slug>/sites/", views.org_sites, name="org_sites"),
    path(
        "orgs/<slug:slug>/sites/<int:site_id>/delete/",
        views.org_site_delete,
        name="org_site_delete",
    ),
    path(
        "orgs/<slug:slug>/sites/<int:site_id>/active/",
        views.org_site_active,
        name="org_site_active",
    ),
]
