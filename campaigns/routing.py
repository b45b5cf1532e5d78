"""WebSocket routes of the campaigns app (live pages for owners)."""

from django.urls import path

websocket_urlpatterns: list = []
