"""The embed tag end to end: a page on another origin (the third_party fixture) includes
/embed.js; headless Chromium shows the platform's consent frame. Nothing connects before
consent; afterwards tasks complete and are attributed to the site; the choice is remembered;
an unregistered origin gets no frame; the HTTP fallback takes over when WebSockets are blocked.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db.models import QuerySet

from accounts.models import EmbedSite
from campaigns.models import Campaign, Result, Task
from tests.browser.helpers import wait_for
from workers.models import WorkerSession

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]


def done_count(*campaigns: Campaign) -> int:
    return Task.objects.filter(campaign__in=campaigns, state=Task.State.DONE).count()


def embed_page(platform: Any, key: str) -> str:
    return (
        "<!DOCTYPE html><html><head><title>A blog</title></head><body><h1>A blog post</h1>"
        f'<script src="{platform.url}/embed.js" data-site="{key}" async></script></body></html>'
    )


# --- the embed tag --------------------------------------------------------------------------


def browsers() -> QuerySet[WorkerSession]:
    """Browser sessions only: a native worker another test module left behind may still open
    a session after that module's data was flushed."""
    return WorkerSession.objects.filter(kind=WorkerSession.Kind.BROWSER)


def make_site(people: Any, origin: str) -> EmbedSite:
    return EmbedSite.objects.create(organization=people.org, name="A blog", origin=origin)


# Whether the embed frame created the harness (window.ccgscHarness, set by start()): it is the
# only code of the frame that connects to the server.
NO_HARNESS = "() => window.ccgscHarness === undefined"
A_MINUTE = 60_000  # ms of the page's (fake) clock


def embed_frame(page: Any) -> Any:
    (frame,) = [f for f in page.frames if "/embed/frame/" in f.url]
    return frame


def test_embed_asks_first_then_works_for_the_site(
    browser, platform, people, make_campaign, third_party
):
    campaign = make_campaign([f"{seed} 100000" for seed in range(1, 7)], kernel="montecarlo")
    site = make_site(people, third_party.origin)
    third_party.pages["/post"] = embed_page(platform, site.key)
    context = browser.new_context()
    try:
        page = context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.clock.install()  # time flows as usual, and can be run ahead
        page.goto(f"{third_party.origin}/post")
        frame = page.frame_locator("iframe[data-ccgsc]")
        frame.locator("#consent").wait_for(state="visible")
        # The host page cannot look inside the platform's frame (cookies, storage, DOM).
        reach = page.evaluate(
            """() => { try { return String(document.querySelector("iframe").contentWindow
                .localStorage.length); } catch (e) { return e.name; } }"""
        )
        assert reach == "SecurityError"
        # Nothing connects before consent, however long the banner waits: the frame's module
        # has run (it showed the banner), and a minute of its timers later there is no
        # harness, no socket, no session.
        page.clock.run_for(A_MINUTE)
        assert embed_frame(page).evaluate(NO_HARNESS), "nothing may connect before consent"
        assert sockets == []
        assert not browsers().exists()
        leased = Result.objects.filter(campaign=campaign).exclude(state=Result.State.UNSENT)
        assert not leased.exists()

        frame.locator("#opt-in").click()
        wait_for(lambda: done_count(campaign) == 6, what="the embedded worker's tasks")
        results = Result.objects.filter(campaign=campaign, state=Result.State.RETURNED)
        assert {r.site_id for r in results} == {site.pk}
        assert browsers().get().site_id == site.pk
        frame.locator("#badge").wait_for(state="visible")

        # The choice is remembered: the next visit starts without asking again...
        page.reload()
        frame = page.frame_locator("iframe[data-ccgsc]")
        frame.locator("#badge").wait_for(state="visible")
        assert not frame.locator("#consent").is_visible()
        wait_for(lambda: browsers().filter(disconnected_at=None).count() == 1)
        # ... and Stop ends the session and is remembered too.
        frame.locator("#stop").click()
        frame.locator("#off").wait_for(state="visible")
        wait_for(lambda: browsers().filter(disconnected_at=None).count() == 0)
        connected = len(sockets)
        page.reload()
        page.frame_locator("iframe[data-ccgsc]").locator("#off").wait_for(state="visible")
        page.clock.run_for(A_MINUTE)
        assert embed_frame(page).evaluate(NO_HARNESS)
        assert len(sockets) == connected
        assert browsers().filter(disconnected_at=None).count() == 0
    finally:
        context.close()


def test_embed_on_an_unregistered_origin_is_refused(
    browser, platform, people, make_campaign, third_party
):
    campaign = make_campaign(["1 1000"], kernel="montecarlo")
    site = make_site(people, "https://registered-elsewhere.example")
    third_party.pages["/copied-tag"] = embed_page(platform, site.key)
    # The frame URL used directly without a Referer: only the CSP frame-ancestors can refuse it.
    third_party.pages["/direct-frame"] = (
        f'<iframe src="{platform.url}/embed/frame/?site={site.key}"'
        ' referrerpolicy="no-referrer"></iframe>'
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        warnings: list[str] = []
        page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status) if "/embed/frame/" in r.url else 0)
        page.clock.install()
        for path in ("/copied-tag", "/direct-frame"):
            answers.clear()
            # The window's load waits for the frame (in the HTML, or inserted by the tag's
            # script before load): the frame has its answer and its document is final.
            page.goto(f"{third_party.origin}{path}", wait_until="load")
            assert len(answers) == 1, path
            frame = page.frame_locator("iframe")
            assert frame.locator("#consent").count() == 0, path
            assert frame.locator("#opt-in").count() == 0, path
            if path == "/copied-tag":
                # The embed script's frame stays invisible: nothing told it a size.
                width = page.eval_on_selector("iframe", "f => f.getBoundingClientRect().width")
                assert width == 0
                # ...and tells whoever set the tag up why, in the console.
                assert not any("CCGSC embed" in w for w in warnings)
                with page.expect_console_message(lambda m: "CCGSC embed" in m.text):
                    page.clock.fast_forward(9000)
                (warning,) = [w for w in warnings if "CCGSC embed" in w]
                assert "did not load" in warning and third_party.origin in warning
    finally:
        context.close()
    assert not browsers().exists()
    assert not Result.objects.filter(campaign=campaign).exclude(state=Result.State.UNSENT).exists()


def test_embed_falls_back_to_http_when_websockets_are_blocked(
    browser, platform, people, make_campaign, third_party
):
    campaign = make_campaign([f"{seed} 100000" for seed in range(1, 5)], kernel="montecarlo")
    site = make_site(people, third_party.origin)
    third_party.pages["/post"] = embed_page(platform, site.key)
    context = browser.new_context()
    # A network that refuses WebSockets (applies to the embed frame too).
    context.add_init_script(
        "window.WebSocket = class { constructor() { throw new Error('blocked'); } };"
    )
    try:
        page = context.new_page()
        page.goto(f"{third_party.origin}/post")
        page.frame_locator("iframe[data-ccgsc]").locator("#opt-in").click()
        wait_for(lambda: done_count(campaign) == 4, timeout=30, what="tasks over HTTP")
    finally:
        context.close()
    session = browsers().get()
    assert session.transport == WorkerSession.Transport.HTTP
    assert session.site_id == site.pk
    assert set(
        Result.objects.filter(campaign=campaign, state=Result.State.RETURNED).values_list(
            "site_id", flat=True
        )
    ) == {site.pk}


# --- the frame stays out of the host page's way ---------------------------------------------

HOST_CLICKS = """<script>window.hostClicks = [];
document.addEventListener("click", (e) => window.hostClicks.push([e.clientX, e.clientY]));
</script>"""


def test_embed_frame_fits_its_card_and_can_be_dismissed_for_good(
    browser, platform, people, third_party
):
    site = make_site(people, third_party.origin)
    third_party.pages["/clicks"] = embed_page(platform, site.key).replace(
        "</body>", f"{HOST_CLICKS}</body>"
    )
    for width, height in ((1280, 800), (390, 844)):
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            check_fits_then_dismiss(context.new_page(), f"{third_party.origin}/clicks")
        finally:
            context.close()


def check_fits_then_dismiss(page: Any, url: str) -> None:
    page.goto(url)
    frame = page.frame_locator("iframe[data-ccgsc]")
    card = frame.locator("#consent")
    card.wait_for(state="visible")

    def fitted() -> bool:
        box, outer = card.bounding_box(), page.locator("iframe").bounding_box()
        return bool(box and outer and outer["height"] - box["height"] <= 10)

    wait_for(fitted, what="the frame to fit its card")
    box = card.bounding_box()
    assert box is not None
    # Just above and just left of the card: the host page gets both clicks.
    beside = [(box["x"] + 40, box["y"] - 6), (box["x"] - 6, box["y"] + 40)]
    beside = [(x, y) for x, y in beside if x >= 0]
    for x, y in beside:
        page.mouse.click(x, y)
    assert len(page.evaluate("window.hostClicks")) == len(beside), beside

    # "No thanks" leaves a small pill; its close button hides everything, also after a reload.
    frame.locator("#opt-out").click()
    frame.locator("#off").wait_for(state="visible")
    frame.locator("#dismiss").click()
    page.locator("iframe[data-ccgsc]").wait_for(state="hidden")
    page.reload()
    page.locator("iframe[data-ccgsc]").wait_for(state="attached")
    wait_for(
        lambda: page.evaluate(
            "() => window.__ccgscEmbed && document.querySelector('iframe').style.display === 'none'"
        ),
        what="the dismissed frame to stay hidden",
    )
    assert not frame.locator("#off").is_visible()
