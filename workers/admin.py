"""Django admin for worker sessions: read-only (sessions are opened and closed by the worker
transports), with the Panther metrics in the list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from workers.models import WorkerSession


@admin.register(WorkerSession)
class WorkerSessionAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "kind",
        "transport",
        "organization",
        "user",
        "site_id",
        "slots",
        "tasks_done",
        "tasks_failed",
        "idle_share",
        "connected_at",
        "disconnected_at",
    )
    list_filter = ("kind", "transport", ("disconnected_at", admin.EmptyFieldListFilter))
    search_fields = ("agent", "user__email", "organization__slug")
    list_select_related = ("organization", "user")
    date_hierarchy = "connected_at"
    show_full_result_count = False
    exclude = ("secret_hash",)  # a credential, even hashed

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in WorkerSession._meta.fields if f.name != "secret_hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="idle (downtime)")
    def idle_share(self, obj: WorkerSession) -> str:
        total = obj.busy_ms + obj.idle_ms
        return f"{obj.idle_ms / total:.0%}" if total else "-"
