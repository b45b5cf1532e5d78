from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from operations.models import Delivery, ProcessHeartbeat


@admin.register(ProcessHeartbeat)
class HealthAdmin(admin.ModelAdmin):
    """Listed on the admin index as "Health": opens the health panel (admin-health)."""

    def changelist_view(
        self, request: HttpRequest, extra_context: object = None
    ) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin-health"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "campaign", "event", "channel", "target", "state", "attempts"]
    list_filter = ["state", "event", "channel"]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
