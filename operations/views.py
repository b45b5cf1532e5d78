"""Entry points of operations/: the status page, the admin health panel, /metrics, and the
notification settings of campaigns and contributors."""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.tenancy import Actor
from campaigns import selectors as campaign_selectors
from operations import health, metrics_view, services
from operations.forms import CampaignNotificationsForm, EmailPrefsForm
from operations.models import Delivery
from workers import views as worker_views


def _public_status(request: HttpRequest) -> dict[str, Any]:
    # The JSON API's own figures (cached for a second there), so page and API never disagree.
    return dict(json.loads(worker_views.status(request).content))


@require_GET
def status_page(request: HttpRequest) -> HttpResponse:
    """The footer's "Status": the live figures of /api/v1/status and whether each part of the
    platform answers (states only; the admin health panel has the details)."""
    report = health.report(detailed=False)
    return render(
        request, "operations/status.html", {"report": report, "status": _public_status(request)}
    )


@staff_member_required
@require_GET
def admin_health(request: HttpRequest) -> HttpResponse:
    from django.contrib import admin

    report = health.report(detailed=True)
    context = {
        **admin.site.each_context(request),
        "title": "Health",
        "report": report,
        "status": _public_status(request),
        "embedded": not settings.REDIS_URL,
        "this_pid": os.getpid(),
    }
    return render(request, "operations/admin_health.html", context)


def _metrics_allowed(request: HttpRequest) -> bool:
    user = request.user
    if user.is_authenticated and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _metrics_allowed(request):
        # 404, not 403: the endpoint's existence is nobody else's business.
        return HttpResponse("Not found\n", status=404, content_type="text/plain")
    body, content_type = metrics_view.exposition()
    return HttpResponse(body, content_type=content_type)


@login_required
@require_http_methods(["GET", "POST"])
def campaign_notifications(request: HttpRequest, slug: str, campaign_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org, campaign = campaign_selectors.campaign_for_actor(actor, slug, campaign_id)
    is_owner = actor.is_owner_of(org)
    prefs = services.settings_for(campaign)
    new_secret = None
    form = CampaignNotificationsForm(instance=prefs)
    if request.method == "POST":
        if not is_owner:
            messages.error(request, "Only the organization's owners change notifications.")
            return redirect(request.path)
        form = CampaignNotificationsForm(request.POST, instance=prefs)
        if form.is_valid():
            new_secret = services.notifications_save(
                campaign=campaign,
                email=form.cleaned_data["email"],
                webhook_url=form.cleaned_data["webhook_url"],
                stall_minutes=form.cleaned_data["stall_minutes"],
                new_secret=bool(request.POST.get("new_secret")),
            )
            if new_secret is None:
                messages.success(request, "Notification settings saved.")
                return redirect(request.path)
            prefs = services.settings_for(campaign)
            form = CampaignNotificationsForm(instance=prefs)
    deliveries = Delivery.objects.filter(campaign=campaign)[:50]
    return render(
        request,
        "operations/campaign_notifications.html",
        {
            "org": org,
            "tab": "campaigns",
            "is_owner": is_owner,
            "campaign": campaign,
            "form": form,
            "prefs": prefs,
            "new_secret": new_secret,
            "deliveries": deliveries,
            "default_stall_minutes": settings.NOTIFY_STALL_MINUTES,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def email_prefs(request: HttpRequest) -> HttpResponse:
    prefs = services.contributor_prefs(request.user)  # type: ignore[arg-type]
    form = EmailPrefsForm(request.POST if request.method == "POST" else None, instance=prefs)
    if request.method == "POST" and form.is_valid():
        services.contributor_prefs_save(
            user=request.user,  # type: ignore[arg-type]
            weekly_summary=form.cleaned_data["weekly_summary"],
        )
        messages.success(request, "Email preferences saved.")
        return redirect(request.path)
    return render(request, "operations/email_prefs.html", {"form": form})
