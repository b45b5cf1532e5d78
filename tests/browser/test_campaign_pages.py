"""In real Chromium against a real daphne and native worker processes: the owner's campaign page
updates its progress bar and throughput chart live while workers complete tasks; the Mandelbrot
demo paints an image identical to the reference render; the primes and Monte Carlo demos show
what the campaign computed (and the reducer's answer).

Set CCGSC_SCREENSHOTS=<dir> to keep screenshots of the pages (they always go to tmp_path)."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Task
from kernelhost import default_host
from tests.browser.helpers import wait_for
from tests.conftest import kernel_bytes

# `browser` and `platform` (one Chromium and one daphne for the module) are the fixtures of
# tests/browser/conftest.py; the native workers are started with platform.worker().
pytestmark = pytest.mark.live


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("CCGSC_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def new_page(browser: Any, base_url: str, user: Any = None) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url)
    if user is not None:
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": base_url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    return page


def campaign_of(people: Any, kernel: str, inputs: list[str], **kwargs: Any) -> Campaign:
    org = people.org
    k = services.kernel_upload(organization=org, name=kernel, data=kernel_bytes(kernel))
    campaign = services.campaign_create(
        organization=org, name=f"{kernel} in the browser", kernel=k, approved=True, **kwargs
    )
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i.encode()) for i in inputs])
    campaign.refresh_from_db()
    return campaign


def finished(campaign: Campaign) -> bool:
    campaign.refresh_from_db()
    return campaign.state == Campaign.State.COMPLETED


def test_campaign_page_updates_progress_and_chart_live(
    browser,
    platform,
    transactional_db,
    people,
    tmp_path,
):
    # About 0.6 s per task (150 million points), two slots: a run of about ten seconds, long
    # enough for several chart points on an idle machine too (50 million once ended in 3 s).
    campaign = campaign_of(people, "montecarlo", [f"{seed} 150000000" for seed in range(1, 41)])
    services.campaign_start(campaign=campaign)
    page = new_page(browser, platform.url, people.teammate)
    page.goto(f"/orgs/alpha/campaigns/{campaign.pk}/")
    wait_for(
        lambda: page.get_attribute("#live-status", "data-mode") == "live", what="the live socket"
    )
    assert page.get_attribute("#progress-bar", "style") == "width: 0%"
    points_before = int(page.get_attribute("#throughput-chart", "data-points") or 0)

    worker = platform.worker("--exit-when-idle", "5", slots=2)
    widths: list[float] = []
    rates: list[float] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        width = page.evaluate(
            "parseFloat(document.getElementById('progress-bar').style.width) || 0"
        )
        if not widths or width != widths[-1]:
            widths.append(width)
        last = page.get_attribute("#throughput-chart", "data-last")
        if last is not None:
            rates.append(float(last))
        if width >= 100 and page.text_content('[data-field="state"]') == "completed":
            break
        time.sleep(0.2)
    screenshot(page, tmp_path, "campaign_page")
    assert widths[-1] == 100, widths
    # The bar moved through intermediate values while the workers ran, not in one jump.
    assert len([w for w in widths if 0 < w < 100]) >= 3, widths
    assert widths == sorted(widths)
    points_after = int(page.get_attribute("#throughput-chart", "data-points") or 0)
    assert points_after >= points_before + 4
    assert max(rates) > 0
    assert page.text_content('[data-field="tasks_done"]') == "40"
    # The chart is drawn (uPlot's canvas exists and has a size).
    assert page.evaluate("document.querySelector('#throughput-chart canvas')?.width > 0"), (
        "no chart canvas"
    )
    assert not page.errors, page.errors
    worker.wait(30)
    assert finished(campaign)


def test_mandelbrot_page_paints_the_reference_image(
    browser,
    platform,
    transactional_db,
    people,
    tmp_path,
):
    org = people.org
    kernel = services.kernel_upload(
        organization=org, name="mandelbrot", data=kernel_bytes("mandelbrot")
    )
    generator = services.kernel_upload(
        organization=org, name="mandelbrot_gen", data=kernel_bytes("mandelbrot_gen")
    )
    campaign = services.campaign_create(
        organization=org,
        name="Mandelbrot 400x300",
        kernel=kernel,
        input_source=Campaign.InputSource.GENERATOR,
        generator=generator,
        generator_args=["400", "300", "24", "30", "1000"],
        approved=True,
    )
    campaign.refresh_from_db()
    assert campaign.tasks_total == 720, campaign.error
    services.campaign_start(campaign=campaign)

    page = new_page(browser, platform.url)  # anonymous: the demo page is public
    page.goto(f"/campaigns/{campaign.pk}/demo/")
    # Before any tile arrives the canvas shows a placeholder hatch, not black like the set.
    background = page.eval_on_selector(
        "#mandelbrot-canvas", "c => [getComputedStyle(c).backgroundImage, c.dataset.painted]"
    )
    assert "repeating-linear-gradient" in background[0] and background[1] is None
    platform.worker("--exit-when-idle", "5", slots=4)
    wait_for(
        lambda: page.get_attribute("#mandelbrot-canvas", "data-painted") == "720",
        timeout=180,
        what="all 720 tiles painted",
    )
    shot = screenshot(page, tmp_path, "mandelbrot_demo")
    assert shot.stat().st_size > 10_000

    reference = default_host().run(kernel_bytes("mandelbrot"), stdin=b"400 300 0 0 400 300 1000")
    assert reference.ok and len(reference.stdout) == 400 * 300 * 2
    expected = list(struct.unpack("<120000H", reference.stdout))
    painted = page.evaluate("Array.from(window.ccgscMandelbrot.counts)")
    assert painted == expected
    # Every canvas pixel is the page's colour of the reference count at that pixel.
    mismatches = page.evaluate(
        """(b64) => {
            const state = window.ccgscMandelbrot;
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const counts = new DataView(bytes.buffer);
            const canvas = document.getElementById("mandelbrot-canvas");
            const data = canvas.getContext("2d").getImageData(0, 0, 400, 300).data;
            let bad = 0;
            for (let i = 0; i < 400 * 300; i++) {
                const [r, g, b] = state.color(counts.getUint16(i * 2, true), 1000);
                if (data[i * 4] !== r || data[i * 4 + 1] !== g || data[i * 4 + 2] !== b
                    || data[i * 4 + 3] !== 255) bad++;
            }
            return [canvas.width, canvas.height, bad];
        }""",
        base64.b64encode(reference.stdout).decode(),
    )
    assert mismatches == [400, 300, 0]
    assert not page.errors, page.errors


def test_primes_and_monte_carlo_demos_show_the_results(
    browser,
    platform,
    transactional_db,
    people,
    tmp_path,
):
    primes = campaign_of(people, "primes", [f"{lo} {lo + 1000}" for lo in range(0, 20000, 1000)])
    reducer = services.kernel_upload(
        organization=people.org, name="montecarlo_reduce", data=kernel_bytes("montecarlo_reduce")
    )
    pi = campaign_of(
        people, "montecarlo", [f"{seed} 100000" for seed in range(1, 17)], reducer=reducer
    )
    services.campaign_start(campaign=primes)
    services.campaign_start(campaign=pi)
    primes_page = new_page(browser, platform.url)
    primes_page.goto(f"/campaigns/{primes.pk}/demo/")
    pi_page = new_page(browser, platform.url)
    pi_page.goto(f"/campaigns/{pi.pk}/demo/")
    platform.worker("--exit-when-idle", "5", slots=2)

    wait_for(lambda: finished(primes) and finished(pi), timeout=120, what="both campaigns")
    wait_for(
        lambda: primes_page.text_content("#prime-count") == "2,262",  # primes below 20,000
        what="the prime count",
    )
    assert primes_page.text_content("#largest-prime") == "19,997"
    assert primes_page.locator("#primes-list li").count() > 0
    screenshot(primes_page, tmp_path, "primes_demo")

    outputs = [
        bytes(t.canonical_result.output)
        for t in Task.objects.filter(campaign=pi).select_related("canonical_result")
        if t.canonical_result is not None and t.canonical_result.output is not None
    ]
    inside = sum(int(o.split()[0]) for o in outputs)
    total = 16 * 100000
    wait_for(
        lambda: (
            pi_page.evaluate("window.ccgscMonteCarlo && window.ccgscMonteCarlo.total") == str(total)
        ),
        what="every Monte Carlo result on the page",
    )
    assert pi_page.evaluate("window.ccgscMonteCarlo.inside") == str(inside)
    final = f"{4 * inside / total:.10f} {inside} {total}"
    wait_for(lambda: finished(pi) and pi.reduced_output is not None, what="the final reduction")
    wait_for(
        lambda: pi_page.text_content("#pi-reduced-raw") == final,
        timeout=30,
        what="the reducer's answer on the page",
    )
    screenshot(pi_page, tmp_path, "montecarlo_demo")
    assert not primes_page.errors and not pi_page.errors
