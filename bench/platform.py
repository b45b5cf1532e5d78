"""A benchmark platform: a fresh database (PostgreSQL and Redis when they answer on this
machine, otherwise SQLite), a daphne server process, and helpers to create campaigns."""

from __future__ import annotations

import functools
import os
import platform as py_platform
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ccgsc.processes import Platform, start_platform

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def native_keepalive(root: Path = ROOT) -> float | None:
    """The WebSocket-level ping interval of the native worker in the tree at `root` (its
    websockets library's keepalive), None when it sends none: benchmark clients that stand for
    native workers ping as that tree's worker does."""
    transport = (root / "workers/native/transport.py").read_text()
    if "ping_interval=None" in transport:
        return None
    if "ping_interval=protocol.PING_INTERVAL" in transport:
        protocol = (root / "workers/protocol.py").read_text()
        found = re.search(r"^PING_INTERVAL = (\d+)", protocol, re.M)
        if found:
            return float(found.group(1))
    return 20.0  # the library's default


PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def bench_env() -> dict[str, str]:
    """Environment for the benchmark's processes: real services when present."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH", "REDIS_URL")
    }
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
    if _port_open(5432):
        import psycopg

        # BENCH_DB: another database name, so two benchmarks on one machine do not drop each
        # other's database.
        name = os.environ.get("BENCH_DB", "ccgsc_bench")
        if not name.replace("_", "").isalnum():
            raise SystemExit(f"BENCH_DB must be a plain database name, got {name!r}")
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
    else:
        path = ROOT / "var" / "bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        env["SQLITE_PATH"] = str(path)
    if _port_open(6379):
        env["REDIS_URL"] = "redis://127.0.0.1:6379/15"
    return env


def describe(env: dict[str, str]) -> str:
    db = "PostgreSQL" if "DATABASE_URL" in env else "SQLite"
    layer = "Redis" if "REDIS_URL" in env else "in-memory"
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {py_platform.python_version()}, "
        f"{db} database, {layer} channel layer"
    )


def setup_django(env: dict[str, str]) -> None:
    """Configure Django in this process against the benchmark database and migrate it."""
    os.environ.update(
        {
            k: v
            for k, v in env.items()
            if k
            in (
                "DJANGO_SETTINGS_MODULE",
                "DATABASE_URL",
                "SQLITE_PATH",
                "REDIS_URL",
                "JOBS_INLINE",
                "DEBUG",
                "SECRET_KEY",
                "LOG_LEVEL",
            )
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.CELERY_EMBEDDED = "eager"
    settings.USE_CELERY_BROKER = False
    call_command("migrate", verbosity=0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def start_server(env: dict[str, str]) -> Platform:
    return start_platform(env)


def make_campaign(kernel: str, inputs: list[bytes], *, name: str, **policies: Any) -> int:
    """A running, approved campaign of `inputs` for reference kernel `kernel`; returns its id."""
    from accounts.models import Organization
    from campaigns import services
    from campaigns.inputs import TaskSpec

    org, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    k = services.kernel_upload(
        organization=org,
        name=kernel,
        data=(ROOT / "kernels" / "build" / f"{kernel}.wasm").read_bytes(),
    )
    c = services.campaign_create(organization=org, name=name, kernel=k, approved=True, **policies)
    services.tasks_add(campaign=c, specs=(TaskSpec(input=i) for i in inputs))
    services.campaign_start(campaign=c)
    settle()
    return c.pk


def settle() -> None:
    """Between measurements: vacuum and analyse the hot tables (PostgreSQL), so autovacuum does
    not start on the previous phase's tens of thousands of updated rows in the middle of the
    next one (seen: every other swarm phase at a third of the speed)."""
    from django.db import connection

    from campaigns.models import Campaign, Result, Task

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in (Result, Task, Campaign):
            cursor.execute(f"VACUUM (ANALYZE) {model._meta.db_table}")


def campaign_done(campaign_id: int) -> tuple[int, int, str]:
    from campaigns.models import Campaign

    c = Campaign.objects.get(pk=campaign_id)
    return c.tasks_done + c.tasks_failed, c.tasks_total, c.state


def busy_span(campaign_id: int) -> float:
    """Seconds from the campaign's first lease to its last result: the time workers spent on
    it, without their process start-up, connection and kernel download."""
    from django.db.models import Max, Min

    from campaigns.models import Result

    span = Result.objects.filter(campaign_id=campaign_id).aggregate(
        first=Min("leased_at"), last=Max("returned_at")
    )
    return (span["last"] - span["first"]).total_seconds()


def wait_done(campaign_id: int, timeout: float) -> float:
    """Seconds until the campaign completes."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        done, total, state = campaign_done(campaign_id)
        if state == "completed":
            return time.monotonic() - start
        # Gently: on two cores, this poll competes with the workers being measured.
        time.sleep(0.25)
    raise RuntimeError(f"campaign {campaign_id} not done after {timeout} s ({done}/{total})")


DOC = ROOT / "docs" / "benchmarks.md"


def record_section(start: str, end: str, lines: list[str]) -> None:
    """Replace the section between the markers in docs/benchmarks.md (append it if absent)."""
    section = "\n".join([start, *lines, end])
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)
    print(f"recorded in {DOC.relative_to(ROOT)}")
