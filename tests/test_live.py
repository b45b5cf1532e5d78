"""The owners' live campaign socket (/ws/campaigns/<id>/) at the ASGI boundary: members only,
snapshots that follow the counters, and a rate limit that holds however busy the campaign is."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from campaigns import live, signals
from campaigns.models import Campaign
from ccgsc.asgi import application
from tests.test_owner_ui import complete_tasks

pytestmark = pytest.mark.django_db(transaction=True)


def cookie_for(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


def socket(
    campaign_id: int, cookie: bytes | None = None, origin: bytes | None = b"http://testserver"
):
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, f"/ws/campaigns/{campaign_id}/", headers=headers)


async def assert_refused(communicator: WebsocketCommunicator) -> None:
    connected, _ = await communicator.connect(timeout=30)
    assert connected  # accepted, then closed with a code the page understands
    message = await communicator.receive_output(timeout=30)
    assert message == {"type": "websocket.close", "code": 4403}
    await communicator.wait()


async def snapshots_for(communicator: WebsocketCommunicator, seconds: float) -> list[dict]:
    """Every snapshot received in the next `seconds`."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        # receive_nothing, not a receive timeout: a timed-out receive cancels the application.
        if await communicator.receive_nothing(timeout=min(0.05, left), interval=0.01):
            continue
        message = await communicator.receive_json_from(timeout=1)
        assert message["type"] == "snapshot"
        out.append(message["snapshot"])
    return out


@pytest.fixture(autouse=True)
async def _close_connections_of_the_sync_thread():
    """database_sync_to_async runs the consumers' queries in one shared thread whose
    connection outlives the test; close it so the test database can be dropped."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def cookies(people) -> dict[str, bytes]:
    """Session cookies (made synchronously: tests below run on an event loop)."""
    return {name: cookie_for(getattr(people, name)) for name in ("owner", "teammate", "outsider")}


@pytest.fixture
def campaign(people, make_campaign) -> Campaign:
    return make_campaign([str(i) for i in range(400)])


async def test_outsider_anonymous_and_foreign_origin_are_refused(cookies, campaign):
    await assert_refused(socket(campaign.pk, cookies["outsider"]))
    await assert_refused(socket(campaign.pk, None))
    # A member's cookie sent by a page of another site (cross-site WebSocket hijacking).
    await assert_refused(socket(campaign.pk, cookies["owner"], origin=b"https://evil.example"))
    # A campaign that does not exist looks the same as one of another organization.
    await assert_refused(socket(campaign.pk + 1000, cookies["owner"]))
    assert not live.publisher.watched


async def test_member_gets_snapshots_that_follow_the_counters(cookies, campaign):
    communicator = socket(campaign.pk, cookies["teammate"])
    connected, _ = await communicator.connect(timeout=30)
    assert connected
    first = await communicator.receive_json_from(timeout=30)
    snap = first["snapshot"]
    assert (snap["id"], snap["state"], snap["tasks_total"], snap["tasks_done"]) == (
        campaign.pk,
        "running",
        400,
        0,
    )
    assert live.publisher.watched[campaign.pk] == 1

    await sync_to_async(complete_tasks)(campaign, n=10)
    for _ in range(10):
        snap = (await communicator.receive_json_from(timeout=30))["snapshot"]
        if snap["tasks_done"] == 10:
            break
    assert snap["tasks_done"] == 10 and snap["progress"] == 0.025
    assert snap["rate"] > 0

    # A state change reaches the page too.
    await sync_to_async(Campaign.objects.filter(pk=campaign.pk).update)(state="paused")
    await sync_to_async(signals.campaign_changed.send)(
        Campaign, campaign_id=campaign.pk, state="paused"
    )
    for _ in range(10):
        snap = (await communicator.receive_json_from(timeout=30))["snapshot"]
        if snap["state"] == "paused":
            break
    assert snap["state"] == "paused"
    await communicator.disconnect()
    assert campaign.pk not in live.publisher.watched


async def test_snapshots_are_rate_limited_under_load(cookies, campaign):
    """Results arrive in many small batches and state signals fire continuously for three
    seconds; two open pages each get at most about 1/MIN_INTERVAL snapshots per second, and
    the last one shows the final counters."""
    pages = [socket(campaign.pk, cookies["owner"]), socket(campaign.pk, cookies["teammate"])]
    for page in pages:
        assert (await page.connect(timeout=30))[0]
        await page.receive_json_from(timeout=30)  # the snapshot sent on connect

    stop = threading.Event()
    batches = [0]

    def load() -> None:
        try:
            while not stop.is_set():
                complete_tasks(campaign, n=2)
                signals.campaign_changed.send(Campaign, campaign_id=campaign.pk, state="running")
                batches[0] += 1
        finally:
            connections.close_all()  # this thread's connection (PostgreSQL keeps it open)

    thread = threading.Thread(target=load)
    duration = 3.0
    thread.start()
    try:
        received = await asyncio.gather(*(snapshots_for(page, duration) for page in pages))
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    assert batches[0] >= 20, "the load generator was too slow to mean anything"
    limit = int(duration / live.MIN_INTERVAL) + 1
    for snaps in received:
        assert 3 <= len(snaps) <= limit, len(snaps)
        done = [s["tasks_done"] for s in snaps]
        assert done == sorted(done) and done[-1] > done[0]
    final = await sync_to_async(Campaign.objects.get)(pk=campaign.pk)
    for page in pages:
        last = None
        for _ in range(10):
            last = (await page.receive_json_from(timeout=30))["snapshot"]
            if last["tasks_done"] == final.tasks_done:
                break
        assert last is not None and last["tasks_done"] == final.tasks_done
        await page.disconnect()


async def test_consumer_coalesces_bursts_from_several_publishers(cookies, campaign, monkeypatch):
    """Several server processes may publish the same campaign into one group: the page still
    gets at most one message per MIN_INTERVAL, and the latest one wins. Checked on the
    consumer's own clock (when it sent each message), so a slow machine delivering late cannot
    fail it or make it pass."""
    from campaigns import consumers

    sent_at: list[tuple[float, dict]] = []
    send_json = consumers.CampaignLiveConsumer.send_json

    async def recording(self, content, close=False):
        # _send_pending stamps _last_sent just before each send: the time the limit is kept on.
        sent_at.append((self._last_sent, content["snapshot"]))
        await send_json(self, content, close)

    monkeypatch.setattr(consumers.CampaignLiveConsumer, "send_json", recording)
    # Nothing but the synthetic burst after the first snapshot: a heartbeat sent after the
    # burst's last message would rightly replace it.
    monkeypatch.setattr(live, "HEARTBEAT", 3600.0)
    communicator = socket(campaign.pk, cookies["owner"])
    assert (await communicator.connect(timeout=30))[0]
    first = (await communicator.receive_json_from(timeout=30))["snapshot"]
    layer = get_channel_layer()
    # Back to back, within the in-memory layer's capacity (100 a channel; Redis here: 1,000).
    burst = 60
    for i in range(burst):
        await layer.group_send(
            live.group_name(campaign.pk),
            {"type": live.EVENT_TYPE, "snapshot": {"id": campaign.pk, "seq": i}},
        )
    received: list[dict] = []
    while not (received and received[-1].get("seq") == burst - 1):
        received.append((await communicator.receive_json_from(timeout=30))["snapshot"])
    await communicator.disconnect()

    synthetic = [s for s in received if "seq" in s]
    assert [s["seq"] for s in synthetic] == sorted(s["seq"] for s in synthetic)
    assert len(synthetic) < burst / 2, "the burst was not coalesced"
    assert [s for _, s in sent_at] == [first, *received]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent_at)]
    assert all(gap >= live.MIN_INTERVAL - 1e-6 for gap in gaps), gaps


def test_publisher_reads_all_watched_campaigns_in_two_queries(
    make_campaign, django_assert_max_num_queries
):
    from campaigns import selectors

    campaigns = [make_campaign(["a", "b"]) for _ in range(5)]
    with django_assert_max_num_queries(2):
        rows = selectors.snapshots([c.pk for c in campaigns])
    assert set(rows) == {c.pk for c in campaigns}


async def test_a_removed_member_loses_the_live_view(cookies, people, campaign, monkeypatch):
    from accounts.models import Membership
    from campaigns import consumers

    communicator = socket(campaign.pk, cookies["teammate"])
    assert (await communicator.connect(timeout=30))[0]
    await communicator.receive_json_from(timeout=30)
    await sync_to_async(
        Membership.objects.filter(user=people.teammate, organization=people.org).delete
    )()
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.0)
    # The next snapshot (a heartbeat at the latest) is not delivered: the socket closes.
    message = await communicator.receive_output(timeout=30)
    assert message == {"type": "websocket.close", "code": 4403}
    await communicator.wait()
