"""The browser worker end to end on the contribute page: headless Chromium against the
platform running as a real daphne process (fixtures in conftest.py beside this file).

Covered: two hands complete campaigns with results byte-identical to the native wasmtime host;
the CPU throttle; a looping WASM kernel is terminated at its limit while the other hand keeps
going; closing the tab releases its leases; a JS kernel cannot reach the network.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db.models import QuerySet

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Kernel, Result, Task
from kernelhost import KernelHost
from tests.browser.helpers import wait_for
from tests.conftest import kernel_bytes
from tests.live import start_server
from workers import protocol
from workers.models import WorkerSession

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

HARNESS_STATE = "() => window.ccgscHarness.snapshot()"


def browsers() -> QuerySet[WorkerSession]:
    """Browser sessions only: a native worker another test module left behind may still open
    a session after that module's data was flushed."""
    return WorkerSession.objects.filter(kind=WorkerSession.Kind.BROWSER)


def done_count(*campaigns: Campaign) -> int:
    return Task.objects.filter(campaign__in=campaigns, state=Task.State.DONE).count()


def held_leases() -> int:
    return Result.objects.filter(state=Result.State.LEASED, session_id__in=browsers()).count()


def open_contribute(
    browser: Any,
    platform: Any,
    query: str = "",
    *,
    sent: list[bytes] | None = None,
    clock: bool = False,
) -> tuple[Any, Any]:
    """The contribute page, started. `sent` collects every frame the harness sends over its
    WebSocket; with `clock`, the page's timers run on Playwright's clock (time flows as usual
    and can be run ahead)."""
    context = browser.new_context()
    page = context.new_page()
    if sent is not None:
        page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))
    if clock:
        page.clock.install()
    page.goto(f"{platform.url}/contribute/?{query}")
    page.click("#start")
    return context, page


# --- the contribute page ------------------------------------------------------------------------


def test_contribute_page_two_hands_match_the_native_host(browser, platform, make_campaign):
    montecarlo = make_campaign([f"{seed} 200000" for seed in range(1, 11)], kernel="montecarlo")
    tiles = [f"60 40 {x} {y} 20 20 300" for y in (0, 20) for x in (0, 20, 40)]
    mandelbrot = make_campaign(tiles, kernel="mandelbrot")
    sent: list[bytes] = []
    context, page = open_contribute(browser, platform, "hands=2", sent=sent)
    try:
        wait_for(lambda: done_count(montecarlo, mandelbrot) == 16, what="16 tasks done")
        state = page.evaluate(HARNESS_STATE)
        assert len(state["hands"]) == 2
        assert state["transport"] == "websocket"
        page.wait_for_function("() => document.body.dataset.done === '16'")
        assert page.inner_text("#stat-done") == "16"
        # Waiting is a share of the hands' time (a sum over hands would exceed the wall time).
        assert 0 <= int(page.inner_text("#stat-idle").removesuffix("%")) <= 100
        # The campaign being served is shown with its public description.
        page.wait_for_selector(f"[data-campaign='{montecarlo.pk}'] .card-title")
    finally:
        context.close()

    host = KernelHost()
    results = Result.objects.filter(
        campaign__in=[montecarlo, mandelbrot], state=Result.State.RETURNED
    ).select_related("task", "campaign")
    assert results.count() == 16
    for result in results:
        name = "montecarlo" if result.campaign_id == montecarlo.pk else "mandelbrot"
        native = host.run(kernel_bytes(name), stdin=bytes(result.task.input))
        assert native.error is None
        assert result.outcome == Result.Outcome.SUCCESS
        assert bytes(result.output or b"") == native.stdout, f"task {result.task_id} differs"
    session = wait_for(
        lambda: browsers().filter(disconnected_at__isnull=False).first(),
        what="the session to close",
    )
    assert session.kind == "browser" and session.slots == 2
    assert session.tasks_done == 16 and session.is_value_session
    assert session.busy_ms > 0
    # The harness reports its idle time ("downtime": hands free, nothing to run) as metrics.
    assert session.idle_ms > 0
    # Every frame the harness sent is a message of the current protocol version, as the
    # server's structs declare it (unknown fields, wrong types and bounds would raise).
    kinds = [type(protocol.decode(frame, version=protocol.VERSION)).__name__ for frame in sent]
    assert {"Hello", "Want", "Result"} <= set(kinds), kinds


def test_hands_stay_within_the_reported_cores(browser, platform, make_campaign):
    """Hundreds of hands on a small machine exhaust the tab (kernels trap allocating memory):
    whatever the address, the saved settings or the field say, a page runs at most one hand
    per logical core the browser reports."""
    campaign = make_campaign([f"{seed} 100000" for seed in range(1, 5)], kernel="montecarlo")
    context, page = open_contribute(browser, platform, "hands=999&throttle=abc")
    try:
        # A throttle that is no percentage from 10 to 100 means full speed.
        assert page.input_value("#throttle") == "100"
        cores = page.evaluate("navigator.hardwareConcurrency")
        wait_for(lambda: done_count(campaign) == 4, what="the tasks")
        assert len(page.evaluate(HARNESS_STATE)["hands"]) == cores
        assert page.input_value("#hands") == str(cores)
        page.fill("#hands", "500")
        page.dispatch_event("#hands", "change")
        assert page.input_value("#hands") == str(cores)
        assert page.evaluate("window.ccgscHarness.handCount") == cores
    finally:
        context.close()
    session = wait_for(lambda: browsers().first(), what="the session")
    assert session.slots == cores


def test_results_of_long_tasks_share_frames(browser, platform, make_campaign):
    """While every hand has another task queued, results wait a little for company (the
    server's cost is per frame): far fewer result frames than tasks, every task done once."""
    campaign = make_campaign([f"{seed} 8000000" for seed in range(1, 41)], kernel="montecarlo")
    context, _page = open_contribute(browser, platform, "hands=2")
    try:
        wait_for(lambda: done_count(campaign) == 40, timeout=60, what="40 tasks done")
    finally:
        context.close()
    returned = Result.objects.filter(campaign=campaign, state=Result.State.RETURNED)
    assert returned.count() == 40
    frames = returned.values("returned_at").distinct().count()  # one timestamp per frame
    assert frames <= 20, f"{frames} result frames for 40 tasks"


def test_throttle_at_half_keeps_the_busy_fraction_near_half(browser, platform, make_campaign):
    # One hand, tasks of roughly 100 ms: at 50 % it rests as long as it ran after each task.
    campaign = make_campaign([f"{seed} 30000000" for seed in range(1, 14)], kernel="montecarlo")
    context, _page = open_contribute(browser, platform, "hands=1&throttle=50")
    try:
        wait_for(lambda: done_count(campaign) == 13, timeout=90, what="13 tasks done")
    finally:
        context.close()
    results = sorted(
        Result.objects.filter(campaign=campaign, state=Result.State.RETURNED),
        key=lambda r: r.returned_at or 0,
    )
    # Measured from the first result on (page load, compiling the kernel and starting the
    # worker come before the first task and are not the throttle's business): each later task
    # is one cycle of rest then run.
    later = results[1:]
    busy_ms = sum(r.runtime_ms or 0 for r in later)
    assert results[0].returned_at is not None and later[-1].returned_at is not None
    wall_ms = (later[-1].returned_at - results[0].returned_at).total_seconds() * 1000
    fraction = busy_ms / wall_ms
    assert 0.40 <= fraction <= 0.60, f"busy {busy_ms} ms of {wall_ms:.0f} ms = {fraction:.2f}"


def test_a_looping_kernel_is_stopped_at_its_limit_and_the_other_hand_keeps_going(
    browser, platform, make_campaign
):
    looping = make_campaign(["forever"], kernel="loop", task_timeout=2, max_attempts=1)
    steady = make_campaign([f"{seed} 3000000" for seed in range(1, 41)], kernel="montecarlo")
    context, _page = open_contribute(browser, platform, "hands=2")
    try:
        wait_for(lambda: done_count(steady) == 40, timeout=40, what="the steady campaign")
        loop_result = wait_for(
            lambda: Result.objects.filter(campaign=looping, state=Result.State.RETURNED).first(),
            what="the looping task's result",
        )
    finally:
        context.close()
    assert loop_result.error_kind == "timeout"
    assert loop_result.outcome == Result.Outcome.TIMEOUT
    assert 1900 <= loop_result.runtime_ms <= 4000
    # While one hand was stuck in the loop, the other one kept completing tasks.
    during = Result.objects.filter(
        campaign=steady,
        returned_at__gt=loop_result.leased_at,
        returned_at__lt=loop_result.returned_at,
    ).count()
    assert during >= 3
    looping.refresh_from_db()
    assert looping.tasks_failed == 1


def test_closing_the_tab_releases_its_leases(browser, platform, make_campaign):
    campaign = make_campaign(["a", "b", "c"], kernel="loop", task_timeout=60)
    context, page = open_contribute(browser, platform, "hands=1")
    try:
        wait_for(lambda: held_leases() >= 1, what="a lease")
        page.close()
        wait_for(lambda: held_leases() == 0, timeout=10, what="the leases to come back")
    finally:
        context.close()
    assert Result.objects.filter(campaign=campaign, state=Result.State.UNSENT).count() == 3
    assert browsers().get().disconnected_at is not None


def test_a_js_kernel_cannot_reach_the_network(browser, platform, people, third_party):
    source = """
export async function run(input, context) {
  const target = new TextDecoder().decode(input);
  const tries = {};
  const attempt = async (name, fn) => {
    try { await fn(); tries[name] = "reached"; } catch (e) { tries[name] = "blocked"; }
  };
  await attempt("fetch", () => fetch(target + "/beacon?via=fetch"));
  await attempt("fetch-platform", () => fetch("/api/v1/status"));
  await attempt("websocket", () => new Promise((resolve, reject) => {
    const ws = new WebSocket(target.replace("http", "ws") + "/beacon?via=ws");
    ws.onopen = resolve; ws.onerror = reject; ws.onclose = reject;
    setTimeout(reject, 3000);
  }));
  await attempt("import", () => import(target + "/beacon.js?via=import"));
  await attempt("xhr", () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", target + "/beacon?via=xhr");
    xhr.onload = resolve; xhr.onerror = reject;
    xhr.send();
  }));
  context.progress(1);
  return JSON.stringify(tries);
}
"""
    kernel = services.kernel_upload(
        organization=people.org, name="nosy", data=source.encode(), kind=Kernel.Kind.JS
    )
    campaign = services.campaign_create(
        organization=people.org, name="nosy", kernel=kernel, approved=True
    )
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=third_party.origin.encode())])
    services.campaign_start(campaign=campaign)
    context, _page = open_contribute(browser, platform, "hands=1")
    try:
        wait_for(lambda: done_count(campaign) == 1, what="the JS task")
    finally:
        context.close()
    result = Result.objects.get(campaign=campaign, state=Result.State.RETURNED)
    assert result.outcome == Result.Outcome.SUCCESS, result.stderr_tail
    assert json.loads(bytes(result.output or b"")) == {
        "fetch": "blocked",
        "fetch-platform": "blocked",
        "websocket": "blocked",
        "import": "blocked",
        "xhr": "blocked",
    }
    assert not [path for path in third_party.requests if "beacon" in path]


def test_a_crashing_worker_is_replaced_and_the_other_hand_keeps_going(browser, platform, people):
    source = """
export async function run(input, context) {
  const what = new TextDecoder().decode(input);
  if (what === "crash") {
    // An error outside run(): the worker itself reports it, and the task never answers.
    setTimeout(() => { throw new Error("boom"); }, 0);
    await new Promise(() => {});
  }
  await new Promise((resolve) => setTimeout(resolve, 20));
  return what.toUpperCase();
}
"""
    kernel = services.kernel_upload(
        organization=people.org, name="fragile", data=source.encode(), kind=Kernel.Kind.JS
    )
    campaign = services.campaign_create(
        organization=people.org, name="fragile", kernel=kernel, approved=True, max_attempts=1
    )
    inputs = ["crash", *(f"task {i}" for i in range(12))]
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i.encode()) for i in inputs])
    services.campaign_start(campaign=campaign)
    context, _page = open_contribute(browser, platform, "hands=2")
    try:
        wait_for(
            lambda: (
                Result.objects.filter(campaign=campaign, state=Result.State.RETURNED).count() == 13
            ),
            what="every task to be answered",
        )
    finally:
        context.close()
    crashed = Result.objects.get(campaign=campaign, task__seq=0)
    assert crashed.error_kind == "trap"
    assert "boom" in crashed.stderr_tail
    others = Result.objects.filter(campaign=campaign, task__seq__gt=0)
    assert all(r.outcome == Result.Outcome.SUCCESS for r in others)
    assert sorted(bytes(r.output or b"") for r in others) == sorted(
        f"TASK {i}".encode() for i in range(12)
    )


# The harness's messages from now on, kept in the page (window.ccgscHarness.sent), in order.
RECORD_SENT = """() => {
  const harness = window.ccgscHarness;
  const send = harness._send.bind(harness);
  harness.sent = [];
  harness._send = (message) => { harness.sent.push(message); send(message); };
}"""
ASKED = """() => window.ccgscHarness.sent.filter(
  (m) => (m.t === "want" && m.n > 0) || (m.t === "result" && m.want > 0))"""

HIDE = """(hidden) => {
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_hidden_tab_pauses_unless_background_work_is_allowed(browser, platform, make_campaign):
    campaign = make_campaign([f"{seed} 8000000" for seed in range(1, 41)], kernel="montecarlo")
    context, page = open_contribute(browser, platform, "hands=1", clock=True)
    try:
        wait_for(lambda: done_count(campaign) >= 1, what="the first task")
        page.evaluate(HIDE, True)
        page.wait_for_function("() => window.ccgscHarness.snapshot().state === 'paused'")
        # Recording starts once paused: a result frame sent just before the tab hid rightly
        # asked for more (CI once caught one between the two).
        page.evaluate(RECORD_SENT)
        # Queued tasks go back at once; the task running finishes and nothing more is leased:
        # the harness asks for nothing while paused, not even after a minute of its timers.
        wait_for(lambda: held_leases() == 0, what="the queued leases to go back")
        paused_at = done_count(campaign)
        page.clock.run_for(60_000)
        assert page.evaluate(ASKED) == []
        assert held_leases() == 0 and done_count(campaign) == paused_at
        assert "while the tab is hidden" in page.inner_text("#detail")

        page.evaluate(HIDE, False)
        wait_for(lambda: done_count(campaign) > paused_at, what="work to resume")
        # With "keep working in the background" ticked, hiding the tab changes nothing.
        page.check("#background")
        page.evaluate(HIDE, True)
        resumed_at = done_count(campaign)
        wait_for(lambda: done_count(campaign) > resumed_at, what="work while hidden")
        assert page.evaluate("window.ccgscHarness.snapshot().state") != "paused"
    finally:
        context.close()


def test_an_idle_tab_answers_the_servers_pings_and_keeps_its_session(browser, platform):
    # A server whose keepalive pings after 1 s of silence (instead of 50 s) and drops a socket
    # whose answer has not come 3 s after.
    quick = start_server(daphne_args=("--ping-interval", "1", "--ping-timeout", "3"))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{quick.url}/contribute/")
        page.click("#start")
        page.wait_for_function("() => window.ccgscHarness.snapshot().session !== null")
        session = page.evaluate("window.ccgscHarness.snapshot().session")
        limits = page.evaluate("window.ccgscHarness.limits")
        # Told the server's own keepalive, and to ping only a server silent a little longer.
        assert (limits["beat"], limits["heartbeat"]) == (1, 1 + protocol.QUIET_MARGIN)
        page.evaluate(RECORD_SENT)
        # Each of the server's pings (a protocol message, which the page's script sees) gets
        # its pong; more of them than the 3 s the server waits for one: the socket stays. Seven
        # take over 12 s: the 10 s tick of the harness's metrics comes within.
        page.wait_for_function(
            "() => window.ccgscHarness.sent.filter((m) => m.t === 'pong').length >= 7",
            timeout=90_000,
        )
        assert page.evaluate("window.ccgscHarness.snapshot().session") == session
        # The server never silent for its 6 s of heartbeat (it pings every 2 s or so), the tab
        # sends no ping of its own; and nothing else either: an idle tab is silent (its
        # metrics wait while nothing changes), which is what lets the server's pings apply.
        assert {m["t"] for m in page.evaluate("window.ccgscHarness.sent")} == {"pong"}
        # Stopping still reports the idle time (the last metrics), then says bye.
        page.click("#stop")
        sent = [m["t"] for m in page.evaluate("window.ccgscHarness.sent") if m["t"] != "pong"]
        assert sent == ["metrics", "bye"]
    finally:
        context.close()
        quick.stop()


def test_a_signed_in_contributor_gets_the_results(browser, platform, make_campaign, people):
    from django.conf import settings
    from django.test import Client

    campaign = make_campaign([f"{seed} 100000" for seed in range(1, 5)], kernel="montecarlo")
    client = Client()
    client.force_login(people.teammate)
    context = browser.new_context()
    try:
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": platform.url,
                }
            ]
        )
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/?hands=1")
        assert "contributing anonymously" not in page.content()
        page.click("#start")
        wait_for(lambda: done_count(campaign) == 4, what="the signed-in worker's tasks")
        # Validated work earns points; the page shows the contributor's total.
        from rewards.models import Total

        total = wait_for(
            lambda: (
                Total.objects.filter(scope="user", key=people.teammate.pk, points__gt=0)
                .values_list("points", flat=True)
                .first()
            ),
            what="points for the validated results",
        )
        page.reload()
        page.wait_for_function(
            f"() => document.getElementById('stat-points').textContent === '{total:,}'"
        )
    finally:
        context.close()
    assert set(Result.objects.filter(campaign=campaign).values_list("user_id", flat=True)) == {
        people.teammate.pk
    }
    assert browsers().get().user_id == people.teammate.pk
