"""Writes of operations/: notification settings (campaign owners) and email preferences."""

from __future__ import annotations

from django.db import transaction

from accounts.models import User
from campaigns.models import Campaign
from operations.models import CampaignNotifications, ContributorPrefs
from operations.notifications import new_secret as make_secret
from operations.notifications import settings_for

__all__ = ["contributor_prefs", "contributor_prefs_save", "notifications_save", "settings_for"]


def notifications_save(
    *,
    campaign: Campaign,
    email: bool,
    webhook_url: str,
    stall_minutes: int | None,
    new_secret: bool = False,
) -> str | None:
    """Save a campaign's notification settings. A webhook gets a signing secret when it is
    first set or when asked (`new_secret`); the new secret is returned, to be shown once."""
    with transaction.atomic():
        prefs, _ = CampaignNotifications.objects.select_for_update().get_or_create(
            campaign=campaign
        )
        prefs.email = email
        prefs.webhook_url = webhook_url
        prefs.stall_minutes = stall_minutes
        secret = None
        if webhook_url and (new_secret or not prefs.webhook_secret):
            secret = prefs.webhook_secret = make_secret()
        prefs.save()
    return secret


def contributor_prefs(user: User) -> ContributorPrefs:
    return ContributorPrefs.objects.filter(user=user).first() or ContributorPrefs(user=user)


def contributor_prefs_save(*, user: User, weekly_summary: bool) -> None:
    ContributorPrefs.objects.update_or_create(
        user=user, defaults={"weekly_summary": weekly_summary}
    )
