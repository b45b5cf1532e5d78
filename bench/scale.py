"""Scale benchmarks (PostgreSQL and Redis from DATABASE_URL and REDIS_URL; `make bench` runs
`python -m bench scale`, which records the section in docs/benchmarks.md).

    python -m bench.scale                       # the whole section, recorded
    python -m bench.scale idle 2000 5000 [--before REV] [--idle-seconds S] [--ping]
        [--pong-spread MS]
    python -m bench.scale visitors 10000        # distinct visitors, default per-origin caps
    python -m bench.scale churn                 # Panther's visitor churn
    python -m bench.scale lease 2000 5000       # the lease statement alone, bulk vs per session
    python -m bench.scale cluster 20000 [--processes 2] [--idle-seconds S] [--no-ping]
    python -m bench.scale working 10000 1000 [--tasks T]

idle N: N WebSocket sessions (asyncio clients in a separate process, one task each, all from
127.0.0.1, so the server runs with MAX_SESSIONS_PER_ORIGIN=0 and MAX_SLOTS_PER_ORIGIN=0) say
hello and want one task, and are told idle. Measured: connect rate, the server's memory per
session (RSS growth / N), its CPU while all N sit idle, and the time from the campaign start
until every session has its first task. With --before REV, the same runs are made first with
the server code of commit REV (git archive into a temporary directory), side by side. The
clients send WebSocket pings as that tree's native worker does; with --ping they also keep the
protocol's heartbeat as real workers do (bench/keepalive.py: they answer the server's pings,
or, with a server that sends none, ping every `heartbeat` of `welcome`), and the idle window
starts once every session is in that rhythm (the server's keepalive interval after the last
handshake). With --pong-spread MS each client sends its pong after a random delay of up to MS
milliseconds, as workers on real networks answer a batch of the server's pings over their
spread of round trips (on loopback they all answer at once).

visitors N: as idle, but each client comes from its own network (X-Forwarded-For through a
trusted proxy address, TRUSTED_PROXY_ADDRESSES=127.0.0.1), and the per-origin caps keep their
defaults: how many of N distinct visitors a real deployment lets in.

churn: a constant population of visitors (simulated protocol clients, 1 slot each, "running"
each task for TASK_MS) completes a campaign of CHURN_TASKS tasks, first with nobody leaving
(steady), then with each visitor leaving after a Weibull dwell time (shape 0.5, 0.75, 1.0,
mean CHURN_MEAN_DWELL s) by closing its TCP connection abruptly, mid-task, and a new visitor
(a new network, a new session) taking its seat at once. Measured: makespan against steady,
tasks lost (not done when it ends) and double-counted (more than one valid result).

cluster N: as idle, but N sessions across --processes daphne processes (2 by default) on the
same database and Redis, the clients split evenly over them (at most CLIENTS_PER_PROCESS
sessions per client process, each client process on one server). The clients keep the protocol's
heartbeat as real workers do (with --no-ping they do not, as idle's clients). Measured per
server process and overall: connect rate, memory per session, idle CPU, and the time from the
campaign start (one campaign of N tasks, started in the bench process) until every session of
every process has work.

working N: N simulated protocol workers (1 slot each, fed as the native worker is: `want` =
room up to 4 frames, results batched and paced by acks, each task "running" WORKING_TASK_MS)
connected to one daphne process, then a campaign of --tasks tasks (5 per session by default,
WORKING_TASKS_PER_SESSION) started and run to completion. Measured: the server process's CPU
seconds / tasks completed (and the benchmark database's PostgreSQL backends' likewise), tasks/s
over the makespan, tasks lost and double-counted, and when the last session got its first task.

The benchmark database is `<DATABASE_URL's name>_bench` on the same server (dropped and created
afresh); Redis is REDIS_URL as given. ulimit -n is raised to the hard limit in every process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

IDLE_SECONDS = 20.0
START, END = "<!-- bench:scale:start -->", "<!-- bench:scale:end -->"
CHURN_VISITORS = 40
# Tasks long enough that the makespan is the visitors' time, not the server's CPU on a shared
# machine (40 visitors x 1 task/s is a tenth of what one process serves here).
CHURN_TASKS = 1200
TASK_MS = 1000
CHURN_MEAN_DWELL = 30.0
CHURN_SHAPES = (0.5, 0.75, 1.0)
CHURN_BOUND = 240.0  # seconds: a run that has not completed by then counts what is left as lost


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def visitor_address(n: int) -> str:
    """The n-th visitor's address (n < 65,536), each in its own /24: its own network origin."""
    return f"10.{(n >> 8) & 255}.{n & 255}.1"


# --- the idle clients' process ------------------------------------------------------------------


# Handshakes in flight at once: the clients come as fast as the server takes them (a burst of
# thousands would only measure daphne's handshake timeout on a loaded machine).
IN_FLIGHT = 200
FED_BOUND = 120.0


async def _client(
    url: str,
    n: int,
    distinct: bool,
    connected: list[float],
    fed: list[float],
    gate: asyncio.Event,
    opening: asyncio.Semaphore,
    ping: float,
    heartbeat: bool = False,
    spread: float = 0.0,
) -> None:
    import msgpack
    import websockets

    from bench.keepalive import Heartbeat
    from workers import protocol

    headers = {"X-Forwarded-For": visitor_address(n)} if distinct else None
    async with opening:
        # WebSocket pings as a native worker's (bench.platform.native_keepalive; 0: none).
        ws = await websockets.connect(
            url,
            max_size=protocol.MAX_FRAME,
            open_timeout=120,
            additional_headers=headers,
            ping_interval=ping or None,
            ping_timeout=protocol.PING_TIMEOUT,
        )
        hello = {"t": "hello", "v": 1, "kind": "native", "slots": 1, "agent": "scale"}
        if heartbeat:
            hello["pongs"] = True
        await ws.send(msgpack.packb(hello))
        welcome = msgpack.unpackb(await ws.recv(), raw=False, strict_map_key=False)
        if welcome["t"] != "welcome":
            await ws.close()
            raise RuntimeError(f"refused: {welcome.get('code')}: {welcome.get('message')}")
    keepalive = Heartbeat(ws, welcome["limits"], spread=spread) if heartbeat else None
    pinger = asyncio.create_task(keepalive.run()) if keepalive is not None else None
    fed_yet = asyncio.Event()

    async def read() -> None:
        # All along (a server's ping gets its pong while the session waits at the gate too).
        async for frame in ws:
            msg = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            if keepalive is not None:
                await keepalive.message(msg)
            if msg["t"] == "tasks" and not fed_yet.is_set():
                fed.append(time.time())
                fed_yet.set()

    async with ws:
        reader = asyncio.create_task(read())
        await ws.send(msgpack.packb({"t": "want", "n": 1}))
        connected.append(time.time())
        await asyncio.wait(
            [reader, asyncio.create_task(fed_yet.wait())], return_when="FIRST_COMPLETED"
        )
        if reader.done():
            reader.result()  # the connection closed before work came: its error
        await gate.wait()
        for task in (pinger, reader):
            if task is not None:
                task.cancel()


async def _clients(
    url: str,
    n: int,
    distinct: bool,
    ping: float,
    heartbeat: bool = False,
    in_flight: int = IN_FLIGHT,
    spread: float = 0.0,
) -> None:
    connected: list[float] = []
    fed: list[float] = []
    gate = asyncio.Event()
    start = time.time()
    opening = asyncio.Semaphore(in_flight)
    tasks = [
        asyncio.create_task(
            _client(url, i, distinct, connected, fed, gate, opening, ping, heartbeat, spread)
        )
        for i in range(n)
    ]
    # A coarse wait on n clients' progress (lists they fill), good enough for a bench.
    while len(connected) + sum(t.done() for t in tasks) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
    refused = sum("refused" in str(e) for e in failed)
    example = (
        f"{refused} refused by the server, {len(failed) - refused} lost, e.g. {failed[-1]!r}"[:240]
        if failed
        else ""
    )
    seconds = (max(connected) - start) if connected else 0.0
    print(
        json.dumps(
            {
                "connected": len(connected),
                "seconds": seconds,
                "failed": len(failed),
                "e": example,
                "start": start,
                "last_connected": max(connected) if connected else start,
            }
        ),
        flush=True,
    )
    # Bounded: sessions still without work FED_BOUND s after the first got some are reported
    # as such (fed < connected) rather than waited for.
    while len(fed) < len(connected) and not all(t.done() for t in tasks):
        if fed and time.time() - min(fed) > FED_BOUND:
            break
        await asyncio.sleep(0.05)
    print(json.dumps({"fed": len(fed), "last": max(fed) if fed else None}), flush=True)
    sys.stdin.readline()
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class Bench:
    env: dict[str, str]
    admin_url: str
    database: str


def bench_setup() -> Bench:
    """The benchmark's environment and a fresh database on DATABASE_URL's server."""
    import psycopg

    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not database_url or not redis_url:
        raise SystemExit("bench.scale needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    parts = urlsplit(database_url)
    database = parts.path.lstrip("/") + "_bench"
    bench_url = parts._replace(path=f"/{database}").geturl()
    admin_url = parts._replace(path="/postgres").geturl()
    from bench import platform as bp

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH", "REDIS_URL")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "ccgsc.settings",
            "PYTHONPATH": str(bp.ROOT),
            "LOG_LEVEL": "WARNING",
            "JOBS_INLINE": "true",
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + "x" * 40,
            "DATABASE_URL": bench_url,
            "REDIS_URL": redis_url,
        }
    )
    bp.setup_django(env)
    return Bench(env=env, admin_url=admin_url, database=database)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _campaign(n: int, name: str) -> int:
    """A no-op campaign of n tasks, created and filled, not started; returns its id."""
    from accounts.models import Organization
    from bench.platform import ROOT
    from campaigns import services
    from campaigns.inputs import TaskSpec

    org, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    k = services.kernel_upload(
        organization=org, name="noop", data=(ROOT / "kernels/build/noop.wasm").read_bytes()
    )
    c = services.campaign_create(organization=org, name=name, kernel=k, approved=True)
    services.tasks_add(campaign=c, specs=(TaskSpec(input=b"") for _ in range(n)))
    return c.pk


def _start(campaign_id: int) -> float:
    from campaigns import services
    from campaigns.models import Campaign

    t0 = time.time()
    services.campaign_start(campaign=Campaign.objects.get(pk=campaign_id))
    return t0


def _cancel(campaign_id: int) -> None:
    from campaigns import services
    from campaigns.models import Campaign

    services.campaign_cancel(campaign=Campaign.objects.get(pk=campaign_id))


def _server(b: Bench, root: Path | None = None, *daphne_args: str, **env: str) -> Any:
    from bench import platform as bp
    from ccgsc.processes import start_platform

    server_env = {**b.env, **env}
    if root is not None:
        server_env["PYTHONPATH"] = str(root)
    return start_platform(server_env, timeout=120, root=root or bp.ROOT, daphne_args=daphne_args)


def idle_run(
    b: Bench,
    n: int,
    *,
    root: Path | None = None,
    distinct: bool = False,
    idle_seconds: float,
    heartbeat: bool = False,
    pong_spread: float = 0.0,
) -> dict[str, Any]:
    """n idle sessions on one server process, then a campaign of n tasks started (`heartbeat`:
    the clients keep the protocol's heartbeat as real workers do, bench/keepalive.py, each
    pong delayed up to `pong_spread` s; the idle window then starts once it is in its steady
    rhythm)."""
    caps = (
        {"TRUSTED_PROXY_ADDRESSES": "127.0.0.1"}
        if distinct
        else {"MAX_SESSIONS_PER_ORIGIN": "0", "MAX_SLOTS_PER_ORIGIN": "0"}
    )
    from bench import platform as bp

    # An earlier commit's server runs with the keepalive it had then (daphne's default pings
    # every 20 s) if it predates workers.protocol.PING_INTERVAL; the clients ping as that
    # commit's native worker.
    old_keepalive = (
        root is not None and "PING_INTERVAL" not in (root / "workers/protocol.py").read_text()
    )
    ping = bp.native_keepalive(root or bp.ROOT) or 0.0
    server = _server(
        b,
        root,
        *(("--ping-interval", "20", "--ping-timeout", "30") if old_keepalive else ()),
        **caps,
    )
    cid: int | None = None
    try:
        rss0 = _rss_kib(server.proc.pid)
        url = server.url.replace("http", "ws") + "/ws/work/"
        clients = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.scale", "--clients", url, str(n)),
                *(str(int(distinct)), str(ping), str(int(heartbeat)), str(IN_FLIGHT)),
                str(pong_spread),
            ],
            env=b.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert clients.stdout is not None and clients.stdin is not None
        conn_info: dict[str, Any] = json.loads(clients.stdout.readline())
        time.sleep(2)  # the last handshakes' garbage settles before memory is read
        rss = _rss_kib(server.proc.pid)
        if heartbeat:
            _until_steady()
        cpu0 = _cpu(server.proc.pid)
        time.sleep(idle_seconds)
        idle_cpu = (_cpu(server.proc.pid) - cpu0) / idle_seconds
        cid = _campaign(n, f"idle {n}")
        t0 = _start(cid)
        fed: dict[str, Any] = json.loads(clients.stdout.readline())
        clients.stdin.write("\n")
        clients.stdin.flush()
        clients.wait(120)
    finally:
        server.stop()
        if cid is not None:
            _cancel(cid)  # its leases went back with the clients: no work left for the next run
        _forget_sessions()
    return {
        "n": n,
        **conn_info,
        "kib": (rss - rss0) / max(conn_info["connected"], 1),
        "idle_cpu": idle_cpu,
        "fed": fed["fed"],
        "last": fed["last"] - t0 if fed["last"] else None,
    }


def _until_steady() -> None:
    """Wait, after the last handshake, until every session keeps its heartbeat in its steady
    rhythm: pinging at its pace, or pinged by the server once silent PING_INTERVAL (plus its
    check's second)."""
    from workers.protocol import PING_INTERVAL, WEBSOCKET_HEARTBEAT

    time.sleep(max(WEBSOCKET_HEARTBEAT, PING_INTERVAL + 2))


def _forget_sessions() -> None:
    """Mark the stopped server's sessions disconnected: the next run's sweeper would otherwise
    close them, 500 every 2 s, during that run's idle window (its CPU is not idle sessions')."""
    from django.utils import timezone

    from workers.models import WorkerSession

    WorkerSession.objects.filter(disconnected_at__isnull=True).update(
        disconnected_at=timezone.now()
    )


def _cpu(pid: int) -> float:
    from bench import platform as bp

    return bp.cpu_seconds(pid)


def idle_row(label: str, r: dict[str, Any]) -> str:
    last = f"{r['last']:.1f} s" if r["last"] is not None else "n/a"
    failed = f"; {r['failed']} failed ({r['e']})" if r["failed"] else ""
    rate = r["connected"] / r["seconds"] if r["seconds"] else 0.0
    return (
        f"| {label} | {r['n']:,} | {r['connected']:,} in {r['seconds']:.1f} s ({rate:,.0f}/s)"
        f"{failed} | {r['kib']:.0f} KiB | {r['idle_cpu'] * 100:.1f} % of a core"
        f" | {last} ({r['fed']:,} fed) |"
    )


IDLE_HEADER = [
    "| server | idle sessions | connected | server memory per session | idle server CPU"
    " | campaign start until every session has work |",
    "|---|---|---|---|---|---|",
]


def before_root(rev: str, tmp: Path) -> Path:
    """The code of commit `rev`, unpacked into tmp (for a side-by-side "before")."""
    import io
    import shutil
    import tarfile

    from bench.platform import ROOT

    git = shutil.which("git")
    if git is None:
        raise SystemExit("--before needs git")
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


# --- churn ---------------------------------------------------------------------------------------


@dataclass
class ChurnStats:
    visits: int = 0
    left: int = 0  # visitors who left abruptly
    aborted: int = 0  # tasks running or queued in a visitor when it left
    results: int = 0
    errors: int = 0


async def _visitor(
    url: str, address: str, dwell: float, stop: asyncio.Event, stats: ChurnStats
) -> None:
    import msgpack
    import websockets

    from workers import protocol

    async with websockets.connect(
        url, max_size=protocol.MAX_FRAME, additional_headers={"X-Forwarded-For": address}
    ) as ws:
        stats.visits += 1
        hello = {"t": "hello", "v": 1, "kind": "native", "slots": 1, "agent": "churn"}
        await ws.send(msgpack.packb(hello))
        msgpack.unpackb(await ws.recv())
        await ws.send(msgpack.packb({"t": "want", "n": 2}))
        queue: deque[int] = deque()
        ready = asyncio.Event()

        async def receive() -> None:
            async for raw in ws:
                msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
                if msg["t"] == "tasks":
                    queue.extend(t["lease"] for t in msg["tasks"])
                    ready.set()
                elif msg["t"] == "cancel":
                    for lease in msg["leases"]:
                        if lease in queue:
                            queue.remove(lease)

        async def run() -> None:
            while True:
                await ready.wait()
                if not queue:
                    ready.clear()
                    continue
                lease = queue[0]
                await asyncio.sleep(TASK_MS / 1000)  # the kernel "runs"
                if queue and queue[0] == lease:
                    queue.popleft()
                    item = {"lease": lease, "ok": True, "output": b"", "exit": 0, "ms": TASK_MS}
                    await ws.send(msgpack.packb({"t": "result", "results": [item], "want": 1}))
                    stats.results += 1

        jobs = [asyncio.create_task(receive()), asyncio.create_task(run())]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [*jobs, stopping], timeout=dwell, return_when="FIRST_COMPLETED"
        )
        for job in [*jobs, stopping]:
            job.cancel()
        if not done:  # the dwell time is over: gone, mid-task, no goodbye
            stats.left += 1
            stats.aborted += len(queue)
            assert ws.transport is not None
            ws.transport.abort()


async def _population(
    url: str, shape: float | None, stop: asyncio.Event, stats: ChurnStats, seed: int
) -> None:
    rng = random.Random(seed)
    scale = CHURN_MEAN_DWELL / math.gamma(1 + 1 / shape) if shape else 0.0
    counter = iter(range(1, 1 << 16))

    async def seat() -> None:
        while not stop.is_set():
            dwell = rng.weibullvariate(scale, shape) if shape else math.inf
            try:
                await _visitor(url, visitor_address(next(counter)), dwell, stop, stats)
            except Exception:
                stats.errors += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(seat() for _ in range(CHURN_VISITORS)))


async def _churn_run(url: str, shape: float | None, cid: int, seed: int) -> dict[str, Any]:
    from campaigns.models import Campaign

    stats = ChurnStats()
    stop = asyncio.Event()
    population = asyncio.create_task(_population(url, shape, stop, stats, seed))
    # Every seat connected and idle before the start, as in the steady case.
    while stats.visits < CHURN_VISITORS:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    t0 = await asyncio.to_thread(_start, cid)
    started = time.monotonic()
    while time.monotonic() - started < CHURN_BOUND:
        c = await asyncio.to_thread(Campaign.objects.get, pk=cid)
        if c.state == Campaign.State.COMPLETED:
            break
        await asyncio.sleep(0.25)
    stop.set()
    await population
    return {"t0": t0, "stats": stats}


def churn(b: Bench) -> list[str]:
    from django.db.models import Count

    from campaigns.models import Campaign, Result

    server = _server(b, TRUSTED_PROXY_ADDRESSES="127.0.0.1")
    rows: list[str] = []
    steady: float | None = None
    try:
        url = server.url.replace("http", "ws") + "/ws/work/"
        for seed, shape in enumerate((None, *CHURN_SHAPES)):
            cid = _campaign(CHURN_TASKS, f"churn {shape or 'steady'}")
            out = asyncio.run(_churn_run(url, shape, cid, seed))
            c = Campaign.objects.get(pk=cid)
            stats: ChurnStats = out["stats"]
            end = c.finished_at.timestamp() if c.finished_at else None
            makespan = end - out["t0"] if end else float("nan")
            valid = Result.objects.filter(campaign_id=cid, validation=Result.Validation.VALID)
            doubled = valid.values("task").annotate(n=Count("pk")).filter(n__gt=1).count()
            lost = c.tasks_total - c.tasks_done
            if shape is None:
                steady = makespan
            versus = f"{(makespan / steady - 1) * 100:+.0f} %" if shape and steady else "—"
            label = f"Weibull shape {shape}" if shape else "steady (nobody leaves)"
            rows.append(
                f"| {label} | {makespan:.1f} s | {versus} | {stats.visits} visits,"
                f" {stats.left} left mid-task ({stats.aborted} tasks in hand)"
                f" | {lost} | {doubled} |"
            )
            print(rows[-1], flush=True)
    finally:
        server.stop()
    return [
        "| run | makespan | vs steady | visitors | tasks lost | double-counted |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


# --- the lease statement alone -----------------------------------------------------------------


def lease_timing(n: int) -> str:
    """In this process, no server: n waiting sessions leased one task each from a fresh
    campaign, by scheduler.lease_many (one statement) and by one scheduler.lease per session
    (what lease_many did before), best of 3 each."""
    from campaigns.models import Result
    from workers import scheduler
    from workers.models import WorkerSession
    from workers.scheduler import LeaseRequest, SessionInfo

    sessions = [
        SessionInfo(id=s.pk)
        for s in WorkerSession.objects.bulk_create([WorkerSession(kind="native") for _ in range(n)])
    ]
    timings: dict[str, list[float]] = {"bulk": [], "per session": []}
    for _ in range(3):
        for how in timings:
            cid = _campaign(n, f"lease {how} {n}")
            _start(cid)
            scheduler.work_available()
            scheduler.running_campaigns(refresh=True)
            t0 = time.perf_counter()
            if how == "bulk":
                got = scheduler.lease_many([LeaseRequest(session=s, n=1) for s in sessions])
                leased = sum(len(x[0]) for x in got.values())
            else:
                leased = sum(len(scheduler.lease(s, 1)) for s in sessions)
            timings[how].append(time.perf_counter() - t0)
            assert leased == n, (how, leased)
            Result.objects.filter(campaign_id=cid).update(state=scheduler.CANCELLED)
            _cancel(cid)
    bulk, per = min(timings["bulk"]), min(timings["per session"])
    return (
        f"| {n:,} waiting sessions, 1 task each | {bulk * 1000:,.0f} ms"
        f" | {per * 1000:,.0f} ms | {per / bulk:,.0f}x |"
    )


LEASE_HEADER = [
    "| lease for | lease_many (one statement) | one lease per session (before) | ratio |",
    "|---|---|---|---|",
]


# --- several server processes -------------------------------------------------------------------

# Sessions per client process: each holds its sessions' sockets (under the raised ulimit -n) and
# its own event loop; a few processes, not one per thousand sessions, on a two-core machine.
CLIENTS_PER_PROCESS = 5000
CLUSTER_PROCESSES = 2
CLIENT_BOUND = 900.0  # seconds: client processes still running by then are killed


def _spread(n: int, parts: int) -> list[int]:
    return [n // parts + (i < n % parts) for i in range(parts)]


def _client_processes(n: int, servers: int) -> int:
    """How many client processes for n sessions on `servers` servers: at least one per server,
    at most CLIENTS_PER_PROCESS sessions each."""
    return max(servers, math.ceil(n / CLIENTS_PER_PROCESS / servers) * servers)


def _readline(proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    """The client process's next JSON line, or an error once `deadline` (monotonic) passes."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("a client process did not answer in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a client process exited ({proc.poll()})")
    out: dict[str, Any] = json.loads(line)
    return out


def _stop_clients(clients: list[subprocess.Popen[str]]) -> None:
    for c in clients:
        if c.poll() is None and c.stdin is not None:
            try:
                c.stdin.write("\n")
                c.stdin.flush()
            except OSError:
                pass
    for c in clients:
        try:
            c.wait(60)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait(10)


def cluster_run(
    b: Bench,
    n: int,
    *,
    processes: int = CLUSTER_PROCESSES,
    idle_seconds: float,
    heartbeat: bool = True,
) -> dict[str, Any]:
    """n idle sessions across `processes` daphne processes, then a campaign of n tasks
    (`heartbeat`: the clients keep the protocol's heartbeat, as real workers do; the idle
    window then starts once it is in its steady rhythm)."""
    from bench import platform as bp

    caps = {"MAX_SESSIONS_PER_ORIGIN": "0", "MAX_SLOTS_PER_ORIGIN": "0"}
    servers: list[Any] = []
    clients: list[subprocess.Popen[str]] = []
    cid: int | None = None
    deadline = time.monotonic() + CLIENT_BOUND
    try:
        for _ in range(processes):
            servers.append(_server(b, None, **caps))
        rss0 = [_rss_kib(s.proc.pid) for s in servers]
        k = _client_processes(n, processes)
        per_server_in_flight = max(1, IN_FLIGHT * processes // k)
        for i, count in enumerate(_spread(n, k)):
            url = servers[i % processes].url.replace("http", "ws") + "/ws/work/"
            clients.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "bench.scale", "--clients", url, str(count)),
                        *("0", str(bp.native_keepalive() or 0.0), str(int(heartbeat))),
                        str(per_server_in_flight),
                    ],
                    env=b.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        conn_info = [_readline(c, deadline) for c in clients]
        time.sleep(2)  # the last handshakes' garbage settles before memory is read
        rss = [_rss_kib(s.proc.pid) for s in servers]
        if heartbeat:
            _until_steady()
        cpu0 = [_cpu(s.proc.pid) for s in servers]
        time.sleep(idle_seconds)
        idle_cpu = [
            (_cpu(s.proc.pid) - c0) / idle_seconds for s, c0 in zip(servers, cpu0, strict=True)
        ]
        cid = _campaign(n, f"cluster {n}")
        t0 = _start(cid)
        fed = [_readline(c, deadline) for c in clients]
    finally:
        _stop_clients(clients)
        for s in servers:
            s.stop()
        if cid is not None:
            _cancel(cid)
        _forget_sessions()
    connected = [0] * processes
    for i, info in enumerate(conn_info):
        connected[i % processes] += info["connected"]
    total = sum(connected)
    span = max(i["last_connected"] for i in conn_info) - min(i["start"] for i in conn_info)
    failed = sum(i["failed"] for i in conn_info)
    lasts = [f["last"] for f in fed if f["last"]]
    return {
        "n": n,
        "heartbeat": heartbeat,
        "processes": processes,
        "client_processes": k,
        "connected": total,
        "per_process": connected,
        "seconds": span,
        "failed": failed,
        "e": next((i["e"] for i in conn_info if i["e"]), ""),
        "kib": [(r - r0) / max(c, 1) for r, r0, c in zip(rss, rss0, connected, strict=True)],
        "idle_cpu": idle_cpu,
        "idle_seconds": idle_seconds,
        "fed": sum(f["fed"] for f in fed),
        "last": max(lasts) - t0 if lasts else None,
    }


CLUSTER_HEADER = [
    "| server processes | sessions (per process) | connected | server memory per session"
    " | idle CPU per process | campaign start until every session has work |",
    "|---|---|---|---|---|---|",
]


def cluster_row(r: dict[str, Any]) -> str:
    last = f"{r['last']:.1f} s" if r["last"] is not None else "n/a"
    failed = f"; {r['failed']} failed ({r['e']})" if r["failed"] else ""
    rate = r["connected"] / r["seconds"] if r["seconds"] else 0.0
    per = " + ".join(f"{c:,}" for c in r["per_process"])
    kib = ", ".join(f"{k:.0f}" for k in r["kib"])
    cpu = ", ".join(f"{c * 100:.1f} %" for c in r["idle_cpu"])
    return (
        f"| {r['processes']} ({r['client_processes']} client processes) | {r['n']:,} ({per})"
        f" | {r['connected']:,} in {r['seconds']:.1f} s ({rate:,.0f}/s){failed} | {kib} KiB"
        f" | {cpu} of a core ({r['idle_seconds']:.0f} s{'' if r['heartbeat'] else ', no pings'})"
        f" | {last} ({r['fed']:,} fed) |"
    )


# --- sessions working ---------------------------------------------------------------------------

WORKING_TASK_MS = 100  # each simulated task "runs" this long: short, as a browser's may be
# Tasks per session in the campaign (5 x N): more than the first deal (a new session's lease
# allowance, 4), so that every session gets work at the start and then asks for more.
WORKING_TASKS_PER_SESSION = 5
WORKING_BOUND = 600.0  # seconds from the start: what is not done by then counts as lost
RESULT_BATCH, RESULT_DELAY, RESULT_LINGER = 32, 0.003, 0.25  # as workers/native/results.py


@dataclass
class WorkStats:
    connected: int = 0
    failed: int = 0
    tasks: int = 0  # tasks received
    results: int = 0  # results sent
    frames: int = 0  # result frames sent
    acked: int = 0
    ignored: int = 0
    cancelled: int = 0
    first_fed: float = 0.0  # when the last session got its first task (time.time())
    fed: int = 0
    error: str = ""


class _SimWorker:
    """One simulated worker session with 1 slot, fed as workers/native feeds itself: it offers
    room for 4 frames of tasks (the server decides how many it gets from the run times it
    reports), runs them one after another, and sends results in batches (at once at
    RESULT_BATCH, after RESULT_DELAY, or after RESULT_LINGER while more tasks wait), one
    result frame awaiting its ack at a time, each carrying the next `want`."""

    def __init__(self, ws: Any, stats: WorkStats, task_ms: int, keepalive: Any) -> None:
        self.ws, self.stats, self.task_ms = ws, stats, task_ms
        self.keepalive = keepalive  # bench.keepalive.Heartbeat
        self.queue: deque[int] = deque()
        self.ready = asyncio.Event()
        self.results: list[dict[str, Any]] = []
        self.unacked = 0
        self.flush_at: asyncio.TimerHandle | None = None
        self.sending: set[asyncio.Task[None]] = set()

    def want(self) -> int:
        from workers import protocol

        room = 4 * protocol.MAX_BATCH - len(self.queue) - len(self.results)
        return max(0, min(room, protocol.MAX_BATCH))

    def _send(self, msg: dict[str, Any]) -> None:
        import msgpack

        task = asyncio.create_task(self.ws.send(msgpack.packb(msg)))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    def flush(self) -> None:
        self.flush_at = None
        if not self.results or (self.unacked and len(self.results) < 256):
            return  # the ack of the frame in flight flushes these
        chunk, self.results = self.results[:256], self.results[256:]
        want = self.want()
        self._send({"t": "result", "results": chunk, **({"want": want} if want else {})})
        self.unacked += 1
        self.stats.results += len(chunk)
        self.stats.frames += 1

    def flush_soon(self) -> None:
        if len(self.results) >= RESULT_BATCH:
            if self.flush_at is not None:
                self.flush_at.cancel()
            self.flush()
        elif self.flush_at is None:
            delay = RESULT_LINGER if self.queue else RESULT_DELAY
            self.flush_at = asyncio.get_running_loop().call_later(delay, self.flush)

    async def receive(self) -> None:
        import msgpack

        first = True
        async for raw in self.ws:
            msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            await self.keepalive.message(msg)
            if msg["t"] == "tasks":
                if first:
                    first = False
                    self.stats.fed += 1
                    self.stats.first_fed = max(self.stats.first_fed, time.time())
                self.queue.extend(t["lease"] for t in msg["tasks"])
                self.stats.tasks += len(msg["tasks"])
                self.ready.set()
            elif msg["t"] == "ack":
                self.stats.acked += len(msg.get("leases") or ())
                self.stats.ignored += len(msg.get("ignored") or ())
                if msg.get("leases") is not None or msg.get("ignored") is not None:
                    self.unacked = max(0, self.unacked - 1)
                    if self.results:
                        self.flush_soon()
            elif msg["t"] == "cancel":
                for lease in msg["leases"]:
                    if lease in self.queue:
                        self.queue.remove(lease)
                        self.stats.cancelled += 1

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            if not self.queue:
                self.ready.clear()
                continue
            lease = self.queue[0]
            await asyncio.sleep(self.task_ms / 1000)  # the kernel "runs"
            if self.queue and self.queue[0] == lease:
                self.queue.popleft()
                item = {"lease": lease, "ok": True, "output": b"", "exit": 0, "ms": self.task_ms}
                self.results.append(item)
                self.flush_soon()


async def _sim_worker(
    url: str, opening: asyncio.Semaphore, stats: WorkStats, stop: asyncio.Event, task_ms: int
) -> None:
    import msgpack
    import websockets

    from bench.keepalive import Heartbeat
    from bench.platform import native_keepalive
    from workers import protocol

    async with opening:
        ws = await websockets.connect(
            url,
            max_size=protocol.MAX_FRAME,
            open_timeout=120,
            ping_interval=native_keepalive(),  # as the native worker
            ping_timeout=protocol.PING_TIMEOUT,
        )
        hello = {"t": "hello", "v": 2, "kind": "native", "slots": 1, "agent": "scale-working"}
        hello["pongs"] = True
        await ws.send(msgpack.packb(hello))
        welcome = msgpack.unpackb(await ws.recv(), raw=False, strict_map_key=False)
        if welcome["t"] != "welcome":
            await ws.close()
            raise RuntimeError(f"refused: {welcome.get('code')}: {welcome.get('message')}")
    async with ws:
        keepalive = Heartbeat(ws, welcome["limits"])
        worker = _SimWorker(ws, stats, task_ms, keepalive)
        await ws.send(msgpack.packb({"t": "want", "n": worker.want()}))
        stats.connected += 1
        jobs = [
            asyncio.create_task(worker.receive()),
            asyncio.create_task(worker.run()),
            asyncio.create_task(keepalive.run()),
        ]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([*jobs, stopping], return_when="FIRST_COMPLETED")
        for job in [*jobs, stopping]:
            job.cancel()


async def _workers(url: str, n: int, task_ms: int, in_flight: int) -> None:
    """A client process of `working`: n simulated workers; prints a line once all are connected
    (or failed), runs them until a line comes on stdin, then prints their counts."""
    stats = WorkStats()
    stop = asyncio.Event()
    opening = asyncio.Semaphore(in_flight)
    start = time.time()
    tasks = [asyncio.create_task(_sim_worker(url, opening, stats, stop, task_ms)) for _ in range(n)]
    while stats.connected + sum(t.done() for t in tasks) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
    print(
        json.dumps(
            {
                "connected": stats.connected,
                "failed": len(failed),
                "e": repr(failed[-1])[:200] if failed else "",
                "start": start,
                "last_connected": time.time(),
            }
        ),
        flush=True,
    )
    await asyncio.to_thread(sys.stdin.readline)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats.failed = len(failed)
    print(json.dumps(stats.__dict__), flush=True)


def _postgres_cpu(backends: dict[int, float]) -> float:
    """CPU seconds of the PostgreSQL backends serving the benchmark database (this machine's
    server), added into `backends` (pid -> CPU seconds so far) at every look; returns the sum.
    A backend that comes and goes between two looks is not counted."""
    from django.db import connection

    from bench import platform as bp

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        pids = [int(row[0]) for row in cursor.fetchall()]
    for pid in pids:
        try:
            backends[pid] = bp.cpu_seconds(pid)
        except OSError:
            continue
    return sum(backends.values())


def _transactions() -> int:
    """Transactions committed in the benchmark database so far (PostgreSQL's statistics)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def working_run(
    b: Bench, n: int, *, tasks: int | None = None, task_ms: int = WORKING_TASK_MS
) -> dict[str, Any]:
    """n simulated workers on one daphne process, then a campaign of `tasks` tasks run to the
    end: server CPU per task, tasks/s, lost and double-counted."""
    from django.db.models import Count

    from bench import platform as bp
    from campaigns.models import Campaign, Result

    caps = {"MAX_SESSIONS_PER_ORIGIN": "0", "MAX_SLOTS_PER_ORIGIN": "0"}
    server = _server(b, None, **caps)
    clients: list[subprocess.Popen[str]] = []
    deadline = time.monotonic() + CLIENT_BOUND
    stats: list[dict[str, Any]] = []
    tasks = tasks or WORKING_TASKS_PER_SESSION * n
    try:
        cid = _campaign(tasks, f"working {n}")
        bp.settle()
        k = _client_processes(n, 1)
        url = server.url.replace("http", "ws") + "/ws/work/"
        for count in _spread(n, k):
            clients.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "bench.scale", "--workers", url, str(count)),
                        *(str(task_ms), str(max(1, IN_FLIGHT // k))),
                    ],
                    env=b.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        conn_info = [_readline(c, deadline) for c in clients]
        client_cpu0 = sum(_cpu(c.pid) for c in clients)
        backends: dict[int, float] = {}
        pg_cpu0 = _postgres_cpu(backends)
        xact0 = _transactions()
        cpu0 = _cpu(server.proc.pid)
        t0 = _start(cid)
        started = time.monotonic()
        while time.monotonic() - started < WORKING_BOUND:
            if Campaign.objects.get(pk=cid).state == Campaign.State.COMPLETED:
                break
            _postgres_cpu(backends)  # a backend opened meanwhile counts from its start
            time.sleep(0.5)  # gently: this process shares the cores being measured
        cpu = _cpu(server.proc.pid) - cpu0
        pg_cpu = _postgres_cpu(backends) - pg_cpu0
        time.sleep(1)  # the backends report their transactions to the statistics (~1 s)
        xacts = _transactions() - xact0
        client_cpu = sum(_cpu(c.pid) for c in clients) - client_cpu0
        for proc in clients:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
        stats = [_readline(proc, deadline) for proc in clients]
    finally:
        _stop_clients(clients)
        server.stop()
        _forget_sessions()
    camp = Campaign.objects.get(pk=cid)
    end = camp.finished_at.timestamp() if camp.finished_at else None
    valid = Result.objects.filter(campaign_id=cid, validation=Result.Validation.VALID)
    doubled = valid.values("task").annotate(n=Count("pk")).filter(n__gt=1).count()
    if camp.state != Campaign.State.COMPLETED:
        _cancel(cid)
    fed_last = max((s["first_fed"] for s in stats if s["fed"]), default=None)
    return {
        "n": n,
        "connected": sum(i["connected"] for i in conn_info),
        "failed": sum(i["failed"] for i in conn_info),
        "e": next((i["e"] for i in conn_info if i["e"]), ""),
        "client_processes": len(clients),
        "tasks": tasks,
        "task_ms": task_ms,
        "done": camp.tasks_done,
        "lost": camp.tasks_total - camp.tasks_done,
        "doubled": doubled,
        "makespan": end - t0 if end else None,
        "cpu": cpu,
        "client_cpu": client_cpu,
        "pg_cpu": pg_cpu,
        "xacts": xacts,
        "frames": sum(s["frames"] for s in stats),
        "fed": sum(s["fed"] for s in stats),
        "fed_last": fed_last - t0 if fed_last else None,
        "results": sum(s["results"] for s in stats),
        "acked": sum(s["acked"] for s in stats),
        "ignored": sum(s["ignored"] for s in stats),
    }


WORKING_HEADER = [
    "| sessions working | tasks | makespan | tasks/s | server CPU | server CPU per task"
    " | lost | double-counted | start until every session had work |",
    "|---|---|---|---|---|---|---|---|---|",
]


def working_row(r: dict[str, Any]) -> str:
    makespan = f"{r['makespan']:.1f} s" if r["makespan"] else "not done"
    rate = f"{r['done'] / r['makespan']:,.0f}" if r["makespan"] else "n/a"
    per_task = r["cpu"] / r["done"] * 1e6 if r["done"] else float("nan")
    fed = f"{r['fed_last']:.1f} s" if r["fed_last"] is not None else "n/a"
    failed = f"; {r['failed']} failed to connect ({r['e']})" if r["failed"] else ""
    return (
        f"| {r['connected']:,} of {r['n']:,}{failed} | {r['done']:,} of {r['tasks']:,}"
        f" x {r['task_ms']} ms | {makespan} | {rate} | {r['cpu']:.1f} s"
        f" (PostgreSQL: {r['pg_cpu']:.1f} s, {r['xacts'] / max(r['done'], 1):.1f} transactions"
        f" a task; clients: {r['client_cpu']:.1f} s in {r['client_processes']})"
        f" | **{per_task:,.0f} µs** (PostgreSQL: {r['pg_cpu'] / max(r['done'], 1) * 1e6:,.0f} µs)"
        f" ({r['results'] / max(r['frames'], 1):.1f} results a frame)"
        f" | {r['lost']} | {r['doubled']}"
        f" | {fed} ({r['fed']:,} fed) |"
    )


# --- the section --------------------------------------------------------------------------------


def section(b: Bench, before: str | None) -> list[str]:
    import platform as py_platform

    from workers import protocol

    command = "python -m bench scale" + (f" --before {before}" if before else "")

    load = os.getloadavg()[0]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    idle_rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = before_root(before, Path(tmp)) if before else None
        for n in (2000, 5000):
            if root is not None:
                r = idle_run(b, n, root=root, idle_seconds=5)
                idle_rows.append(idle_row(f"before ({before})", r))
                print(idle_rows[-1], flush=True)
            r = idle_run(b, n, idle_seconds=IDLE_SECONDS)
            idle_rows.append(idle_row("now", r))
            print(idle_rows[-1], flush=True)
        # Real workers' idle: the protocol's heartbeat (bench/keepalive.py).
        if root is not None:
            r = idle_run(b, 10_000, root=root, idle_seconds=IDLE_SECONDS, heartbeat=True)
            idle_rows.append(idle_row(f"before ({before}), pinging", r))
            print(idle_rows[-1], flush=True)
        r = idle_run(b, 10_000, idle_seconds=IDLE_SECONDS, heartbeat=True)
        idle_rows.append(idle_row("now, pinging", r))
        print(idle_rows[-1], flush=True)
    r = idle_run(b, 10_000, distinct=True, idle_seconds=IDLE_SECONDS)
    idle_rows.append(idle_row("now, 10,000 distinct visitors, default per-origin caps", r))
    print(idle_rows[-1], flush=True)
    lease_rows = [lease_timing(n) for n in (2000, 5000)]
    churn_rows = churn(b)
    cluster_rows = [cluster_row(cluster_run(b, 20_000, idle_seconds=IDLE_SECONDS))]
    print(cluster_rows[-1], flush=True)
    working_rows = []
    for n in (10_000, 1000):
        working_rows.append(working_row(working_run(b, n)))
        print(working_rows[-1], flush=True)
    end_load = os.getloadavg()[0]
    return [
        "## Scale",
        "",
        f"Measured {when} with `{command}`, load average {load:.1f}"
        f" at the start and {end_load:.1f} at the end: {os.cpu_count()} shared cores,"
        f" Python {py_platform.python_version()}, PostgreSQL and Redis on the same machine, one"
        " daphne process. Clients: asyncio processes on loopback, `ulimit -n` raised.",
        "",
        "Idle sessions (hello, `want 1`, told idle): clients from 127.0.0.1 with"
        " `MAX_SESSIONS_PER_ORIGIN=0`, except the 10,000 row: each client its own /24 network"
        " (X-Forwarded-For through `TRUSTED_PROXY_ADDRESSES=127.0.0.1`) with the default caps."
        " Idle CPU: the server process over 20 s (5 s for the `before` rows of 2,000 and"
        " 5,000). The clients send WebSocket pings as the native worker of the tree under test"
        " does (bench.platform.native_keepalive); in the `pinging` rows they also keep the"
        " protocol's heartbeat as browsers and native workers do (bench/keepalive.py): they"
        f" answer the `ping` a server sends a session silent {protocol.PING_INTERVAL} s, or,"
        " with a server that sends none (an earlier commit's), `ping` every `heartbeat` of"
        f" `welcome` ({protocol.WEBSOCKET_HEARTBEAT} s), and the window starts once every"
        " session is in that rhythm. The last column runs from `campaign_start` until the last"
        " client has its first tasks frame.",
        "",
        *IDLE_HEADER,
        *idle_rows,
        "",
        "The lease statement alone (`python -m bench.scale lease`: in the bench process, no"
        " server, no pushes; best of 3):",
        "",
        *LEASE_HEADER,
        *lease_rows,
        "",
        f"Churn (Panther): {CHURN_VISITORS} visitors x 1 slot, {CHURN_TASKS:,} tasks of"
        f" {TASK_MS} ms each (simulated), mean dwell {CHURN_MEAN_DWELL:.0f} s; a leaving"
        " visitor closes its TCP connection mid-task and a new one takes its seat.",
        "",
        *churn_rows,
        "",
        f"{CLUSTER_PROCESSES} daphne processes together (`python -m bench.scale cluster 20000`):"
        " the same database and Redis, the idle clients split evenly over them in client"
        f" processes of at most {CLIENTS_PER_PROCESS:,} sessions, from 127.0.0.1 with"
        " `MAX_SESSIONS_PER_ORIGIN=0`; unlike the rows above, the clients keep the protocol's"
        " heartbeat as real workers do (they answer the server's `ping`, sent to a session"
        f" silent {protocol.PING_INTERVAL} s). One campaign of 20,000 tasks,"
        " started in the bench process, feeds the sessions of both processes.",
        "",
        *CLUSTER_HEADER,
        *cluster_rows,
        "",
        "Sessions working (`python -m bench.scale working 10000 1000`): simulated protocol"
        f" workers, 1 slot each, fed as the native worker feeds itself, each task 'running'"
        f" {WORKING_TASK_MS} ms, on one daphne process; a campaign of"
        f" {WORKING_TASKS_PER_SESSION} tasks per session started once all are connected and"
        " run to completion. Server CPU: the daphne process from the start to completion;"
        " PostgreSQL: the benchmark database's backends over the same time.",
        "",
        *WORKING_HEADER,
        *working_rows,
    ]


def _cluster_or_working(
    b: Bench, what: str, counts: list[int], options: dict[str, int], idle_seconds: float
) -> int:
    if what == "cluster":
        print("\n".join(CLUSTER_HEADER))
        for n in counts or [20_000]:
            r = cluster_run(
                b,
                n,
                processes=options.get("--processes", CLUSTER_PROCESSES),
                idle_seconds=idle_seconds,
                heartbeat=not options.get("--no-ping"),
            )
            print(cluster_row(r), flush=True)
        return 0
    print("\n".join(WORKING_HEADER))
    for n in counts or [10_000, 1000]:
        r = working_run(b, n, tasks=options.get("--tasks"))
        print(working_row(r), flush=True)
    return 0


def main(argv: list[str]) -> int:
    _raise_nofile()
    if argv[:1] == ["--clients"]:
        extra = (
            (argv[5] == "1", int(argv[6]), float(argv[7]) if len(argv) > 7 else 0.0)
            if len(argv) > 5
            else ()
        )
        asyncio.run(_clients(argv[1], int(argv[2]), argv[3] == "1", float(argv[4]), *extra))
        return 0
    if argv[:1] == ["--workers"]:
        asyncio.run(_workers(argv[1], int(argv[2]), int(argv[3]), int(argv[4])))
        return 0
    before = None
    if "--before" in argv:
        i = argv.index("--before")
        before = argv[i + 1]
        del argv[i : i + 2]
    idle_seconds = IDLE_SECONDS
    if "--idle-seconds" in argv:
        i = argv.index("--idle-seconds")
        idle_seconds = float(argv[i + 1])
        del argv[i : i + 2]
    pong_spread = 0.0
    if "--pong-spread" in argv:
        i = argv.index("--pong-spread")
        pong_spread = float(argv[i + 1]) / 1000  # given in ms
        del argv[i : i + 2]
    options: dict[str, int] = {name: 1 for name in ("--no-ping", "--ping") if name in argv}
    argv[:] = [a for a in argv if a not in options]
    for name in ("--processes", "--tasks"):
        if name in argv:
            i = argv.index(name)
            options[name] = int(argv[i + 1])
            del argv[i : i + 2]
    b = bench_setup()
    if not argv:
        from bench import platform as bp

        bp.record_section(START, END, section(b, before))
        return 0
    what, counts = argv[0], [int(a) for a in argv[1:]]
    if what == "churn":
        print("\n".join(churn(b)))
        return 0
    if what == "lease":
        print("\n".join(LEASE_HEADER))
        for n in counts or [2000, 5000]:
            print(lease_timing(n), flush=True)
        return 0
    if what in ("cluster", "working"):
        return _cluster_or_working(b, what, counts, options, idle_seconds)
    if what not in ("idle", "visitors"):
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(IDLE_HEADER))
    with tempfile.TemporaryDirectory() as tmp:
        root = before_root(before, Path(tmp)) if before else None
        pinging = bool(options.get("--ping"))
        for n in counts or [1000]:
            if root is not None:
                r = idle_run(
                    b,
                    n,
                    root=root,
                    idle_seconds=idle_seconds,
                    heartbeat=pinging,
                    pong_spread=pong_spread,
                )
                print(idle_row(f"before ({before})", r), flush=True)
            r = idle_run(
                b,
                n,
                distinct=what == "visitors",
                idle_seconds=idle_seconds,
                heartbeat=pinging,
                pong_spread=pong_spread,
            )
            print(idle_row("now", r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
