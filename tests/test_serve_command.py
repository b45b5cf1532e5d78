"""`manage.py serve` (what `make run` starts): with REDIS_URL sending jobs to Celery, a Celery
worker is started beside the server (or, without --with-worker, a warning says one is needed),
so the demo campaigns do not stay generating forever."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from ccgsc import server
from workers.management.commands import serve


class FakeProcess:
    started: list[list[str]] = []

    def __init__(self, cmd: list[str]) -> None:
        FakeProcess.started.append(cmd)

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def started(monkeypatch) -> list[list[str]]:
    FakeProcess.started = []
    monkeypatch.setattr(serve.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(server.CommandLineInterface, "run", lambda self, argv: None)
    return FakeProcess.started


def _serve(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("serve", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _celery(started: list[list[Any]]) -> list[list[Any]]:
    return [cmd for cmd in started if "celery" in cmd]


def test_with_celery_jobs_a_celery_worker_is_started_beside_the_server(settings, started):
    settings.USE_CELERY_BROKER = True
    out, _ = _serve("--with-worker", "--port", "1")
    assert len(_celery(started)) == 1 and "worker" in _celery(started)[0]
    assert len(started) == 2  # and the native worker
    assert "started a Celery worker" in out


def test_without_the_worker_option_a_warning_says_a_celery_worker_is_needed(settings, started):
    settings.USE_CELERY_BROKER = True
    _, err = _serve("--port", "1")
    assert not started and "celery -A ccgsc worker" in err


def test_inline_jobs_need_no_celery_worker(settings, started):
    settings.USE_CELERY_BROKER = False
    out, err = _serve("--with-worker", "--port", "1")
    assert not _celery(started) and "Celery" not in out + err
