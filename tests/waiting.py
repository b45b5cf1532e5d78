"""The suite's one way to wait for something that happens elsewhere (another process, thread,
browser or event loop): poll a check until it holds, and fail saying what never happened.

The timeout is a ceiling for a loaded two-core machine, never a measurement: a test that must
see that something does *not* happen waits for an event or a clock instead (STYLE.md 15).
`wait_for` blocks (threads, processes, Playwright's sync API); `until` is the same for
coroutines, yielding to the event loop between checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest


def _timed_out(timeout: float, what: str, check: Callable[[], Any]) -> None:
    pytest.fail(f"timed out after {timeout} s waiting for {what or check}")


def wait_for(
    check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Call `check` until it returns something truthy, and return that; fail the test after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            _timed_out(timeout, what, check)
        time.sleep(interval)


async def until(
    check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.005, what: str = ""
) -> Any:
    """wait_for on an event loop: the loop runs (and whatever the check waits for with it)
    between checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            _timed_out(timeout, what, check)
        await asyncio.sleep(interval)
