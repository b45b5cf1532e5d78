"""Public pages of the campaigns app: the landing page and its live data."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from campaigns.models import Campaign
from campaigns.selectors import demo_kind

PUBLIC_STATES = (Campaign.State.RUNNING, Campaign.State.PAUSED, Campaign.State.COMPLETED)


def _public_campaigns() -> list[dict[str, Any]]:
    rows = (
        Campaign.objects.filter(approved=True, state__in=PUBLIC_STATES)
        .select_related("organization", "kernel")
        .order_by("-state", "-created_at")[:12]
    )
    return [
        {
            "id": c.pk,
            "name": c.name,
            "description": c.description,
            "organization": c.organization.name,
            "state": c.state,
            "tasks_total": c.tasks_total,
            "tasks_done": c.tasks_done,
            "tasks_failed": c.tasks_failed,
            "progress": round(c.progress, 4),
            # The live demo page of campaigns that run a reference kernel.
            "demo_url": reverse("campaigns:demo", args=[c.pk]) if demo_kind(c) else None,
        }
        for c in rows
    ]


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"campaigns": _public_campaigns()})


@require_GET
def public_campaigns(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"campaigns": _public_campaigns()})
