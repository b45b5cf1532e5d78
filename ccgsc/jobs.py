"""Enqueueing background jobs.

With a broker (REDIS_URL set) a job goes to Celery after the current transaction commits, so the
worker never looks for a row that is not visible yet. Without one (embedded mode) the job runs in
a small in-process thread pool, or synchronously when CELERY_EMBEDDED=eager (the test suite).
Arguments must be JSON-serializable (IDs, not model instances): the eager path checks that too,
so a mistake fails in the tests rather than in production.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Task
from django.conf import settings
from django.db import close_old_connections, transaction

log = logging.getLogger(__name__)
_pool: ThreadPoolExecutor | None = None


def _run_in_thread(task: Task, args: tuple[Any, ...]) -> None:
    try:
        task.apply(args=args, throw=True)
    except Exception:
        log.exception("background job %s%r failed", task.name, args)
    finally:
        close_old_connections()


def enqueue(task: Task, *args: Any) -> None:
    """Run `task(*args)` in the background once the current transaction commits."""
    json.dumps(args)  # raises TypeError for a model instance passed by mistake

    def send() -> None:
        global _pool
        if settings.USE_CELERY_BROKER:
            task.apply_async(args=args)
        elif settings.CELERY_EMBEDDED == "eager":
            task.apply(args=args, throw=True)
        else:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ccgsc-job")
            _pool.submit(_run_in_thread, task, args)

    transaction.on_commit(send)
