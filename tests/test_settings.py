"""Configuration comes from the environment and malformed values refuse to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccgsc.env import ConfigError, env_bool, env_int, env_list, env_url

ROOT = Path(__file__).resolve().parent.parent


def start(**env: str) -> subprocess.CompletedProcess[str]:
    """Load the settings in a fresh interpreter, as every process (server, Celery worker,
    management command) does first when it starts."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "ccgsc.settings"
    return subprocess.run(
        [sys.executable, "-c", "import ccgsc.settings; print('started')"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_defaults_start():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DJANGO_SETTINGS_MODULE": "ccgsc.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "yes"}, "DEBUG must be true or false"),
        ({"DEBUG": "false"}, "SECRET_KEY must be set when DEBUG is false"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 32 characters"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must be a URL starting with"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL starting with"),
        ({"KERNEL_MAX_BYTES": "lots"}, "KERNEL_MAX_BYTES must be an integer"),
        ({"KERNEL_MEMORY_CAP": "10"}, "KERNEL_MEMORY_CAP must be at least 65536"),
        ({"ALLOWED_HOSTS": "a.example,,b.example"}, "ALLOWED_HOSTS must be a comma-separated"),
        ({"CELERY_EMBEDDED": "sometimes"}, "CELERY_EMBEDDED must be thread or eager"),
        ({"API_RATE": "100/fortnight"}, "API_RATE must look like 1200/minute"),
    ],
)
def test_malformed_configuration_refuses_to_start(env, message):
    result = start(**env)
    assert result.returncode != 0
    assert "ConfigError" in result.stderr and message in result.stderr


def test_production_with_a_real_secret_starts():
    result = start(
        DEBUG="false", SECRET_KEY="a-real-secret-" + "k" * 40, ALLOWED_HOSTS="example.org"
    )
    assert result.returncode == 0, result.stderr


def test_readers_are_strict():
    assert env_bool("X", True, environ={}) is True
    assert env_bool("X", True, environ={"X": "FALSE"}) is False
    with pytest.raises(ConfigError):
        env_bool("X", True, environ={"X": "on"})
    assert env_int("N", 3, environ={"N": " 7 "}) == 7
    with pytest.raises(ConfigError):
        env_int("N", 3, maximum=5, environ={"N": "6"})
    assert env_list("L", ["a"], environ={"L": "x, y"}) == ["x", "y"]
    assert env_url("U", ("redis",), environ={}) is None
    with pytest.raises(ConfigError):
        env_url("U", ("redis",), environ={"U": "redis://"})


def test_the_redis_cache_has_one_connection_pool_per_process():
    """Django makes a cache object per thread, and under ASGI each request runs in a thread of
    its own: with a pool per object, every request connected to Redis anew."""
    from redis import ConnectionPool

    from ccgsc.cache import SharedConnectionPool

    a = SharedConnectionPool.from_url("redis://127.0.0.1:6379/12", socket_timeout=5)
    assert a is SharedConnectionPool.from_url("redis://127.0.0.1:6379/12", socket_timeout=5)
    assert isinstance(a, ConnectionPool)
    assert a is not SharedConnectionPool.from_url("redis://127.0.0.1:6379/11", socket_timeout=5)
    assert a is not SharedConnectionPool.from_url("redis://127.0.0.1:6379/12", socket_timeout=9)
