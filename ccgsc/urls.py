from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("api/v1/", include("campaigns.api.urls")),
    path("", include("accounts.urls")),
    path("", include("campaigns.urls")),
    path("", include("workers.urls")),
    path("", include("rewards.urls")),
]
