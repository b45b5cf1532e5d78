"""ASGI requests reuse PostgreSQL connections (ccgsc/dbconnections.py): each request runs in a
thread of its own, so a connection kept by its thread would be opened anew every request."""

from __future__ import annotations

import pytest
from channels.testing import HttpCommunicator
from django.core.cache import cache
from django.db import connection

from ccgsc import dbconnections
from ccgsc.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'", reason="connections are kept on PostgreSQL only"
    ),
]


@pytest.fixture(autouse=True)
def _no_parked():
    yield
    with dbconnections._lock:
        parked, dbconnections._parked[:] = list(dbconnections._parked), []
    for wrapper in parked:
        wrapper._thread_ident = __import__("_thread").get_ident()
        wrapper.close()


def backend_pids() -> list[int]:
    with dbconnections._lock:
        return [w.connection.info.backend_pid for w in dbconnections._parked]


async def status() -> int:
    """GET /api/v1/status, which reads the database for anyone (its cached answer dropped)."""
    cache.delete("ccgsc:status")
    headers = [(b"host", b"localhost")]
    comm = HttpCommunicator(application, "GET", "/api/v1/status", headers=headers)
    response = await comm.get_response(30)
    await comm.wait(30)  # the request ends (request_finished) after its answer is sent
    return int(response["status"])


async def test_the_next_request_gets_the_connection_the_last_one_left() -> None:
    assert await status() == 200
    first = backend_pids()
    assert len(first) == 1  # the request's connection waits for the next request
    for _ in range(3):
        assert await status() == 200
        assert backend_pids() == first  # the same PostgreSQL backend served each


def test_a_connection_in_a_transaction_is_not_kept() -> None:
    from django.db import transaction

    with transaction.atomic():
        connection.ensure_connection()
        assert not dbconnections.idle(connection)
    assert dbconnections.idle(connection)
