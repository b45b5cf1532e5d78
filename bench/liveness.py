"""What keeping WebSocket sessions alive costs, and how fast a killed server process's leases
come back (workers/liveness.py). PostgreSQL and Redis from DATABASE_URL and REDIS_URL.

    python -m bench.liveness [--before REV] [--sessions N] [--window S] [--holders K]
        [--kill-only | --pings-only]

pings: N sessions on one daphne process say hello, want one task (told idle) and then only keep
the protocol's heartbeat, as the browser harness and the native worker do (bench/keepalive.py:
they answer the server's `ping`, or, with a server that sends none, `ping` at the heartbeat it
told them in `welcome`); "pings" below counts both. Over a window of S seconds once all are
connected: the database's transactions per second (pg_stat_database.xact_commit of the bench
database: every statement outside a transaction is one), rows updated per second in the session
and process tables (pg_stat_user_tables.n_tup_upd), pings per second, and the server's CPU.

kill: K sessions on process A each lease two tasks and hold them (a campaign of the default
300 s task timeout: the leases' deadline is 600 s away); one session on process B, so that B
runs a sweeper. A is killed with SIGKILL; measured: the time until none of A's sessions holds a
lease any more (they are back in the queue), polled every 0.2 s, bounded at 200 s.

With --before REV, each is run first with the server code of commit REV, side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KILL_BOUND = 200.0


# --- the clients' process ------------------------------------------------------------------------


async def _session(
    url: str,
    want: int,
    ready: list[int],
    pings: list[int],
    opening: asyncio.Semaphore,
    keepalive: float | None,
) -> None:
    import msgpack
    import websockets

    from bench.keepalive import Heartbeat
    from workers import protocol

    async with opening:  # handshakes paced, as in bench.scale
        ws = await websockets.connect(
            url,
            max_size=protocol.MAX_FRAME,
            open_timeout=120,
            ping_interval=keepalive,  # WebSocket pings as the server's tree's native worker
        )
        hello = {"t": "hello", "v": 1, "kind": "native", "slots": 2, "agent": "bench-liveness"}
        hello["pongs"] = True
        await ws.send(msgpack.packb(hello))
        welcome = msgpack.unpackb(await ws.recv(), raw=False, strict_map_key=False)
    heartbeat = Heartbeat(ws, welcome["limits"], pings)
    await ws.send(msgpack.packb({"t": "want", "n": want}))
    while True:  # told idle, or given its tasks (which it holds and never answers)
        msg = msgpack.unpackb(await ws.recv(), raw=False, strict_map_key=False)
        await heartbeat.message(msg)
        if msg["t"] in ("idle", "tasks"):
            break
    ready.append(welcome["session"])

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # its server was killed
            async for frame in ws:
                await heartbeat.message(msgpack.unpackb(frame, raw=False, strict_map_key=False))

    reader = asyncio.create_task(read())
    pinger = asyncio.create_task(heartbeat.run())
    try:
        await reader
    finally:
        pinger.cancel()


async def _clients(url: str, n: int, want: int, keepalive: float | None) -> None:
    ready: list[int] = []
    pings = [0]
    opening = asyncio.Semaphore(100)
    tasks = [
        asyncio.create_task(_session(url, want, ready, pings, opening, keepalive)) for _ in range(n)
    ]
    while len(ready) + sum(t.done() for t in tasks) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": len(ready)}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        print(json.dumps({"pings": pings[0]}), flush=True)
    for t in tasks:
        t.cancel()


def _spawn_clients(
    env: dict[str, str], url: str, n: int, want: int, root: Path | None = None
) -> subprocess.Popen[str]:
    """Clients of the server running the tree at `root` (this one if None): they send the
    WebSocket pings that tree's native worker sends."""
    from bench import platform as bp

    ws_url = url.replace("http", "ws", 1) + "/ws/work/"
    keepalive = str(bp.native_keepalive(root or bp.ROOT) or 0.0)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.liveness", "_clients", ws_url, str(n), str(want), keepalive],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the clients' process ended")
    out: dict[str, Any] = json.loads(line)
    return out


def _ask(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    return _read(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- the driver ---------------------------------------------------------------------------------


def _db_counters(database: str) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [database])
        xact = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT relname, n_tup_upd FROM pg_stat_user_tables WHERE relname IN"
            " ('workers_workersession', 'operations_processheartbeat')"
        )
        rows = dict(cursor.fetchall())
    return {
        "xact": xact,
        "session_updates": int(rows.get("workers_workersession", 0)),
        "process_updates": int(rows.get("operations_processheartbeat", 0)),
    }


def _stats_settle() -> None:
    # The statistics collector reports with a delay of up to a second (PostgreSQL 15: at
    # the end of each transaction of other backends, flushed at most every second).
    time.sleep(1.5)


def pings_run(b: Any, n: int, window: float, root: Path | None) -> dict[str, Any]:
    from bench import platform as bp
    from bench.scale import _forget_sessions, _server, _until_steady

    server = _server(b, root, MAX_SESSIONS_PER_ORIGIN="0", MAX_SLOTS_PER_ORIGIN="0")
    clients = _spawn_clients(b.env, server.url, n, 1, root)
    try:
        ready = _read(clients)["ready"]
        _until_steady()  # every session in its heartbeat's steady rhythm
        _stats_settle()
        before, cpu0 = _db_counters(b.database), bp.cpu_seconds(server.proc.pid)
        pings0 = _ask(clients)["pings"]
        t0 = time.monotonic()
        time.sleep(window)
        pings1 = _ask(clients)["pings"]
        cpu1, elapsed = bp.cpu_seconds(server.proc.pid), time.monotonic() - t0
        _stats_settle()
        after = _db_counters(b.database)
    finally:
        _stop(clients)
        server.stop()
        _forget_sessions()
    return {
        "n": n,
        "ready": ready,
        "seconds": elapsed,
        "xact_per_s": (after["xact"] - before["xact"]) / elapsed,
        "session_updates_per_s": (after["session_updates"] - before["session_updates"]) / elapsed,
        "process_updates_per_s": (after["process_updates"] - before["process_updates"]) / elapsed,
        "pings_per_s": (pings1 - pings0) / elapsed,
        "cpu": (cpu1 - cpu0) / elapsed,
    }


def kill_run(b: Any, holders: int, root: Path | None) -> dict[str, Any]:
    from bench.scale import _campaign, _cancel, _forget_sessions, _server, _start
    from campaigns.models import Result
    from workers.models import WorkerSession

    cid = _campaign(4 * holders + 50, f"kill {time.time()}")
    _start(cid)
    env = {"MAX_SESSIONS_PER_ORIGIN": "0", "MAX_SLOTS_PER_ORIGIN": "0"}
    a = _server(b, root, **env)
    on_a = _spawn_clients(b.env, a.url, holders, 2, root)
    b_server = on_b = None
    try:
        _read(on_a)
        a_sessions = list(
            WorkerSession.objects.filter(disconnected_at__isnull=True).values_list("pk", flat=True)
        )
        # One session on B, so that B runs a sweeper (a process starts it with its first).
        b_server = _server(b, root, **env)
        on_b = _spawn_clients(b.env, b_server.url, 1, 1, root)
        _read(on_b)
        # Steady state: A's sessions pinged and (before) flushed once or more.
        time.sleep(25)
        held = Result.objects.filter(state=Result.State.LEASED, session_id__in=a_sessions).count()
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        back = None
        while time.monotonic() - t0 < KILL_BOUND:
            if not Result.objects.filter(
                state=Result.State.LEASED, session_id__in=a_sessions
            ).exists():
                back = time.monotonic() - t0
                break
            time.sleep(0.2)
    finally:
        _stop(on_a)
        a.stop()
        if on_b is not None:
            _stop(on_b)
        if b_server is not None:
            b_server.stop()
        _forget_sessions()
        _cancel(cid)  # the next run's sessions lease from their own campaign only
    return {"holders": len(a_sessions), "held": held, "back": back}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_clients":
        from bench.scale import _raise_nofile

        _raise_nofile()
        asyncio.run(_clients(argv[1], int(argv[2]), int(argv[3]), float(argv[4]) or None))
        return 0
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.liveness")
    parser.add_argument("--before", help="also run the server code of this commit, first")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--holders", type=int, default=100)
    parser.add_argument("--kill-only", action="store_true", help="skip the pings runs")
    parser.add_argument("--pings-only", action="store_true", help="skip the kill runs")
    args = parser.parse_args(argv)
    from bench.scale import _raise_nofile, before_root, bench_setup

    _raise_nofile()
    b = bench_setup()
    with tempfile.TemporaryDirectory() as tmp:
        roots: list[tuple[str, Path | None]] = []
        if args.before:
            roots.append((f"before ({args.before})", before_root(args.before, Path(tmp))))
        roots.append(("now", None))
        for label, root in roots if not args.kill_only else []:
            p = pings_run(b, args.sessions, args.window, root)
            print(
                f"| {label} | {p['ready']:,} | {p['pings_per_s']:.1f} | {p['xact_per_s']:.1f}"
                f" | {p['session_updates_per_s']:.1f} | {p['process_updates_per_s']:.2f}"
                f" | {p['cpu'] * 100:.1f} % |",
                flush=True,
            )
        for label, root in roots if not args.pings_only else []:
            k = kill_run(b, args.holders, root)
            back = f"{k['back']:.1f} s" if k["back"] is not None else f"> {KILL_BOUND:.0f} s"
            print(f"| {label} | {k['holders']} sessions, {k['held']} leases | {back} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
