"""Quorum validation through the whole stack: a real daphne process, ten workers speaking the
protocol over real WebSockets (each signed in as a distinct contributor with an API token), two
of whom (20%) return wrong results. Nothing wrong becomes canonical, nobody is paid for invalid
work, and the campaign completes."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading

import msgpack
import pytest

from accounts.models import ApiToken, Membership, User
from campaigns.models import Campaign, Result, Task
from rewards import ledger
from rewards.models import LedgerEntry, Reliability, Total
from tests.waiting import wait_for
from workers import protocol

pytestmark = pytest.mark.live


def answer(task_input: bytes) -> bytes:
    return hashlib.sha256(task_input).hexdigest().encode()


async def contributor(
    url: str,
    token: str,
    *,
    liar: bool,
    stop: threading.Event,
    address: str,
    start: asyncio.Event | None = None,
    answered: asyncio.Event | None = None,
) -> int:
    """A worker that answers every task at once; a liar answers garbage. Returns how many
    results it sent. `address`: its client address, as the trusted proxy in front of the
    server reports it (all of them really connect from loopback). It connects once `start`
    is set, and sets `answered` when it has sent its first results."""
    if start is not None:
        await start.wait()
    from websockets.asyncio.client import connect

    rnd = random.Random(token)
    sent = 0
    headers = {"X-Forwarded-For": address}
    async with connect(url, max_size=protocol.MAX_FRAME, additional_headers=headers) as ws:
        await ws.send(
            protocol.encode(
                {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 2, "token": token}
            )
        )
        welcome = msgpack.unpackb(await ws.recv(), raw=False, strict_map_key=False)
        assert welcome["t"] == "welcome", welcome
        await ws.send(protocol.encode({"t": "want", "n": 4}))
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            msg = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            if msg["t"] == "tasks":
                results = [
                    {
                        "lease": t["lease"],
                        "ok": True,
                        "output": rnd.randbytes(16).hex().encode() if liar else answer(t["in"]),
                        "ms": 2,
                    }
                    for t in msg["tasks"]
                ]
                sent += len(results)
                await ws.send(protocol.encode({"t": "result", "results": results, "want": 4}))
                if answered is not None:
                    answered.set()
            elif msg["t"] == "error":
                raise AssertionError(msg)
            # ack, idle (wait for a push), cancel (already answered): nothing to do
        await ws.send(protocol.encode({"t": "bye"}))
    return sent


@pytest.fixture
def proxied_platform(transactional_db):
    """The server behind a (pretend) reverse proxy on loopback: each worker's X-Forwarded-For
    gives it its own network origin, as distinct volunteers have."""
    from tests.live import start_server

    platform = start_server(TRUSTED_PROXY_ADDRESSES="127.0.0.1,::1")
    try:
        yield platform
    finally:
        platform.stop()


def test_liars_among_real_workers_never_win_and_are_never_paid(
    proxied_platform, make_campaign, people
):
    live_platform = proxied_platform
    tasks = 80
    c = make_campaign(
        [f"task {i}" for i in range(tasks)], min_quorum=2, target_replicas=2, points_per_task=4
    )
    tokens, liars = [], set()
    for i in range(10):
        user = User.objects.create_user(f"live{i}@example.test", "pw")
        Membership.objects.create(user=user, organization=people.org)
        tokens.append(ApiToken.issue(organization=people.org, name=f"w{i}", created_by=user)[1])
        if i < 2:
            liars.add(user.pk)
    url = live_platform.url.replace("http://", "ws://") + "/ws/work/"
    stop = threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        async def swarm() -> list[int]:
            # The honest workers connect once both liars have answered something: on a loaded
            # machine eight quick honest workers could otherwise finish every task before a
            # liar's handshake completes (CI once saw no lie at all), proving nothing.
            lied = [asyncio.Event(), asyncio.Event()]
            both_lied = asyncio.Event()

            async def when_both_lied() -> int:
                await asyncio.gather(*(e.wait() for e in lied))
                both_lied.set()
                return 0

            workers = [
                contributor(
                    url,
                    tok,
                    liar=i < 2,
                    stop=stop,
                    address=f"198.51.{i}.7",
                    start=None if i < 2 else both_lied,
                    answered=lied[i] if i < 2 else None,
                )
                for i, tok in enumerate(tokens)
            ]
            return (await asyncio.gather(when_both_lied(), *workers))[1:]

        try:
            outcome["sent"] = asyncio.run(swarm())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()

    def settled() -> bool:
        c.refresh_from_db()
        return "error" in outcome or c.state == Campaign.State.COMPLETED

    try:
        wait_for(settled, timeout=120, what="the campaign to complete (or the swarm to fail)")
    finally:
        stop.set()
        thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    c.refresh_from_db()
    assert c.state == Campaign.State.COMPLETED, (c.tasks_done, c.tasks_failed)
    assert (c.tasks_done, c.tasks_failed) == (tasks, 0)

    for task in Task.objects.filter(campaign=c).select_related("canonical_result"):
        canonical = task.canonical_result
        assert canonical is not None and canonical.output is not None
        assert bytes(canonical.output) == answer(bytes(task.input))
        assert canonical.user_id not in liars
    lies = Result.objects.filter(campaign=c, user_id__in=liars, state=Result.State.RETURNED)
    assert lies.exists()
    assert not lies.filter(validation=Result.Validation.VALID).exists()
    assert not LedgerEntry.objects.filter(user_id__in=liars).exists()
    assert not Total.objects.filter(scope="user", key__in=liars).exists()
    for result_id in LedgerEntry.objects.values_list("result_id", flat=True):
        r = Result.objects.select_related("task").get(pk=result_id or 0)
        assert r.output is not None and bytes(r.output) == answer(bytes(r.task.input))
    valid = Result.objects.filter(campaign=c, validation=Result.Validation.VALID).count()
    assert LedgerEntry.objects.count() == valid
    assert Total.objects.get(scope="campaign", key=c.pk).points == 4 * valid
    assert ledger.check_totals() == []
    for record in Reliability.objects.filter(user_id__in=liars):
        assert record.consecutive_valid == 0 and record.invalid_total > 0
