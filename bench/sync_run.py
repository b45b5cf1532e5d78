"""Synchronous offload latency: `POST /api/v1/run` round trips against wasmtime in-process.

    [DATABASE_URL=postgres://... REDIS_URL=redis://...] python -m bench.sync_run [CALLS]

One daphne server process and one native worker (one slot, the organization's token), both
started here. A client in this process makes CALLS (default 200) sequential calls of the same
small task (after 20 warm-up calls) and times each from sending the request to having the
JSON answer. Side by side, in the same run: the same task run directly in this process's
kernelhost (wasmtime, module compiled once), CALLS times. Tasks: `primes 0 1000` (the 168
primes below 1000) and `echo` of 16 bytes.

The database and channel layer are DATABASE_URL / REDIS_URL when set (migrated first),
otherwise those bench/platform.py picks (a fresh PostgreSQL database `ccgsc_bench` and Redis
when they answer, else SQLite and the in-memory layer). Prints the table that
docs/benchmarks.md quotes; Wasimoff's published median is 12.8 ms.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

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


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    env = env_for_run()
    bp.setup_django(env)
    from accounts import services as account_services
    from accounts.models import Organization
    from campaigns import services

    org, _ = Organization.objects.get_or_create(slug="bench-run", defaults={"name": "Bench run"})
    _, token = account_services.token_issue(organization=org, name="bench", created_by=None)
    kernels = {
        label: services.kernel_upload(
            organization=org,
            name=name,
            data=(ROOT / "kernels" / "build" / f"{name}.wasm").read_bytes(),
        )
        for label, (name, _) in TASKS.items()
    }
    print(bp.describe(env))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    server = bp.start_server(env)
    rows = []
    try:
        server.worker("--token", token, slots=1)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            for label, (name, stdin) in TASKS.items():
                body = {"kernel": kernels[label].sha256, "input": stdin.decode(), "wait": 30}
                expected = None
                for _ in range(WARMUP):  # the worker connects, downloads, compiles
                    r = http.post("/api/v1/run", json=body)
                    assert r.status_code == 200, r.text
                    expected = r.json()["stdout"]
                latencies, server_ms, queued_ms, runtime_ms = [], [], [], []
                for _ in range(calls):
                    start = time.perf_counter()
                    r = http.post("/api/v1/run", json=body)
                    latencies.append((time.perf_counter() - start) * 1000)
                    data = r.json()
                    assert r.status_code == 200 and data["stdout"] == expected, r.text
                    server_ms.append(data["elapsed_ms"])
                    queued_ms.append(data["queued_ms"])
                    runtime_ms.append(data["runtime_ms"])
                local = direct(name, stdin, calls)
                rows.append((label, latencies, server_ms, queued_ms, runtime_ms, local))
    finally:
        server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(
        f"\n{calls} sequential calls per task, one native worker (1 slot); ms, median / p99\n"
        "| task | POST /run round trip | in the server | queued until leased "
        "| kernel on the worker | wasmtime in-process | Wasimoff median |\n"
        "|---|---|---|---|---|---|---|"
    )
    for label, latencies, server_ms, queued_ms, runtime_ms, local in rows:
        cells = [
            f"{statistics.median(v):.1f} / {percentile(v, 0.99):.1f}"
            for v in (latencies, server_ms, queued_ms, runtime_ms, local)
        ]
        print(f"| {label} | " + " | ".join(cells) + f" | {WASIMOFF_MEDIAN_MS} |")


if __name__ == "__main__":
    main()
