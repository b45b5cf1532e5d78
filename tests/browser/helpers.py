"""Helpers for the browser tests: headless Chromium through Playwright (one per test module),
the platform as a real daphne process against the test database (one per module), and a
"third-party site" on another origin that serves pages and records every request it gets.

Chromium is the system's (/usr/bin/chromium, or $CHROMIUM); nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.live import LiveServer, free_port, start_server

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A background tab must not be throttled while a test watches it.
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole test module (each test opens its own context)."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (set $CHROMIUM or install the chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def platform(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """The platform (daphne) for the whole module, against the test database. Tests that put
    data in the database for it to see use transactional_db (committed data)."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ThirdPartySite:
    """An origin that is not the platform's: serves `pages` (path -> HTML) and records the
    path of every request (so a test can tell that nothing reached it)."""

    port: int
    host: str = "localhost"
    pages: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"


def _handler(site: ThirdPartySite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            site.requests.append(self.path)
            body = site.pages.get(self.path.split("?")[0])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@pytest.fixture(scope="module")
def third_party() -> Iterator[ThirdPartySite]:
    site = ThirdPartySite(port=free_port())
    server = ThreadingHTTPServer(("127.0.0.1", site.port), _handler(site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def wait_for(
    check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)
