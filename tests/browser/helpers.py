"""Helpers for the browser tests (fixtures are in conftest.py beside this file)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.skips import skip_unless_ci
from tests.waiting import wait_for as wait_for  # re-exported: the browser tests import it from here

ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
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


def handler_for(site: ThirdPartySite) -> type[BaseHTTPRequestHandler]:
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


# WebGPU in headless Chromium: SwiftShader's software adapter, which Chromium offers only with
# this flag (without it navigator.gpu exists but requestAdapter() answers null).
WEBGPU_ARGS = ["--enable-unsafe-webgpu"]


@contextmanager
def launched_chromium(extra_args: list[str] | None = None) -> Iterator[Any]:
    """Headless Chromium through Playwright's sync API, closed afterwards."""
    with launched_chromiums([], extra_args or []) as (_, chromium):
        yield chromium


@contextmanager
def launched_chromiums(*arg_sets: list[str]) -> Iterator[list[Any]]:
    """One headless Chromium per set of extra arguments, from one Playwright (the sync API
    allows one at a time in a thread), closed afterwards."""
    executable = chromium_path()
    if executable is None:
        skip_unless_ci("no Chromium: install the chromium package or set $CHROMIUM")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls where a loop runs: the tests' own queries are plain synchronous code, so allow them
    # (in this process only; the platform's processes are started without it).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            launched: list[Any] = []
            try:
                for extra in arg_sets:
                    launched.append(
                        playwright.chromium.launch(
                            executable_path=executable, args=[*CHROMIUM_ARGS, *extra]
                        )
                    )
                yield launched
            finally:
                for chromium in launched:
                    chromium.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous
