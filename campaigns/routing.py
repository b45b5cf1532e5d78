"""WebSocket routes of the campaigns app (live pages for owners)."""

from django.urls import path

from campaigns.consumers import CampaignLiveConsumer

websocket_urlpatterns: list = [
    path("ws/campaigns/<int:campaign_id>/", CampaignLiveConsumer.as_asgi()),
]
