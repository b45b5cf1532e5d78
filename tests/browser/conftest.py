"""Fixtures of the browser tests: headless Chromium through Playwright, the platform as a real
daphne process against the test database, and a "third-party site" on another origin that
serves pages and records every request it gets. Each is shared by a test module; the modules
mark themselves `browser` and join the xdist group "browser" so a module stays on one worker.

Chromium is the system's (/usr/bin/chromium, or $CHROMIUM); nothing is downloaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests.browser.helpers import (
    ASYNC_UNSAFE,
    ThirdPartySite,
    handler_for,
    launched_chromium,
)
from tests.live import LiveServer, free_port, start_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole test module (each test opens its own context)."""
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def platform(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """The platform (daphne) for the whole module, against the test database. Tests that put
    data in the database for it to see use transactional_db (committed data)."""
    saved = os.environ.pop(ASYNC_UNSAFE, None)
    try:
        server = start_server()
    finally:
        if saved is not None:
            os.environ[ASYNC_UNSAFE] = saved
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def third_party() -> Iterator[ThirdPartySite]:
    site = ThirdPartySite(port=free_port())
    server = ThreadingHTTPServer(("127.0.0.1", site.port), handler_for(site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
