from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path

from ccgsc import api
from operations import views as operations_views


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """/favicon.ico, which browsers ask for on pages without <link rel="icon"> (the API's JSON,
    raw files): the SVG icon that base.html links."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("favicon.ico", favicon),
    # Before the admin's own URLs, which would answer 404 for it.
    path("admin/health/", operations_views.admin_health, name="admin-health"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("api/v1/", include("campaigns.api.urls")),
    path("", include("accounts.urls")),
    # Before campaigns: its /orgs/<slug>/campaigns/<id>/<action>/ would take .../notifications/.
    path("", include("operations.urls")),
    path("", include("campaigns.urls")),
    path("", include("workers.urls")),
    path("", include("rewards.urls")),
    # Last: whatever no app matched under the API prefix answers in the API's error shape.
    re_path(r"^api/v1/(?P<path>.*)$", api.not_found),
]
