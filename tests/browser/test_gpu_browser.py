"""GPU work in the browser, end to end on the contribute page: headless Chromium with WebGPU
(SwiftShader, --enable-unsafe-webgpu) finds its adapter, shows it, lets the volunteer turn GPU
use on and off (remembered), and announces the GPU in its hello only when it is on; Chromium
without the flag (navigator.gpu but no adapter) never announces one, so it is never sent GPU
work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.browser.helpers import WEBGPU_ARGS, launched_chromiums

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

GPU_NOTE_SAYS = "(state) => document.getElementById('gpu-note').dataset.state === state"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="module")
def chromiums() -> Iterator[list[Any]]:
    """Two Chromiums from one Playwright: without WebGPU's flag (navigator.gpu, no adapter) and
    with it (SwiftShader's software adapter)."""
    with launched_chromiums([], WEBGPU_ARGS) as launched:
        yield launched


@pytest.fixture(scope="module")
def browser(chromiums: list[Any]) -> Any:
    return chromiums[0]


@pytest.fixture(scope="module")
def webgpu_browser(chromiums: list[Any]) -> Any:
    return chromiums[1]


def hello_of(frame: Any) -> dict[str, Any] | None:
    if not isinstance(frame, bytes):
        return None
    message = msgspec.msgpack.decode(frame)
    return message if isinstance(message, dict) and message.get("t") == "hello" else None


def next_hello(page: Any, action: Any) -> dict[str, Any]:
    """The hello of the WebSocket that `action` (a click) opens."""
    with page.expect_websocket() as opened:
        action()
    frame = opened.value.wait_for_event("framesent", predicate=lambda f: hello_of(f) is not None)
    hello = hello_of(frame)
    assert hello is not None
    return hello


def contribute(browser: Any, platform: Any) -> tuple[Any, Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{platform.url}/contribute/")
    page.wait_for_function("() => document.getElementById('gpu-note').dataset.state !== 'checking'")
    return context, page


def test_the_gpu_toggle_shows_the_adapter_and_is_remembered(webgpu_browser, platform):
    context, page = contribute(webgpu_browser, platform)
    try:
        note = page.locator("#gpu-note")
        assert note.get_attribute("data-state") == "found"
        assert "swiftshader" in note.inner_text().lower()
        box = page.locator("#gpu")
        # A software adapter (the CPU emulating a GPU) is off until the volunteer turns it on.
        assert box.is_enabled() and not box.is_checked()
        box.check()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("section[aria-labelledby=worker-title]").screenshot(
            path=str(SCREENSHOTS / "contribute-gpu-toggle.png")
        )
        hello = next_hello(page, lambda: page.click("#start"))
        assert hello["gpu"]["adapter"] == note.get_attribute("data-adapter")
        assert hello["gpu"]["max_buffer"] > 0 and hello["gpu"]["max_workgroups"] >= 65535
        assert hello["gpu"]["max_invocations"] >= 256
        # Turning it off starts a session that does not announce a GPU.
        assert "gpu" not in next_hello(page, box.uncheck)
        page.click("#stop")
        box.check()
        page.reload()
        page.wait_for_function(GPU_NOTE_SAYS, arg="found")
        assert page.locator("#gpu").is_checked()
    finally:
        context.close()


def test_a_browser_without_an_adapter_never_announces_a_gpu(browser, platform):
    context, page = contribute(browser, platform)
    try:
        assert page.locator("#gpu-note").get_attribute("data-state") == "none"
        box = page.locator("#gpu")
        assert box.is_disabled() and not box.is_checked()
        assert page.evaluate("() => navigator.gpu !== undefined")  # the API, but no adapter
        assert "gpu" not in next_hello(page, lambda: page.click("#start"))
    finally:
        context.close()
