"""The REST API, mounted at /api/v1/ (see docs/api.md). `status` and `work` under the same
prefix belong to workers/ (ccgsc/urls.py includes both)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from campaigns.api import campaigns, export, kernels, organizations, runs

urlpatterns = [
    path("organizations", organizations.OrganizationListApi.as_view(), name="api-organizations"),
    path(
        "organizations/<slug:slug>",
        organizations.OrganizationDetailApi.as_view(),
        name="api-organization",
    ),
    path(
        "organizations/<slug:slug>/tokens", organizations.TokenListApi.as_view(), name="api-tokens"
    ),
    path(
        "organizations/<slug:slug>/tokens/<int:token_id>/revoke",
        organizations.TokenRevokeApi.as_view(),
        name="api-token-revoke",
    ),
    path("organizations/<slug:slug>/sites", organizations.SiteListApi.as_view(), name="api-sites"),
    path("kernels", kernels.KernelListApi.as_view(), name="api-kernels"),
    path("kernels/<int:kernel_id>", kernels.KernelDetailApi.as_view(), name="api-kernel"),
    path("campaigns", campaigns.CampaignListApi.as_view(), name="api-campaigns"),
    path("campaigns/<int:campaign_id>", campaigns.CampaignDetailApi.as_view(), name="api-campaign"),
    path(
        "campaigns/<int:campaign_id>/progress",
        campaigns.CampaignProgressApi.as_view(),
        name="api-campaign-progress",
    ),
    path(
        "campaigns/<int:campaign_id>/start",
        campaigns.CampaignStartApi.as_view(),
        name="api-campaign-start",
    ),
    path(
        "campaigns/<int:campaign_id>/pause",
        campaigns.CampaignPauseApi.as_view(),
        name="api-campaign-pause",
    ),
    path(
        "campaigns/<int:campaign_id>/resume",
        campaigns.CampaignResumeApi.as_view(),
        name="api-campaign-resume",
    ),
    path(
        "campaigns/<int:campaign_id>/cancel",
        campaigns.CampaignCancelApi.as_view(),
        name="api-campaign-cancel",
    ),
    path(
        "campaigns/<int:campaign_id>/regenerate",
        campaigns.CampaignRegenerateApi.as_view(),
        name="api-campaign-regenerate",
    ),
    path("campaigns/<int:campaign_id>/tasks", campaigns.TaskListApi.as_view(), name="api-tasks"),
    path(
        "campaigns/<int:campaign_id>/results",
        export.ResultExportApi.as_view(),
        name="api-results",
    ),
    path("run", runs.RunApi.as_view(), name="api-run-create"),
    path("runs/<int:run_id>", runs.RunDetailApi.as_view(), name="api-run"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/",
        # templates/api_docs.html: the Swagger UI under the site's bar (a way back).
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api_docs.html"),
        name="api-docs",
    ),
]
