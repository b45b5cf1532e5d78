"""Worker-session data for the owners' campaign page (the page itself is campaigns'; it reads
this endpoint because sessions live in workers/, which campaigns/ must not import)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.tenancy import Actor
from campaigns.selectors import campaign_for_actor
from workers import selectors


@never_cache
@login_required
@require_GET
def campaign_workers(request: HttpRequest, slug: str, campaign_id: int) -> JsonResponse:
    """Active sessions of one campaign and the pool's session metrics (members only: 404
    otherwise, through the same tenancy chokepoint as the page)."""
    _, campaign = campaign_for_actor(Actor.from_request(request), slug, campaign_id)
    return JsonResponse(
        {"campaign": selectors.campaign_sessions(campaign), "pool": selectors.pool_metrics()}
    )
