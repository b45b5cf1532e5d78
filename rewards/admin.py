"""Django admin for the ledger, totals, reliability records and teams.

The ledger is append-only: entries are read-only here, and corrections are new `adjustment`
entries made with the "Add" form (which goes through rewards.ledger.adjust, so the totals follow).
Platform admins lift a refusal of work on a contributor's reliability record.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import User
from rewards import ledger, trust
from rewards.models import LedgerEntry, Reliability, Team, TeamMembership, Total


class AdjustmentForm(forms.ModelForm):
    class Meta:
        model = LedgerEntry
        fields = ["user", "campaign", "points", "note"]

    def clean_user(self) -> User:
        user = self.cleaned_data.get("user")
        if user is None:
            raise forms.ValidationError("An adjustment is for one contributor.")
        return user


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "kind",
        "user",
        "team",
        "site_id",
        "campaign",
        "points",
        "result_id",
    ]
    list_filter = ["kind"]
    search_fields = ["user__email", "user__display_name", "note"]
    raw_id_fields = ["user", "team", "campaign"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "team", "campaign"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = AdjustmentForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in LedgerEntry._meta.fields]

    def save_model(self, request: HttpRequest, obj: LedgerEntry, form: Any, change: bool) -> None:
        if change:
            return  # entries are never edited
        assert obj.user is not None
        entry = ledger.adjust(
            user=obj.user, points=obj.points, note=obj.note, campaign=obj.campaign
        )
        obj.pk = entry.pk

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Total)
class TotalAdmin(admin.ModelAdmin):
    list_display = ["scope", "key", "points", "results", "updated_at"]
    list_filter = ["scope"]
    ordering = ["scope", "-points"]
    actions = ["rebuild"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Rebuild every total from the ledger")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Total]) -> None:
        count = ledger.rebuild_totals()
        self.message_user(request, f"{count} totals recomputed from the ledger.", messages.SUCCESS)


@admin.register(Reliability)
class ReliabilityAdmin(admin.ModelAdmin):
    list_display = [
        "user",
        "consecutive_valid",
        "valid_total",
        "invalid_total",
        "error_total",
        "refused",
        "updated_at",
    ]
    list_filter = ["refused"]
    search_fields = ["user__email", "user__display_name"]
    raw_id_fields = ["user"]
    actions = ["lift_refusal"]

    @admin.action(description="Lift the refusal of work (the invalid count starts again)")
    def lift_refusal(self, request: HttpRequest, queryset: QuerySet[Reliability]) -> None:
        count = queryset.update(refused=False, invalid_total=0, consecutive_valid=0)
        trust.forget_refused()
        self.message_user(request, f"{count} contributor(s) may work again.", messages.SUCCESS)


class MembershipInline(admin.TabularInline):
    model = TeamMembership
    raw_id_fields = ["user"]
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "founder", "listed", "created_at"]
    list_filter = ["listed"]
    search_fields = ["name", "slug"]
    raw_id_fields = ["founder"]
    inlines = [MembershipInline]
