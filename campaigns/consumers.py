"""The owners' live campaign socket: /ws/campaigns/<id>/ (JSON text frames, server to page).

Members of the campaign's organization only: the tenancy check runs on connect through the same
chokepoint as the web views (Campaign.objects.for_actor); anyone else (an outsider, an anonymous
visitor, a page of another origin riding the session cookie) is accepted and closed at once
with code 4403, the same for a campaign that does not exist. Messages:

    {"type": "snapshot", "snapshot": {...campaigns.selectors.snapshots fields, rate, t}}

at most one per campaigns.live.MIN_INTERVAL; a burst in between is coalesced into its latest.
Membership is checked again every RECHECK_SECONDS, so a removed member's page stops updating.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.tenancy import Actor
from campaigns import live
from campaigns.models import Campaign
from ccgsc.origins import scope_origin_allowed
from ccgsc.sockets import QuietWhenClosed

CLOSE_FORBIDDEN = 4403
# A member removed from the organization loses the live view within this many seconds.
RECHECK_SECONDS = 60.0


@database_sync_to_async
def _member_may_see(user: Any, campaign_id: int) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return Campaign.objects.for_actor(Actor(user=user)).filter(pk=campaign_id).exists()


class CampaignLiveConsumer(QuietWhenClosed, AsyncJsonWebsocketConsumer):
    campaign_id: int | None = None

    async def connect(self) -> None:
        await self.accept()
        try:
            campaign_id = int(self.scope["url_route"]["kwargs"]["campaign_id"])
        except (KeyError, TypeError, ValueError):
            campaign_id = 0
        allowed = scope_origin_allowed(self.scope) and await _member_may_see(
            self.scope.get("user"), campaign_id
        )
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.campaign_id = campaign_id
        self._checked_at = time.monotonic()
        self._last_sent = 0.0
        self._pending: dict[str, Any] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        await self.channel_layer.group_add(live.group_name(campaign_id), self.channel_name)
        live.publisher.watch(campaign_id)

    async def disconnect(self, code: int) -> None:
        if self.campaign_id is None:
            return
        await self.channel_layer.group_discard(live.group_name(self.campaign_id), self.channel_name)
        live.publisher.unwatch(self.campaign_id)
        if self._flush_task is not None:
            self._flush_task.cancel()
        self.campaign_id = None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page sends nothing; anything it does send is ignored."""

    async def campaign_snapshot(self, event: dict[str, Any]) -> None:
        """A snapshot from a publisher (any process). Sent now if the page has not had one for
        MIN_INTERVAL, else kept (replacing an older one kept) and sent when the interval ends."""
        if self.campaign_id is None:
            return
        if time.monotonic() - self._checked_at > RECHECK_SECONDS:
            self._checked_at = time.monotonic()
            if not await _member_may_see(self.scope.get("user"), self.campaign_id):
                await self.close(code=CLOSE_FORBIDDEN)
                return
        self._pending = event["snapshot"]
        wait = self._last_sent + live.MIN_INTERVAL - time.monotonic()
        if wait <= 0:
            await self._send_pending()
        elif self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_after(wait))

    async def _flush_after(self, wait: float) -> None:
        # A snapshot that arrives while this task is sending sees it still running and does not
        # start another: so look again after each send, until nothing is left pending.
        while True:
            await asyncio.sleep(wait)
            await self._send_pending()
            if self._pending is None:
                return
            wait = self._last_sent + live.MIN_INTERVAL - time.monotonic()

    async def _send_pending(self) -> None:
        if self._pending is None or self.campaign_id is None:
            return
        snapshot, self._pending = self._pending, None
        self._last_sent = time.monotonic()
        await self.send_json({"type": "snapshot", "snapshot": snapshot})
