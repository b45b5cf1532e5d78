"""`python -m bench.scale N [N ...]`: idle sessions on one daphne process (PostgreSQL, Redis).

For each N: N WebSocket sessions (asyncio clients in a separate process, one task each, all from
127.0.0.1, so the server runs with MAX_SESSIONS_PER_ORIGIN=0 and MAX_SLOTS_PER_ORIGIN=0) say
hello and want one task, and are told idle. Measured: connect rate, the server's memory per
session (RSS growth / N), its CPU while all N sit idle for IDLE_SECONDS, and the time from the
campaign start until every session has its first task. Prints one table row per N.

Uses the database ccgsc_scale_bench and Redis db 12 (this bench's own); ulimit -n is raised
to the hard limit in both processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

IDLE_SECONDS = 20.0


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the client process ------------------------------------------------------------------------


async def _client(url: str, connected: list[float], fed: list[float], gate: asyncio.Event) -> None:
    import msgpack
    import websockets

    from workers import protocol

    async with websockets.connect(url, max_size=protocol.MAX_FRAME, open_timeout=120) as ws:
        hello = {"t": "hello", "v": 1, "kind": "native", "slots": 1, "agent": "scale"}
        await ws.send(msgpack.packb(hello))
        await ws.recv()
        await ws.send(msgpack.packb({"t": "want", "n": 1}))
        connected.append(time.time())
        while True:
            msg = msgpack.unpackb(await ws.recv(), raw=False, strict_map_key=False)
            if msg["t"] == "tasks":
                fed.append(time.time())
                break
        await gate.wait()


async def _clients(url: str, n: int) -> None:
    connected: list[float] = []
    fed: list[float] = []
    gate = asyncio.Event()
    start = time.time()
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(_client(url, connected, fed, gate)))
        await asyncio.sleep(0.0005)  # a steady stream, not one burst of n handshakes
    # A coarse wait on n clients' progress (lists they fill), good enough for a bench.
    while len(connected) + sum(t.done() for t in tasks) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
    if failed:
        print(f"{len(failed)} clients failed, e.g. {failed[0]!r}", file=sys.stderr)
    seconds = (max(connected) - start) if connected else 0.0
    print(json.dumps({"connected": len(connected), "seconds": seconds}), flush=True)
    while len(fed) < len(connected) and not all(t.done() for t in tasks):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    print(json.dumps({"fed": len(fed), "last": max(fed) if fed else None}), flush=True)
    sys.stdin.readline()
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- the driver --------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _start_campaign(n: int) -> float:
    """A no-op campaign of n tasks, created and filled, then started; returns the start time."""
    from accounts.models import Organization
    from bench.platform import ROOT
    from campaigns import services
    from campaigns.inputs import TaskSpec

    org, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    k = services.kernel_upload(
        organization=org, name="noop", data=(ROOT / "kernels/build/noop.wasm").read_bytes()
    )
    c = services.campaign_create(organization=org, name=f"scale {n}", kernel=k, approved=True)
    services.tasks_add(campaign=c, specs=(TaskSpec(input=b"") for _ in range(n)))
    t0 = time.time()
    services.campaign_start(campaign=c)
    return t0


def run(n: int) -> str:
    import psycopg

    # Before anything imports the settings (bench.platform does, through the protocol).
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "ccgsc.settings",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/ccgsc_scale_bench",
            "REDIS_URL": "redis://127.0.0.1:6379/12",
        }
    )
    from bench import platform as bp

    if "DJANGO_SETTINGS_MODULE" in os.environ:  # a previous run's connection to the old database
        from django.db import connections

        connections.close_all()
    with psycopg.connect(bp.PG_ADMIN, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS ccgsc_scale_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE ccgsc_scale_bench")
    # bench_env() would recreate the shared ccgsc_bench database: build on its settings only.
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
        }
    )
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/ccgsc_scale_bench"
    env["REDIS_URL"] = "redis://127.0.0.1:6379/12"
    env["MAX_SESSIONS_PER_ORIGIN"] = "0"
    env["MAX_SLOTS_PER_ORIGIN"] = "0"
    bp.setup_django(env)
    server = bp.start_server(env)
    try:
        rss0 = _rss_kib(server.proc.pid)
        url = server.url.replace("http", "ws") + "/ws/work/"
        clients = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "--clients", url, str(n)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert clients.stdout is not None and clients.stdin is not None
        conn_info: dict[str, Any] = json.loads(clients.stdout.readline())
        time.sleep(2)
        rss = _rss_kib(server.proc.pid)
        cpu0 = bp.cpu_seconds(server.proc.pid)
        time.sleep(IDLE_SECONDS)
        idle_cpu = (bp.cpu_seconds(server.proc.pid) - cpu0) / IDLE_SECONDS
        t0 = _start_campaign(n)
        fed: dict[str, Any] = json.loads(clients.stdout.readline())
        clients.stdin.write("\n")
        clients.stdin.flush()
        clients.wait(120)
    finally:
        server.stop()
    last = f"{fed['last'] - t0:.1f} s" if fed["last"] else "n/a"
    return (
        f"| {n:,} | {conn_info['connected']:,} in {conn_info['seconds']:.1f} s"
        f" ({conn_info['connected'] / conn_info['seconds']:,.0f}/s)"
        f" | {(rss - rss0) / max(conn_info['connected'], 1):.0f} KiB"
        f" | {idle_cpu * 100:.1f} % of a core | {fed['fed']:,} fed, last {last} |"
    )


def main(argv: list[str]) -> int:
    _raise_nofile()
    if argv[:1] == ["--clients"]:
        asyncio.run(_clients(argv[1], int(argv[2])))
        return 0
    print(
        "| idle sessions | connected | server memory per session | idle server CPU |"
        " campaign start until every session has work |"
    )
    print("|---|---|---|---|---|")
    for n in [int(a) for a in argv] or [1000]:
        print(run(n), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
