"""The platform against hostile volunteers, as an attacker would try it: a real daphne process,
and a protocol client of our own written from docs/protocol.md (not the native worker's code)
that sends whatever it likes — many sockets from one network with different browser-profile
cookies, a signed-up account that farmed trust elsewhere, a session that claims 256 slots and
instant run times and then goes silent.

Loopback is one network, so the server trusts X-Forwarded-For from 127.0.0.1
(TRUSTED_PROXY_ADDRESSES) and each client names its own address there, as a proxy in front
of the platform would: honest volunteers on networks of their own, the attacker's sockets in
203.0.113.0/24.

Each scenario asserts what docs/security.md promises: no wrong result becomes canonical, no
points for wrong work, no task failed by hoarding, the honest volunteers' correct results are
never marked invalid, and the campaign completes. The test waits on the database reaching a
state (the campaign completing), never on time passing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.test import Client

from campaigns import services
from campaigns.models import Campaign, Result, Task
from rewards.models import KernelTrust, LedgerEntry, Reliability
from tests.browser.helpers import wait_for
from tests.conftest import kernel_bytes
from tests.live import Platform, start_server
from tests.skips import skip_unless_ci
from workers.models import WorkerSession

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

V = Result.Validation
ATTACKER_NET = "203.0.113"
Answer = Callable[[bytes], bytes]


def honest(data: bytes) -> bytes:
    """The echo kernel's output: its input."""
    return data


def wrong(data: bytes) -> bytes:
    """What colluders agree to answer instead (deterministic, so their answers match)."""
    return b"WRONG " + data


# --- the hostile client --------------------------------------------------------------------------


def decode(frame: bytes | str) -> dict[str, Any]:
    # Campaign descriptors are keyed by campaign id: integer map keys.
    message: dict[str, Any] = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    return message


@dataclass
class Hostile:
    """One WebSocket session speaking msgpack frames per docs/protocol.md, version 2.

    `answer` computes the output it sends for a task's input; `silent_after` stops answering
    (but keeps the socket open and keeps pinging) after that many results; `slots` is what its
    hello claims and what each `want` asks for; `ms` is the run time it claims."""

    address: str
    answer: Answer = honest
    slots: int = 2
    ms: int = 5
    profile: str | None = None
    cookie: str = ""
    silent_after: int | None = None
    session: int | None = None
    answered: int = 0
    leased: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        headers = {"X-Forwarded-For": self.address}
        cookies = [self.cookie] if self.cookie else []
        if self.profile:
            cookies.append(f"ccgsc_profile={self.profile}")
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        return headers

    async def run(self, url: str, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        async with connect(url, additional_headers=self.headers(), max_size=None) as ws:

            async def send(message: dict[str, Any]) -> None:
                await ws.send(msgpack.packb(message, use_bin_type=True))

            await send({"t": "hello", "v": 2, "kind": "native", "slots": self.slots})
            welcome = decode(await ws.recv())
            if welcome["t"] != "welcome":
                self.errors.append(welcome)
                return
            self.session = welcome["session"]
            await send({"t": "want", "n": self.slots})
            pinger = asyncio.ensure_future(self._ping(send, stop))
            receiver = asyncio.ensure_future(self._receive(ws, send))
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({stopped, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver.done() and receiver.exception() is not None:
                    self.errors.append({"t": "client", "error": repr(receiver.exception())})
            finally:
                stopped.cancel()
                pinger.cancel()
                receiver.cancel()
                with contextlib.suppress(Exception):
                    await send({"t": "bye"})

    async def _ping(self, send: Callable[[dict[str, Any]], Any], stop: asyncio.Event) -> None:
        # Pings more often than the protocol's heartbeat (45 s): the silent hoarder stays.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 15)
            if stop.is_set():
                return
            await send({"t": "ping"})

    async def _receive(self, ws: Any, send: Callable[[dict[str, Any]], Any]) -> None:
        async for frame in ws:
            message = decode(frame)
            kind = message["t"]
            if kind == "error":
                self.errors.append(message)
            if kind != "tasks":
                continue  # ack, idle (wait for a push), cancel (nothing to stop), pong
            results = []
            for task in message["tasks"]:
                self.leased.append(task["lease"])
                if self.silent_after is not None and self.answered >= self.silent_after:
                    continue
                self.answered += 1
                output = self.answer(task.get("in") or b"")
                results.append(
                    {"lease": task["lease"], "ok": True, "output": output, "exit": 0, "ms": self.ms}
                )
            if results:
                await send({"t": "result", "results": results, "want": len(results)})
            elif self.silent_after is not None and self.answered >= self.silent_after:
                # The hoarder asks for everything it claims to have room for, then says nothing.
                await send({"t": "want", "n": self.slots})


class Swarm:
    """Clients on an event loop in a thread of their own, so the test's thread keeps the ORM
    (and waits on the database) while they talk to the server."""

    def __init__(self, platform: Platform) -> None:
        self.url = platform.url.replace("http", "ws") + "/ws/work/"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stop = self._call(self._event()).result(10)
        self.running: list[Future[None]] = []

    async def _event(self) -> asyncio.Event:
        return asyncio.Event()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def start(self, *clients: Hostile) -> None:
        for client in clients:
            self.running.append(self._call(client.run(self.url, self.stop)))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        for run in self.running:
            with contextlib.suppress(Exception):
                run.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


#: The production mode's settings (DEBUG off needs a real key); the test process signs its
#: login sessions with the same key, so the server accepts them.
SECRET_KEY = "adversarial-test-" + "k" * 40
# A bound on a start that is merely slow: on a loaded two-core machine importing Django and
# answering the first request can take tens of seconds.
START_TIMEOUT = 120.0


@pytest.fixture
def server(transactional_db: None, settings: Any) -> Iterator[Platform]:
    """The platform as deployed: DEBUG off (PostgreSQL and Redis under CI and in the
    production-like runs; the embedded mode otherwise), behind a "proxy" on 127.0.0.1."""
    settings.SECRET_KEY = SECRET_KEY
    platform = start_server(
        timeout=START_TIMEOUT,
        TRUSTED_PROXY_ADDRESSES="127.0.0.1",
        DEBUG="false",
        SECRET_KEY=SECRET_KEY,
    )
    try:
        yield platform
    finally:
        platform.stop()


@contextlib.contextmanager
def swarm(platform: Platform) -> Iterator[Swarm]:
    s = Swarm(platform)
    try:
        yield s
    finally:
        s.close()


def campaign_of(org: Any, n: int, **policies: Any) -> Campaign:
    from campaigns.inputs import TaskSpec

    kernel = services.kernel_upload(organization=org, name="echo", data=kernel_bytes("echo"))
    campaign = services.campaign_create(
        organization=org, name=f"{org.slug} echo", kernel=kernel, approved=True, **policies
    )
    services.tasks_add(
        campaign=campaign, specs=[TaskSpec(input=f"task {i}".encode()) for i in range(n)]
    )
    services.campaign_start(campaign=campaign)
    return campaign


def completed(campaign: Campaign) -> bool:
    campaign.refresh_from_db()
    return campaign.state == Campaign.State.COMPLETED


def wait_until_completed(campaign: Campaign, timeout: float = 240) -> None:
    """Wait for the campaign to complete; if it does not, fail with where its replicas are."""
    try:
        wait_for(lambda: completed(campaign), timeout=timeout, what=f"{campaign} to complete")
    except pytest.fail.Exception:
        rows = (
            Result.objects.filter(campaign=campaign)
            .values_list("origin", "state", "validation")
            .annotate(n=Count("id"))
            .order_by("origin", "state", "validation")
        )
        campaign.refresh_from_db()
        pytest.fail(
            f"{campaign.tasks_done}/{campaign.tasks_total} done, {campaign.tasks_failed} failed;"
            f" replicas (origin, state, validation, n): {list(rows)}"
        )


def assert_trustworthy(campaign: Campaign, honest_origins: set[str]) -> None:
    """What every scenario must end with."""
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.COMPLETED
    assert (campaign.tasks_done, campaign.tasks_failed) == (campaign.tasks_total, 0)
    tasks = Task.objects.filter(campaign=campaign).select_related("canonical_result")
    wrong_canonical = [
        t.seq
        for t in tasks
        if t.canonical_result is None or bytes(t.canonical_result.output or b"") != bytes(t.input)
    ]
    assert wrong_canonical == []
    returned = Result.objects.filter(
        campaign=campaign, state=Result.State.RETURNED, outcome=Result.Outcome.SUCCESS
    ).select_related("task")
    wrong_ids = [r.pk for r in returned if bytes(r.output or b"") != bytes(r.task.input)]
    assert not LedgerEntry.objects.filter(result_id__in=wrong_ids).exists()
    assert not Result.objects.filter(pk__in=wrong_ids, validation=V.VALID).exists()
    honest_invalid = Result.objects.filter(
        campaign=campaign, origin__in=honest_origins, validation=V.INVALID
    )
    assert list(honest_invalid.values_list("pk", flat=True)) == []


def origin(address: str) -> str:
    return address.rsplit(".", 1)[0] + ".0/24"


# --- (a) one attacker, many sockets -------------------------------------------------------------


def test_colluding_sockets_from_one_network_never_make_a_wrong_result_canonical(server, people):
    """Eight sockets from one /24, each with its own browser-profile cookie, answer every task
    identically wrong on a quorum-2 campaign; before the fix one person with two tabs got both
    replicas of many tasks. Two honest volunteers on networks of their own."""
    campaign = campaign_of(people.org, 30, min_quorum=2, target_replicas=2)
    colluders = [
        Hostile(f"{ATTACKER_NET}.{i}", wrong, slots=8, profile=f"tab-{i}") for i in range(1, 9)
    ]
    good = [Hostile("198.51.100.7", honest), Hostile("192.0.2.9", honest)]
    with swarm(server) as s:
        s.start(*colluders)
        # The colluders are in first and ask for everything their allowance gives them.
        wait_for(
            lambda: Result.objects.filter(origin=f"{ATTACKER_NET}.0/24").exists(),
            timeout=60,
            what="the colluders' first leases",
        )
        s.start(*good)
        wait_until_completed(campaign)
    assert all(c.errors == [] for c in [*colluders, *good])
    # The network got at most one replica of any task, however many sockets it opened...
    per_task = (
        Result.objects.filter(campaign=campaign, origin=f"{ATTACKER_NET}.0/24")
        .values("task_id")
        .annotate(n=Count("id"))
    )
    assert per_task and max(row["n"] for row in per_task) == 1
    # ...and was outvoted on every task it answered.
    attacked = Result.objects.filter(
        campaign=campaign, origin=f"{ATTACKER_NET}.0/24", state=Result.State.RETURNED
    )
    assert attacked.exists() and not attacked.filter(validation=V.VALID).exists()
    assert_trustworthy(campaign, {origin(g.address) for g in good})


# --- (b) trust farmed in one place, spent in another ---------------------------------------------


def signed_in_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def test_trust_farmed_on_one_organizations_campaign_buys_nothing_on_anothers(server, people):
    """A signed-up volunteer earns a run of valid results on organization A's trivial campaign
    (honestly: that is how trust is earned), then answers wrong, alone with its trust, on
    organization B's quorum-2 campaign whose owner even switched adaptive replication on."""
    farmer = get_user_model().objects.create_user("farmer@evil.test", "pw-farmer-123")
    cookie = signed_in_cookie(farmer)
    farm = campaign_of(people.org, 14, min_quorum=2, target_replicas=2)
    h1 = Hostile("198.51.100.7", honest)
    with swarm(server) as s:
        s.start(Hostile(f"{ATTACKER_NET}.50", honest, cookie=cookie), h1)
        wait_until_completed(farm)
    farmed = KernelTrust.objects.get(user=farmer, kernel=farm.kernel)
    assert farmed.consecutive_valid >= 10  # trusted on A's kernel, as BOINC would have it

    target = campaign_of(
        people.other_org, 20, min_quorum=2, target_replicas=2, adaptive_replication=True
    )
    liar = Hostile(f"{ATTACKER_NET}.50", wrong, cookie=cookie)
    good = [Hostile("198.51.100.7", honest), Hostile("192.0.2.9", honest)]
    with swarm(server) as s:
        s.start(liar)
        wait_for(
            lambda: Result.objects.filter(campaign=target, user=farmer).exists(),
            timeout=60,
            what="the farmer's first leases on B",
        )
        s.start(*good)
        wait_until_completed(target)
    assert liar.errors == [] and all(g.errors == [] for g in good)
    lies = Result.objects.filter(campaign=target, user=farmer, state=Result.State.RETURNED)
    assert lies.exists()
    assert not lies.filter(validation=V.VALID).exists()
    # Nothing was accepted on trust, and the lies are on the farmer's record.
    assert not Result.objects.filter(campaign=target, basis=Result.Basis.TRUSTED).exists()
    assert lies.filter(validation=V.INVALID).exists()
    assert Reliability.objects.get(user=farmer).invalid_total >= 1
    assert not KernelTrust.objects.filter(
        user=farmer, kernel=target.kernel, consecutive_valid__gt=0
    ).exists()
    assert_trustworthy(target, {origin(g.address) for g in good})


# --- (c) a hoarding session ----------------------------------------------------------------------


def test_a_hoarding_session_fails_no_task(server, people):
    """A session claims 256 slots and instant run times (ms: 0), answers its first leases at
    once, asks for 256 more and goes silent while staying connected. With a 1 s timeout and two
    attempts, before the fix, expiries counted as failed attempts and went back to the same
    session: nearly every task failed."""
    campaign = campaign_of(people.org, 40, task_timeout=1, max_attempts=2)
    start = int(settings.CCGSC["LEASE_ALLOWANCE_START"])
    hoarder = Hostile(f"{ATTACKER_NET}.66", honest, slots=256, ms=0, silent_after=start)
    worker = Hostile("198.51.100.7", honest, slots=4)
    with swarm(server) as s:
        s.start(hoarder)
        # It holds leases it will never answer before the honest worker arrives.
        wait_for(
            lambda: Result.objects.filter(
                session_id=hoarder.session, state=Result.State.LEASED
            ).exists(),
            timeout=60,
            what="the hoarder's second round of leases",
        )
        s.start(worker)
        wait_until_completed(campaign)
    assert hoarder.session is not None
    held = Result.objects.filter(session_id=hoarder.session)
    # However many slots it claimed, it got a small allowance: its first few, then as many
    # more as it had answered in time.
    assert len(hoarder.leased) == held.count() <= 3 * start
    assert held.filter(state=Result.State.TIMED_OUT).exists()
    # An expired lease never went back to the session that let it expire.
    assert max(held.values("task_id").annotate(n=Count("id")).values_list("n", flat=True)) == 1
    session = WorkerSession.objects.get(pk=hoarder.session)
    assert session.leases_expired >= 1
    assert_trustworthy(campaign, {origin(worker.address), origin(hoarder.address)})


# --- (d) a forged X-Forwarded-For through the deployed proxy -------------------------------------


def test_a_forged_forwarded_for_through_the_deployed_proxy_is_not_believed(
    transactional_db: None, settings: Any, tmp_path: Any
) -> None:
    """compose.yaml's deployment: nginx (deploy/nginx.conf) in front of daphne run with
    --proxy-headers, which takes the client's address from the leftmost X-Forwarded-For entry.
    An attacker who sends its own header must not choose its network origin (and so be as many
    independent volunteers as it likes): the session's origin is where it really connects
    from (loopback here), whatever it claims."""
    import asyncio as aio

    from websockets.asyncio.client import connect

    from ccgsc.processes import nginx_binary, start_proxy

    if nginx_binary() is None:
        skip_unless_ci("nginx is not installed (Debian package nginx; .ci/run installs it)")
    settings.SECRET_KEY = SECRET_KEY
    platform = start_server(
        timeout=START_TIMEOUT,
        daphne_args=("--proxy-headers",),
        DEBUG="false",
        SECRET_KEY=SECRET_KEY,
    )
    proxy = start_proxy([platform.port], tmp_path / "nginx")
    url = proxy.url.replace("http", "ws") + "/ws/work/"

    async def hello(forged: str) -> int:
        async with connect(url, additional_headers={"X-Forwarded-For": forged}) as ws:
            await ws.send(msgpack.packb({"t": "hello", "v": 2, "kind": "native", "slots": 1}))
            welcome = decode(await ws.recv())
            assert welcome["t"] == "welcome", welcome
            return int(welcome["session"])

    try:
        sessions = [aio.run(hello(f"{ATTACKER_NET}.{i}, 198.51.{i}.7")) for i in (1, 2)]
    finally:
        proxy.stop()
        platform.stop()
    origins = set(WorkerSession.objects.filter(pk__in=sessions).values_list("origin", flat=True))
    assert origins == {"127.0.0.0/24"}
