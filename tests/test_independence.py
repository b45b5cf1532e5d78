"""Replicas of a task go to independent volunteers: distinct users, sessions, network origins and
browser profiles; the client address behind a trusted proxy; the per-origin caps; quorums of
dependent results never decide a task nor outvote anyone."""

from __future__ import annotations

import msgpack
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from campaigns.models import Result, Task
from ccgsc.asgi import application
from rewards import validation
from tests.conftest import ok_item as ok
from workers import identity, protocol, scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo

V = Result.Validation


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()


@pytest.fixture
def anon(db):
    """An anonymous session from a network origin / browser profile: anon(origin, profile)."""

    def make(origin=None, profile=None, user=None):
        s = WorkerSession.objects.create(kind="browser", origin=origin, profile=profile, user=user)
        return SessionInfo(
            id=s.pk, kind="browser", js=True, user_id=s.user_id, origin=origin, profile=profile
        )

    return make


# --- the client's address and network origin ----------------------------------------------------


def test_client_address_trusts_forwarded_for_only_from_listed_proxies(settings):
    settings.TRUSTED_PROXY_ADDRESSES = ["10.0.0.0/8", "::1"]
    # An untrusted peer: its own address, whatever it claims.
    assert identity.client_address("198.51.100.7", ["203.0.113.9"]) == "198.51.100.7"
    # A trusted proxy: the rightmost hop that is not a trusted proxy itself. The leftmost
    # entries are the client's own claims and are ignored.
    assert identity.client_address("10.1.2.3", ["1.2.3.4, 203.0.113.9, 10.9.9.9"]) == (
        "203.0.113.9"
    )
    assert identity.client_address("::1", ["203.0.113.9"]) == "203.0.113.9"
    # A proxy that forwarded nothing, or garbage: never a made-up address.
    assert identity.client_address("10.1.2.3", []) == "10.1.2.3"
    assert identity.client_address("10.1.2.3", ["not-an-ip"]) is None
    settings.TRUSTED_PROXY_ADDRESSES = []
    assert identity.client_address("10.1.2.3", ["203.0.113.9"]) == "10.1.2.3"


def test_network_origin_is_a_prefix_by_settings(settings):
    assert identity.network_origin("203.0.113.77") == "203.0.113.0/24"
    assert identity.network_origin("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert identity.network_origin("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert identity.network_origin(None) is None and identity.network_origin("x") is None
    settings.CCGSC = {**settings.CCGSC, "ORIGIN_PREFIX_V4": 32, "ORIGIN_PREFIX_V6": 64}
    assert identity.network_origin("203.0.113.77") == "203.0.113.77/32"
    assert identity.network_origin("2001:db8:1234:5678::1") == "2001:db8:1234:5678::/64"


def test_malformed_trusted_proxies_refuse_to_start():
    from tests.test_settings import start

    result = start(TRUSTED_PROXY_ADDRESSES="10.0.0.0/8,proxy.example")
    assert result.returncode != 0
    assert "TRUSTED_PROXY_ADDRESSES must list IP addresses or networks" in result.stderr


def test_contribute_page_gives_the_browser_a_lasting_profile_cookie(client, db):
    first = client.get("/contribute/")
    cookie = first.cookies[identity.PROFILE_COOKIE]
    assert cookie["httponly"] and int(cookie["max-age"]) >= 365 * 24 * 3600
    # Kept, not replaced, on the next visit.
    assert identity.PROFILE_COOKIE not in client.get("/contribute/").cookies


# --- leasing -------------------------------------------------------------------------------------


def test_sessions_from_one_network_never_share_a_task(make_campaign, anon):
    make_campaign(["a", "b", "c"], min_quorum=2, target_replicas=2)
    tab1, tab2 = anon("203.0.113.0/24", "p1"), anon("203.0.113.0/24", "p2")
    assert len(scheduler.lease(tab1, 10)) == 3
    # Another socket, another profile, same network: nothing (every task has its replica there).
    assert scheduler.lease(tab2, 10) == []
    elsewhere = anon("198.51.100.0/24", "p3")
    assert len(scheduler.lease(elsewhere, 10)) == 3


def test_one_browser_profile_never_gets_two_replicas(make_campaign, anon):
    make_campaign(["a"], min_quorum=2, target_replicas=2)
    assert len(scheduler.lease(anon("203.0.113.0/24", "same"), 1)) == 1
    assert scheduler.lease(anon("198.51.100.0/24", "same"), 1) == []
    assert len(scheduler.lease(anon("198.51.100.0/24", "other"), 1)) == 1


def test_an_answered_replica_still_keeps_its_origin_away(make_campaign, anon):
    make_campaign(["a"], min_quorum=2, target_replicas=3)
    first = anon("203.0.113.0/24")
    (lease,) = scheduler.lease(first, 1)
    scheduler.submit_results(first, [ok(lease, b"42")])
    assert scheduler.lease(anon("203.0.113.0/24"), 1) == []


def test_unknown_origins_do_not_collide(make_campaign, anon):
    """No origin (a test client, an unknown peer) is not "the same origin" as another."""
    make_campaign(["a"], min_quorum=2, target_replicas=2)
    assert len(scheduler.lease(anon(), 1)) == 1
    assert len(scheduler.lease(anon(), 1)) == 1


def test_quorum_can_require_a_signed_in_volunteer(make_campaign, anon, people):
    c = make_campaign(["a"], min_quorum=2, target_replicas=3, quorum_needs_account=True)
    a = anon("203.0.113.0/24")
    (la,) = scheduler.lease(a, 1)
    # Anonymous sessions fill quorum - 1 places; the rest waits for an account.
    assert scheduler.lease(anon("198.51.100.0/24"), 1) == []
    member = anon("192.0.2.0/24", user=people.outsider)
    (lm,) = scheduler.lease(member, 1)
    scheduler.submit_results(a, [ok(la, b"42")])
    scheduler.submit_results(member, [ok(lm, b"42")])
    task = Task.objects.get(campaign=c)
    assert task.state == Task.State.DONE
    r = Result.objects.get(pk=lm.lease)
    assert (r.basis, r.agreed_with) == (Result.Basis.QUORUM, 1)


def test_replicas_are_stamped_with_origin_and_profile_and_release_clears_them(make_campaign, anon):
    make_campaign(["a"], min_quorum=2, target_replicas=2)
    s = anon("203.0.113.0/24", "prof")
    (lease,) = scheduler.lease(s, 1)
    r = Result.objects.get(pk=lease.lease)
    assert (r.origin, r.profile) == ("203.0.113.0/24", "prof")
    scheduler.release(s.id)
    r.refresh_from_db()
    assert (r.state, r.origin, r.profile) == (Result.State.UNSENT, None, None)


# --- the per-origin fair share --------------------------------------------------------------------

NET = "203.0.113.0/24"


def _held(origin: str) -> int:
    return Result.objects.filter(state=Result.State.LEASED, origin=origin).count()


def test_many_sockets_of_one_network_hold_one_sessions_share(make_campaign, anon, settings):
    """Eight sockets from one /24 (eight browser profiles), each asking for a new session's
    allowance on a replicated campaign, hold together what one session may: more sockets do
    not buy a network a larger share of the replicas. Another network's one session still
    gets its own share, and the network's share frees up as it returns results."""
    make_campaign([str(i) for i in range(40)], min_quorum=2, target_replicas=2)
    start = int(settings.CCGSC["LEASE_ALLOWANCE_START"])
    tabs = [anon(NET, f"tab-{i}") for i in range(8)]
    got = [scheduler.lease(tab, start) for tab in tabs]
    assert sum(len(g) for g in got) == _held(NET) == start  # without the share: 8 x start
    assert len(scheduler.lease(anon("198.51.100.0/24", "honest"), start)) == start
    first = next(i for i, g in enumerate(got) if g)
    scheduler.submit_results(tabs[first], [ok(x, b"42") for x in got[first]])
    assert _held(NET) == start - len(got[first])
    assert len(scheduler.lease(tabs[-1], start)) == len(got[first])
    assert _held(NET) == start


def test_one_session_of_its_network_is_never_held_back(make_campaign, anon, settings):
    """The share is what one session may hold: alone on its network, a session gets what it
    asks for (its connection bounds it by its allowance), however much it holds already."""
    make_campaign([str(i) for i in range(40)], min_quorum=2, target_replicas=2)
    alone = anon(NET, "only")
    assert len(scheduler.lease(alone, 2)) == 2
    assert len(scheduler.lease(alone, 3)) == 3
    assert len(scheduler.lease(alone, 16)) == 16
    assert _held(NET) == 21


def test_the_bulk_feed_keeps_the_origins_share(make_campaign, anon, settings):
    """The dispatcher's lease_many (waiting sessions fed together) is bound by it too."""
    make_campaign([str(i) for i in range(40)], min_quorum=2, target_replicas=2)
    start = int(settings.CCGSC["LEASE_ALLOWANCE_START"])
    tabs = [anon(NET, f"tab-{i}") for i in range(8)]
    honest = anon("198.51.100.0/24", "honest")
    requests = [scheduler.LeaseRequest(session=s, n=start) for s in [*tabs, honest]]
    got = scheduler.lease_many(requests)
    assert sum(len(got.get(t.id, ([], {}))[0]) for t in tabs) == _held(NET) == start
    assert len(got[honest.id][0]) == start


@pytest.mark.parametrize(
    ("overrides", "quorum", "held"),
    [
        ({"ORIGIN_LEASE_SHARE": 2}, 2, 2 * 4),  # a documented multiple of one session's
        ({"ORIGIN_LEASE_SHARE": 0}, 2, 8 * 4),  # switched off
        ({"MAX_SESSIONS_PER_ORIGIN": 0}, 2, 8 * 4),  # load tests from one machine
        ({}, 1, 8 * 4),  # one replica per task: nothing for sockets to agree on
    ],
)
def test_origin_share_settings(make_campaign, anon, settings, overrides, quorum, held):
    settings.CCGSC = {**settings.CCGSC, "LEASE_ALLOWANCE_START": 4, **overrides}
    make_campaign([str(i) for i in range(40)], min_quorum=quorum, target_replicas=quorum)
    tabs = [anon(NET, f"tab-{i}") for i in range(8)]
    assert sum(len(scheduler.lease(tab, 4)) for tab in tabs) == _held(NET) == held


# --- deciding ------------------------------------------------------------------------------------


def _replica(rid, sha, *, user=None, session=None, origin=None, profile=None):
    return validation.Replica(
        rid, Result.State.RETURNED, Result.Outcome.SUCCESS, V.PENDING, user, session, None, sha,
        origin, profile,
    )  # fmt: skip


def test_dependent_results_count_once_and_outvote_nobody():
    policy = validation.Policy(1, min_quorum=2, max_total_replicas=10, has_verifier=False)
    honest = _replica(1, "right", session=1, origin="198.51.100.0/24")
    # Two sockets of one attacker: distinct sessions and profiles, one network.
    c1 = _replica(2, "wrong", session=2, origin="203.0.113.0/24", profile="a")
    c2 = _replica(3, "wrong", session=3, origin="203.0.113.0/24", profile="b")
    task = validation.TaskView(1, 1, 0, None, [honest, c1, c2])
    d = validation.decide(task, policy, {1: "right", 2: "wrong", 3: "wrong"})
    assert d.canonical is None and d.invalid == [] and d.new_replicas == 1
    # An independent volunteer agreeing with the honest one decides it; the attacker's two
    # results are outvoted by two independent volunteers and are invalid.
    other = _replica(4, "right", session=4, origin="192.0.2.0/24")
    task.replicas.append(other)
    d = validation.decide(task, policy, {1: "right", 2: "wrong", 3: "wrong", 4: "right"})
    assert d.canonical == 1 and d.valid == [1, 4] and d.invalid == [2, 3]
    assert (d.basis, d.agreed_with, d.corroborated) == (Result.Basis.QUORUM, 1, {1, 4})


def test_one_user_on_two_networks_is_still_one_volunteer():
    policy = validation.Policy(1, min_quorum=2, max_total_replicas=10, has_verifier=False)
    a = _replica(1, "x", user=7, session=1, origin="198.51.100.0/24")
    b = _replica(2, "x", user=7, session=2, origin="192.0.2.0/24")
    d = validation.decide(validation.TaskView(1, 1, 0, None, [a, b]), policy, {1: "x", 2: "x"})
    assert d.canonical is None and d.new_replicas == 1


# --- sessions: origin, profile and caps at the ASGI boundary -------------------------------------


def _from(peer: str):
    """The ASGI application as seen from a socket whose peer is `peer`."""

    async def app(scope, receive, send):
        return await application({**scope, "client": (peer, 40000)}, receive, send)

    return app


async def _hello(peer: str, forwarded: str | None = None, slots: int = 1):
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    headers.append((b"cookie", b"ccgsc_profile=browser-one"))
    comm = WebsocketCommunicator(_from(peer), "/ws/work/", headers=headers)
    connected, _ = await comm.connect(timeout=30)
    assert connected
    await comm.send_to(
        bytes_data=protocol.encode({"t": "hello", "v": 1, "kind": "native", "slots": slots})
    )
    reply = msgpack.unpackb(await comm.receive_from(5), raw=False)
    return comm, reply


@pytest.mark.django_db(transaction=True)
async def test_websocket_session_records_origin_behind_a_trusted_proxy(settings):
    settings.TRUSTED_PROXY_ADDRESSES = ["127.0.0.1"]
    comm, welcome = await _hello("127.0.0.1", "203.0.113.9")
    assert welcome["t"] == "welcome"
    session = await sync_to_async(WorkerSession.objects.get)(pk=welcome["session"])
    assert session.origin == "203.0.113.0/24"
    assert session.profile == identity.profile_key("browser-one")
    assert session.lease_allowance == settings.CCGSC["LEASE_ALLOWANCE_START"]
    await comm.disconnect()
    # The same header from a peer that is not a trusted proxy is ignored.
    comm, welcome = await _hello("198.51.100.20", "203.0.113.9")
    session = await sync_to_async(WorkerSession.objects.get)(pk=welcome["session"])
    assert session.origin == "198.51.100.0/24"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_sessions_and_slots_per_origin_are_capped(settings):
    settings.CCGSC = {**settings.CCGSC, "MAX_SESSIONS_PER_ORIGIN": 2, "MAX_SLOTS_PER_ORIGIN": 5}
    a, wa = await _hello("203.0.113.1", slots=4)
    b, wb = await _hello("203.0.113.2", slots=4)
    assert wa["t"] == wb["t"] == "welcome"
    slots = await sync_to_async(
        lambda: sorted(WorkerSession.objects.values_list("slots", flat=True))
    )()
    assert slots == [1, 4]  # the second got what was left of the origin's five
    c, refused = await _hello("203.0.113.3")
    assert refused["t"] == "error" and refused["code"] == "busy" and refused["fatal"]
    # Another network is not affected; a closed session frees its place.
    d, other = await _hello("198.51.100.1")
    assert other["t"] == "welcome"
    await a.disconnect()
    e, again = await _hello("203.0.113.4")
    assert again["t"] == "welcome"
    for comm in (b, c, d, e):
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_no_cap_when_the_setting_is_zero(settings):
    settings.CCGSC = {**settings.CCGSC, "MAX_SESSIONS_PER_ORIGIN": 0, "MAX_SLOTS_PER_ORIGIN": 0}
    comms = []
    for i in range(4):
        comm, welcome = await _hello(f"203.0.113.{i + 1}", slots=200)
        assert welcome["t"] == "welcome"
        comms.append(comm)
    for comm in comms:
        await comm.disconnect()


async def _socket(forwarded: str, profile: str, n: int) -> tuple[WebsocketCommunicator, int]:
    """A session from `forwarded` (through a trusted proxy) that asks for n tasks: the
    communicator and how many tasks it was sent."""
    headers = [
        (b"x-forwarded-for", forwarded.encode()),
        (b"cookie", f"ccgsc_profile={profile}".encode()),
    ]
    comm = WebsocketCommunicator(_from("127.0.0.1"), "/ws/work/", headers=headers)
    connected, _ = await comm.connect(timeout=30)
    assert connected
    await comm.send_to(
        bytes_data=protocol.encode({"t": "hello", "v": 2, "kind": "native", "slots": n})
    )
    assert msgpack.unpackb(await comm.receive_from(5), raw=False)["t"] == "welcome"
    await comm.send_to(bytes_data=protocol.encode({"t": "want", "n": n}))
    reply = msgpack.unpackb(await comm.receive_from(5), raw=False, strict_map_key=False)
    assert reply["t"] in ("tasks", "idle")
    return comm, len(reply.get("tasks") or [])


@pytest.mark.django_db(transaction=True)
async def test_sockets_of_one_network_share_one_allowance_over_the_protocol(
    settings, make_campaign
):
    """The same through real sessions: eight sockets of one network, each claiming 16 slots,
    are sent one session's allowance between them; another network's one session its own."""
    settings.TRUSTED_PROXY_ADDRESSES = ["127.0.0.1"]
    start = int(settings.CCGSC["LEASE_ALLOWANCE_START"])
    await sync_to_async(make_campaign)([str(i) for i in range(40)], min_quorum=2, target_replicas=2)
    comms, sent = [], 0
    for i in range(8):
        comm, n = await _socket(f"203.0.113.{i + 1}", f"tab-{i}", 16)
        comms.append(comm)
        sent += n
    assert sent == start  # without the share: 8 x start
    assert await sync_to_async(_held)(NET) == start
    comm, n = await _socket("198.51.100.7", "honest", 16)
    comms.append(comm)
    assert n == start
    for comm in comms:
        await comm.disconnect()
