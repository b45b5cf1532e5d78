"""Real processes for end-to-end tests: a daphne server and native workers running against the
test database (SQLite file here, PostgreSQL and Redis under CI).

Use the `live_platform` fixture (pytest-django's `live_server` is a WSGI server without
WebSockets); it needs committed data, so it implies transactional_db:

    def test_x(live_platform):
        worker = live_platform.worker("--max-tasks", "10")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from ccgsc.processes import Platform, free_port, start_platform

ROOT = Path(__file__).resolve().parent.parent


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


LiveServer = Platform
__all__ = ["LiveServer", "Platform", "free_port", "live_platform", "start_server", "subprocess_env"]


def start_server(
    *,
    daphne_args: tuple[str, ...] = (),
    port: int | None = None,
    timeout: float = 120.0,
    **extra_env: str,
) -> Platform:
    """A daphne server against the test database (environment overrides in extra_env);
    `timeout` bounds a slow start on a loaded machine, as start_platform's does."""
    return start_platform(
        subprocess_env(**extra_env), daphne_args=daphne_args, port=port, timeout=timeout
    )


@pytest.fixture
def live_platform(transactional_db: None) -> Iterator[Platform]:
    platform = start_server()
    try:
        yield platform
    finally:
        platform.stop()
