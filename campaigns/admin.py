"""Django admin for blobs, kernels, campaigns, tasks and results.

Platform admins approve campaigns here (the "approve" actions): only approved campaigns are
offered to anonymous and embedded volunteers; an organization's own workers (started with its
API token) run its campaigns without approval. Bytes (blobs, task inputs, outputs) are never
rendered as fields: they are shown as sizes and short previews. Results are read-only: they are
what workers returned, and the scheduler alone writes them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.http import HttpRequest
from django.utils.html import format_html

from campaigns import selectors
from campaigns.models import Blob, Campaign, Kernel, Result, Task
from campaigns.services.base import ServiceError
from campaigns.services.lifecycle import (
    PAST,
    campaign_cancel,
    campaign_pause,
    campaign_resume,
    campaign_set_approved,
)


def _preview(data: bytes | memoryview | None) -> str:
    preview = selectors.preview_bytes(bytes(data) if data is not None else None)
    if preview is None:
        return "-"
    kind = "hex" if preview.is_hex else "text"
    more = "…" if preview.truncated else ""
    return f"{preview.text}{more} ({preview.size} bytes, {kind})"


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ("sha256", "size", "created_at")
    search_fields = ("sha256",)
    # Never the data itself: kernels and static data can be megabytes of binary.
    fields = ("sha256", "size", "created_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Blob]:
        return super().get_queryset(request).defer("data")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # content-addressed: blobs are made by uploads

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Kernel)
class KernelAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "kind", "size", "memory_max", "short_sha", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "sha256", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    # Immutable: a kernel's bytes and facts are what was validated at upload.
    readonly_fields = (
        "organization",
        "kind",
        "blob",
        "sha256",
        "size",
        "memory_max",
        "original_sha256",
        "imports",
        "created_by",
        "created_at",
    )
    fields = ("name", "description", *readonly_fields)

    @admin.display(description="sha256")
    def short_sha(self, obj: Kernel) -> str:
        return obj.sha256[:12]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads validate the module: use the web UI, the API or the CLI


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "organization",
        "state",
        "approved",
        "progress_display",
        "tasks_total",
        "priority",
        "created_at",
    )
    list_filter = ("state", "approved", "input_source")
    search_fields = ("name", "organization__name", "organization__slug")
    list_select_related = ("organization", "kernel")
    date_hierarchy = "created_at"
    actions = ("approve", "withdraw_approval", "pause", "resume", "cancel")
    readonly_fields = (
        "organization",
        "kernel",
        "generator",
        "verifier",
        "reducer",
        "static_data",
        "input_source",
        "input_state",
        "state",
        "approved",
        "error",
        "tasks_total",
        "tasks_done",
        "tasks_failed",
        "reduced_preview",
        "reduced_at",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "description", "organization", "kernel", "state", "error")}),
        ("Approval", {"fields": ("approved",)}),
        (
            "Input",
            {
                "fields": (
                    "input_source",
                    "input_state",
                    "generator",
                    "generator_args",
                    "static_data",
                )
            },
        ),
        ("Kernel arguments", {"fields": ("args", "env")}),
        (
            "Policies",
            {
                "fields": (
                    "priority",
                    "task_timeout",
                    "max_attempts",
                    "points_per_task",
                    "min_quorum",
                    "target_replicas",
                    "max_error_replicas",
                    "max_total_replicas",
                    "verifier",
                )
            },
        ),
        ("Progress", {"fields": ("tasks_total", "tasks_done", "tasks_failed")}),
        ("Reduction", {"fields": ("reducer", "reduced_preview", "reduced_at")}),
        ("Dates", {"fields": ("created_by", "created_at", "started_at", "finished_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return super().get_queryset(request).defer("reduced_output")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # campaigns are created by their organizations

    @admin.display(description="progress")
    def progress_display(self, obj: Campaign) -> str:
        return format_html(
            '<progress max="1" value="{}" title="{}%"></progress>',
            f"{obj.progress:.4f}",
            f"{obj.progress * 100:.1f}",
        )

    @admin.display(description="reduced output")
    def reduced_preview(self, obj: Campaign) -> str:
        return _preview(
            Campaign.objects.filter(pk=obj.pk).values_list("reduced_output", flat=True).first()
        )

    @admin.action(description="Approve for anonymous and embedded volunteers")
    def approve(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        n = campaign_set_approved(
            campaign_ids=list(queryset.values_list("pk", flat=True)), approved=True
        )
        self.message_user(request, f"Approved {n} campaign(s).", messages.SUCCESS)

    @admin.action(description="Withdraw approval (only the organization's own workers)")
    def withdraw_approval(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        n = campaign_set_approved(
            campaign_ids=list(queryset.values_list("pk", flat=True)), approved=False
        )
        self.message_user(request, f"Withdrew the approval of {n} campaign(s).", messages.SUCCESS)

    def _lifecycle(self, request: HttpRequest, queryset: QuerySet[Campaign], action: str) -> None:
        service = {
            "pause": campaign_pause,
            "resume": campaign_resume,
            "cancel": campaign_cancel,
        }[action]
        done = 0
        for campaign in queryset:
            try:
                service(campaign=campaign)
                done += 1
            except ServiceError as exc:
                self.message_user(request, f"{campaign.name}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"{PAST[action].capitalize()} {done} campaign(s).")

    @admin.action(description="Pause")
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._lifecycle(request, queryset, "pause")

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._lifecycle(request, queryset, "resume")

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._lifecycle(request, queryset, "cancel")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "campaign",
        "seq",
        "state",
        "error_count",
        "input_size",
        "finished_at",
    )
    list_filter = ("state",)
    search_fields = ("campaign__name",)
    list_select_related = ("campaign",)
    raw_id_fields = ("campaign", "canonical_result")
    show_full_result_count = False  # COUNT(*) of millions of tasks on every page is wasted
    fields = (
        "campaign",
        "seq",
        "state",
        "input_preview",
        "args",
        "env",
        "canonical_result",
        "error_count",
        "failure",
        "checkpoint_at",
        "created_at",
        "finished_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        return (
            super()
            .get_queryset(request)
            .defer("input", "checkpoint")
            .annotate(size=Length("input"))
        )

    @admin.display(description="input")
    def input_size(self, obj: Task) -> int:
        return int(getattr(obj, "size", 0) or 0)

    @admin.display(description="input")
    def input_preview(self, obj: Task) -> str:
        return _preview(Task.objects.filter(pk=obj.pk).values_list("input", flat=True).first())


@admin.register(Result)
class ResultAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "campaign",
        "state",
        "outcome",
        "validation",
        "error_kind",
        "runtime_ms",
        "session_id",
        "returned_at",
    )
    list_filter = ("state", "outcome", "validation")
    search_fields = ("campaign__name",)
    list_select_related = ("campaign",)
    show_full_result_count = False
    fields = (
        "campaign",
        "task",
        "state",
        "session_id",
        "user",
        "site_id",
        "leased_at",
        "deadline",
        "outcome",
        "output_preview",
        "output_sha256",
        "exit_code",
        "error_kind",
        "stderr_tail",
        "runtime_ms",
        "returned_at",
        "validation",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Result]:
        return super().get_queryset(request).defer("output")

    @admin.display(description="output")
    def output_preview(self, obj: Result) -> str:
        return _preview(Result.objects.filter(pk=obj.pk).values_list("output", flat=True).first())
