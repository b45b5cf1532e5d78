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
    CHROMIUM_ARGS,
    ThirdPartySite,
    chromium_path,
    handler_for,
)
from tests.live import LiveServer, free_port, start_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole test module (each test opens its own context)."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (set $CHROMIUM or install the chromium package)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls where a loop runs: the tests' own queries are plain synchronous code, so allow them
    # (in this process only; the platform's processes are started without it).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


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
