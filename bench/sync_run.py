"""Synchronous offload latency: `POST /api/v1/run` round trips against wasmtime in-process.

    [DATABASE_URL=postgres://... REDIS_URL=redis://...] python -m bench.sync_run [CALLS]
        [--before REV]

One daphne server process and one native worker (one slot, the organization's token), both
started here. A client in this process makes CALLS (default 200) sequential calls of the same
small task (after 20 warm-up calls) and times each from sending the request to having the
JSON answer. Side by side, in the same run: the same task run directly in this process's
kernelhost (wasmtime, module compiled once), CALLS times. Tasks: `primes 0 1000` (the 168
primes below 1000) and `echo` of 16 bytes.

With --before REV, a second server and worker run the code of commit REV (unpacked from git)
against the same database, for an organization of their own, and the calls alternate between
the two (ABBA order), so both see the same machine load; the table gets a row per version.

The database and channel layer are DATABASE_URL / REDIS_URL when set (migrated first),
otherwise those bench/platform.py picks (a fresh PostgreSQL database `ccgsc_bench` and Redis
when they answer, else SQLite and the in-memory layer). Prints the table that
docs/benchmarks.md quotes; Wasimoff's published median is 12.8 ms.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import platform as bp

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 20
TASKS = {"primes": ("primes", b"0 1000"), "echo": ("echo", b"sixteen bytes..\n")}
WASIMOFF_MEDIAN_MS = 12.8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def env_for_run() -> dict[str, str]:
    if "DATABASE_URL" not in os.environ:
        return bp.bench_env()
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_PATH"}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "ccgsc.settings",
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
            "JOBS_INLINE": "true",
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + "x" * 40,
        }
    )
    return env


def direct(name: str, stdin: bytes, calls: int) -> list[float]:
    from kernelhost import default_host

    host = default_host()
    kernel = host.compile((ROOT / "kernels" / "build" / f"{name}.wasm").read_bytes())
    for _ in range(WARMUP):
        host.run(kernel, stdin=stdin)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        result = host.run(kernel, stdin=stdin)
        times.append((time.perf_counter() - start) * 1000)
        assert result.ok, result.message
    return times


@dataclass
class Side:
    """One version of the platform under test: its server, worker, token and kernels."""

    label: str
    root: Path
    slug: str
    server: Any = None
    http: httpx.Client | None = None
    kernels: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def start_side(side: Side, env: dict[str, str]) -> None:
    from accounts import services as account_services
    from accounts.models import Organization
    from campaigns import services

    org, _ = Organization.objects.get_or_create(slug=side.slug, defaults={"name": side.slug})
    _, token = account_services.token_issue(organization=org, name="bench", created_by=None)
    side.kernels = {
        label: services.kernel_upload(
            organization=org,
            name=name,
            data=(ROOT / "kernels" / "build" / f"{name}.wasm").read_bytes(),
        )
        for label, (name, _) in TASKS.items()
    }
    side_env = dict(env, PYTHONPATH=str(side.root))
    side.server = bp.start_platform(side_env, timeout=120, root=side.root)
    side.server.worker("--token", token, slots=1)
    side.http = httpx.Client(
        base_url=side.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def call(side: Side, label: str, expected: str | None) -> str:
    assert side.http is not None
    stdin = TASKS[label][1]
    body = {"kernel": side.kernels[label].sha256, "input": stdin.decode(), "wait": 30}
    start = time.perf_counter()
    r = side.http.post("/api/v1/run", json=body)
    took = (time.perf_counter() - start) * 1000
    data = r.json()
    assert r.status_code == 200 and (expected is None or data["stdout"] == expected), r.text
    if expected is not None:
        got = side.samples.setdefault(label, {})
        for key, value in (
            ("round trip", took),
            ("server", data["elapsed_ms"]),
            ("queued", data["queued_ms"]),
            ("runtime", data["runtime_ms"]),
        ):
            got.setdefault(key, []).append(value)
    return str(data["stdout"])


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {percentile(values, 0.99):.1f}"


def main() -> None:
    argv = sys.argv[1:]
    before = None
    if "--before" in argv:
        i = argv.index("--before")
        before = argv[i + 1]
        del argv[i : i + 2]
    calls = int(argv[0]) if argv else 200
    env = env_for_run()
    bp.setup_django(env)
    print(bp.describe(env))
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        sides = [Side("now", ROOT, "bench-run")]
        if before:
            from bench.scale import before_root

            sides.insert(
                0, Side(f"before ({before})", before_root(before, Path(tmp)), "bench-run-before")
            )
        local: dict[str, list[float]] = {}
        try:
            for side in sides:
                start_side(side, env)
            for label, (name, stdin) in TASKS.items():
                expected = None
                for side in sides:
                    for _ in range(WARMUP):  # the worker connects, downloads, compiles
                        expected = call(side, label, None)
                for i in range(calls):
                    # ABBA: neither version always goes first after the other's call.
                    for side in sides if i % 2 == 0 else sides[::-1]:
                        call(side, label, expected)
                local[label] = direct(name, stdin, calls)
        finally:
            for side in sides:
                if side.http is not None:
                    side.http.close()
                if side.server is not None:
                    side.server.stop()
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f}")
    print(
        f"\n{calls} sequential calls per task and version, one native worker (1 slot) each;"
        " ms, median / p99\n"
        "| task | code | POST /run round trip | in the server | queued until leased "
        "| kernel on the worker | wasmtime in-process | Wasimoff median |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for label in TASKS:
        for side in sides:
            got = side.samples[label]
            cells = [cell(got[k]) for k in ("round trip", "server", "queued", "runtime")]
            print(
                f"| {label} | {side.label} | "
                + " | ".join(cells)
                + f" | {cell(local[label])} | {WASIMOFF_MEDIAN_MS} |"
            )
        if len(sides) == 2:
            ratio = statistics.median(sides[1].samples[label]["round trip"]) / statistics.median(
                sides[0].samples[label]["round trip"]
            )
            print(f"| {label} | now / before (median round trip) | {ratio:.2f} | | | | | |")


if __name__ == "__main__":
    main()
