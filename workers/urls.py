from django.urls import path, re_path

from workers import views

urlpatterns = [
    re_path(r"^blobs/(?P<sha256>[0-9a-f]{64})(?:\.(?P<ext>wasm|js))?$", views.blob, name="blob"),
    path("api/v1/work", views.work, name="work-http"),
    path("api/v1/status", views.status, name="status"),
]
