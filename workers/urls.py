from django.urls import path, re_path

from workers import browser, owner_views, views

urlpatterns = [
    re_path(
        r"^blobs/(?P<sha256>[0-9a-f]{64})(?:\.(?P<ext>wasm|js|wgsl))?$", views.blob, name="blob"
    ),
    path("api/v1/work", views.work, name="work-http"),
    path("api/v1/status", views.status, name="status"),
    path(
        "orgs/<slug:slug>/campaigns/<int:campaign_id>/workers.json",
        owner_views.campaign_workers,
        name="campaign-workers",
    ),
    # The browser worker (workers/browser.py).
    path("contribute/", browser.contribute, name="contribute"),
    path("contribute/campaigns/<int:pk>.json", browser.campaign_card, name="contribute-campaign"),
    re_path(r"^worker/(?P<kind>wasm|js|gpu)\.js$", browser.worker_script, name="worker-script"),
    path("embed.js", browser.embed_script, name="embed-js"),
    path("embed/frame/", browser.embed_frame, name="embed-frame"),
]
