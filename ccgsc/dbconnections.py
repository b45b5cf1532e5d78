"""PostgreSQL connections kept from one ASGI request to the next (daphne, ccgsc/asgi.py).

Django's ASGI handler runs each request's synchronous code in a thread of its own (one
ThreadSensitiveContext per request), and a Django database connection belongs to its thread:
CONN_MAX_AGE never kept one across requests, so every API request opened a new PostgreSQL
connection (about 7 ms on the development machine) and paid for the new backend's cold
catalog caches in its first queries (about 8 ms more): the largest part of a synchronous run's
time in the server (docs/benchmarks.md, "Synchronous offload").

So when an ASGI request ends with its connection idle (autocommit, no transaction open, no
error), the connection is parked here, after Django's own end-of-request check
(close_old_connections); the next ASGI request's thread adopts one before its view runs, and
Django's checks apply to it again (close_if_unusable_or_obsolete: CONN_MAX_AGE, errors; the
health check on first use). A connection changes threads only between requests, so one thread
at a time uses it. At most MAX_PARKED wait; others close with their thread as before. Only
HTTP requests through ASGI are concerned: WebSocket sessions' database threads, the sweeper's
and Celery's keep their own connections, and the test client's requests (WSGI-style, no
`scope`) are left alone.
"""

from __future__ import annotations

import _thread
import threading
from typing import Any

from django.core.signals import request_finished, request_started
from django.db import DEFAULT_DB_ALIAS, connections

MAX_PARKED = 16

_parked: list[Any] = []
_lock = threading.Lock()
_request = threading.local()  # .asgi: this thread serves an ASGI request now


def adopt(sender: Any, scope: Any = None, **kwargs: Any) -> None:
    """request_started: give this request's thread a parked connection, if it has none."""
    if scope is None:
        return
    _request.asgi = True
    current = connections[DEFAULT_DB_ALIAS]
    if current.vendor != "postgresql" or current.connection is not None:
        return
    with _lock:
        wrapper = _parked.pop() if _parked else None
    if wrapper is None:
        return
    # Django checks that a connection is used by the thread that made it: it is this
    # thread's now (the thread that parked it has finished its request).
    wrapper._thread_ident = _thread.get_ident()
    connections[DEFAULT_DB_ALIAS] = wrapper
    wrapper.close_if_unusable_or_obsolete()


def park(sender: Any, **kwargs: Any) -> None:
    """request_finished: keep this request's connection for the next request, if idle."""
    if not getattr(_request, "asgi", False):
        return
    _request.asgi = False
    wrapper = connections[DEFAULT_DB_ALIAS]
    if not idle(wrapper):
        return
    with _lock:
        if len(_parked) >= MAX_PARKED:
            return
        _parked.append(wrapper)
    del connections[DEFAULT_DB_ALIAS]  # a later query of this thread opens its own


def idle(wrapper: Any) -> bool:
    """Open, in autocommit, outside any transaction, and without errors."""
    if wrapper.vendor != "postgresql" or wrapper.connection is None:
        return False
    if wrapper.in_atomic_block or not wrapper.autocommit or wrapper.needs_rollback:
        return False
    if wrapper.errors_occurred or wrapper.closed_in_transaction:
        return False
    from psycopg.pq import TransactionStatus

    return bool(wrapper.connection.info.transaction_status == TransactionStatus.IDLE)


def parked() -> int:
    """How many connections wait for a request (tests, diagnostics)."""
    with _lock:
        return len(_parked)


def install() -> None:
    """Connect the handlers (after Django's own close_old_connections, which runs first)."""
    request_started.connect(adopt, dispatch_uid="ccgsc.dbconnections.adopt")
    request_finished.connect(park, dispatch_uid="ccgsc.dbconnections.park")
