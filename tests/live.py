"""Real processes for end-to-end tests: a daphne server and native workers running against the
test database (SQLite file here, PostgreSQL and Redis under CI).

Use the `live_platform` fixture (pytest-django's `live_server` is a WSGI server without
WebSockets); it needs committed data, so it implies transactional_db:

    def test_x(live_platform):
        worker = live_platform.worker("--max-tasks", "10")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_env() -> dict[str, str]:
    """Environment that points a subprocess at the database this test process uses."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        return {"DATABASE_URL": f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    return {"SQLITE_PATH": str(db["NAME"])}


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and k != "SQLITE_PATH"}
    env.update(database_env())
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "ccgsc.settings",
            "PYTHONPATH": str(ROOT),
            "JOBS_INLINE": "true",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


@dataclass
class LiveServer:
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker(self, *args: str, slots: int = 2) -> subprocess.Popen[bytes]:
        """Start a native worker process against this server."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.native",
                "--server",
                self.url,
                "--slots",
                str(slots),
                "--quiet",
                *args,
            ],
            cwd=ROOT,
            env=self.env,
        )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.workers, self.proc]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.proc]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def start_server(**extra_env: str) -> LiveServer:
    port = free_port()
    env = subprocess_env(**extra_env)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--websocket-max-message-size",
            str(16 * 1024 * 1024),
            "ccgsc.asgi:application",
        ],
        cwd=ROOT,
        env=env,
    )
    server = LiveServer(port=port, proc=proc, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{server.url}/api/v1/status", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("daphne did not start within 30 s")


@pytest.fixture
def live_platform(transactional_db: None) -> Iterator[LiveServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()
