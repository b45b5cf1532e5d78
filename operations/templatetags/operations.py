"""{% campaign_notifications_panel %}: the campaign page's notifications card, so the campaign
page shows the delivery log without campaigns/ importing operations/."""

from __future__ import annotations

from typing import Any

from django import template

from operations.models import Delivery
from operations.notifications import settings_for

register = template.Library()


@register.inclusion_tag("operations/_campaign_panel.html", takes_context=True)
def campaign_notifications_panel(context: template.Context) -> dict[str, Any]:
    campaign = context["campaign"]
    return {
        "org": context["org"],
        "campaign": campaign,
        "is_owner": context.get("is_owner", False),
        "prefs": settings_for(campaign),
        "deliveries": list(Delivery.objects.filter(campaign=campaign)[:5]),
    }
