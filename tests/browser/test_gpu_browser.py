"""GPU work in the browser, end to end on the contribute page: headless Chromium with WebGPU
(SwiftShader, --enable-unsafe-webgpu) finds its adapter, shows it, lets the volunteer turn GPU
use on and off (remembered), and announces the GPU in its hello only when it is on; Chromium
without the flag (navigator.gpu but no adapter) never announces one, so it is never sent GPU
work.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Kernel, Result, Task
from kernelhost import KernelHost
from rewards.models import Total
from tests.browser.helpers import WEBGPU_ARGS, launched_chromiums, wait_for
from tests.browser.test_accessibility import audit
from tests.conftest import kernel_bytes
from workers.models import WorkerSession

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
# A small deep-zoom image (2 x 2 tiles of 64 x 64, 200 iterations at most): quick on SwiftShader.
DEEP_ARGS = ["128", "128", "200", "-0.7436438870", "0.1318259042", "0.0001"]
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


def next_session(seen: list[int]) -> WorkerSession:
    """The browser session that opened after those in `seen` (added to it): what the server
    recorded of its hello."""
    session = wait_for(
        lambda: (
            WorkerSession.objects.filter(kind=WorkerSession.Kind.BROWSER)
            .exclude(pk__in=seen)
            .order_by("pk")
            .first()
        ),
        what="a new browser session",
    )
    seen.append(session.pk)
    return session


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
        seen = list(WorkerSession.objects.values_list("pk", flat=True))
        page.click("#start")
        session = next_session(seen)
        assert session.gpu is not None
        assert session.gpu["adapter"] == note.get_attribute("data-adapter")
        assert session.gpu["max_buffer"] > 0 and session.gpu["max_workgroups"] >= 65535
        assert session.gpu["max_invocations"] >= 256
        # Memory offered: half of navigator.deviceMemory, at most 4 GiB (gpu_probe.js).
        device_gib = page.evaluate("() => navigator.deviceMemory")
        assert session.memory == min(4 << 30, int(device_gib * (1 << 30)) // 2)
        # Turning it off starts a session that does not announce a GPU.
        box.uncheck()
        assert next_session(seen).gpu is None
        page.click("#stop")
        box.check()
        page.reload()
        page.wait_for_function(GPU_NOTE_SAYS, arg="found")
        assert page.locator("#gpu").is_checked()
        # A GPU campaign's "Lend your GPU" link turns it on for that visit, unsaved.
        box.uncheck()
        page.goto(f"{platform.url}/contribute/?gpu=on")
        page.wait_for_function(GPU_NOTE_SAYS, arg="found")
        assert page.locator("#gpu").is_checked()
        page.goto(f"{platform.url}/contribute/")
        page.wait_for_function(GPU_NOTE_SAYS, arg="found")
        assert not page.locator("#gpu").is_checked()
    finally:
        context.close()


def test_a_browser_without_an_adapter_never_announces_a_gpu(browser, platform):
    context, page = contribute(browser, platform)
    try:
        assert page.locator("#gpu-note").get_attribute("data-state") == "none"
        box = page.locator("#gpu")
        assert box.is_disabled() and not box.is_checked()
        assert page.evaluate("() => navigator.gpu !== undefined")  # the API, but no adapter
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#gpu-control").screenshot(path=str(SCREENSHOTS / "contribute-no-gpu.png"))
        seen = list(WorkerSession.objects.values_list("pk", flat=True))
        page.click("#start")
        assert next_session(seen).gpu is None
    finally:
        context.close()


# --- GPU campaigns end to end ----------------------------------------------------------------


def deep_tiles() -> list[bytes]:
    """The generator's tasks (length-prefixed frames) for DEEP_ARGS."""
    run = KernelHost().run(kernel_bytes("mandelbrot_deep_gen"), args=DEEP_ARGS)
    assert run.exit_code == 0, run
    tiles, at = [], 0
    while at < len(run.stdout):
        (size,) = struct.unpack_from("<I", run.stdout, at)
        tiles.append(run.stdout[at + 4 : at + 4 + size])
        at += 4 + size
    return tiles


def gpu_campaign(people: Any, inputs: list[bytes], source: str, manifest: dict, **policies):
    kernel = services.kernel_upload(
        organization=people.org,
        name="gpu kernel",
        kind=Kernel.Kind.GPU,
        data=source.encode(),
        manifest=manifest,
    )
    campaign = services.campaign_create(
        organization=people.org, name="GPU campaign", kernel=kernel, approved=True, **policies
    )
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i) for i in inputs])
    services.campaign_start(campaign=campaign)
    return campaign


def signed_in_context(browser: Any, platform: Any, user: Any) -> Any:
    client = Client()
    client.force_login(user)
    context = browser.new_context()
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": platform.url}]
    )
    return context


def done(campaign: Campaign) -> int:
    return Task.objects.filter(campaign=campaign, state=Task.State.DONE).count()


def test_a_webgpu_contributor_completes_a_gpu_campaign_a_browser_without_one_never_gets_it(
    browser, webgpu_browser, platform, people, make_campaign
):
    tiles = deep_tiles()
    source = (KERNELS / "gpu" / "mandelbrot_deep.wgsl").read_text()
    manifest = json.loads((KERNELS / "gpu" / "mandelbrot_deep.json").read_text())
    deep = gpu_campaign(people, tiles, source, manifest)
    cpu = make_campaign([f"{seed} 100000" for seed in range(1, 7)], kernel="montecarlo")

    # Chromium without WebGPU's flag: it does the CPU campaign and is never sent a GPU task,
    # although that campaign waits with work the whole time (fair share would mix them).
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/?hands=2")
        page.click("#start")
        wait_for(lambda: done(cpu) == 6, what="the CPU campaign done by the plain browser")
        plain = set(
            WorkerSession.objects.filter(kind=WorkerSession.Kind.BROWSER).values_list(
                "pk", flat=True
            )
        )
        assert plain
        # Replicas wait unsent; none was ever leased to anyone.
        assert not Result.objects.filter(campaign=deep, session_id__isnull=False).exists()
        assert Task.objects.filter(campaign=deep, state=Task.State.PENDING).count() == len(tiles)
    finally:
        context.close()

    # Chromium with WebGPU, signed in, GPU use turned on: it completes the GPU campaign.
    context = signed_in_context(webgpu_browser, platform, people.teammate)
    try:
        page = context.new_page()
        # Two hands: GPU tasks still run one at a time (nextRunnable), the other hand waits.
        page.goto(f"{platform.url}/contribute/?hands=2")
        page.wait_for_function(GPU_NOTE_SAYS, arg="found")
        page.check("#gpu")
        page.click("#start")
        wait_for(lambda: done(deep) == len(tiles), timeout=120, what="the GPU campaign done")
        total = wait_for(
            lambda: (
                Total.objects.filter(scope="user", key=people.teammate.pk, points__gt=0)
                .values_list("points", flat=True)
                .first()
            ),
            what="points for the validated GPU results",
        )
        assert total >= len(tiles) * deep.points_per_task
        page.wait_for_function(
            "() => document.querySelector('#recent-table').textContent.includes('(GPU)')"
        )
    finally:
        context.close()
    results = Result.objects.filter(campaign=deep).exclude(session_id__in=plain)
    assert not Result.objects.filter(campaign=deep, session_id__in=plain).exists()
    assert set(results.values_list("validation", flat=True)) == {Result.Validation.VALID}
    assert set(results.values_list("user_id", flat=True)) == {people.teammate.pk}
    # The GPU's counts are the CPU version's, byte for byte (integer fixed point).
    cpu_kernel = kernel_bytes("mandelbrot_deep")
    host = KernelHost()
    for result in results.select_related("task"):
        expected = host.run(cpu_kernel, stdin=bytes(result.task.input)).stdout
        assert result.output is not None and bytes(result.output) == expected


def test_the_deep_zoom_demo_paints_the_gpu_and_the_cpu_version_alike(
    webgpu_browser, platform, people
):
    from campaigns.services.creation import campaign_create
    from campaigns.services.lifecycle import campaign_start

    source = (KERNELS / "gpu" / "mandelbrot_deep.wgsl").read_bytes()
    manifest = (KERNELS / "gpu" / "mandelbrot_deep.json").read_bytes()
    generator = services.kernel_upload(
        organization=people.org, name="gen", data=kernel_bytes("mandelbrot_deep_gen")
    )
    twins = {}
    for kind, data in (("gpu", source), ("wasm", kernel_bytes("mandelbrot_deep"))):
        kernel = services.kernel_upload(
            organization=people.org,
            name=f"deep {kind}",
            kind=kind,
            data=data,
            manifest=manifest if kind == "gpu" else None,
        )
        twins[kind] = campaign_create(
            organization=people.org,
            name=f"Deep zoom ({kind})",
            kernel=kernel,
            input_source=Campaign.InputSource.GENERATOR,
            generator=generator,
            generator_args=DEEP_ARGS,
            approved=True,
        )
        twins[kind].refresh_from_db()
        assert twins[kind].tasks_total == 4, twins[kind].error
        campaign_start(campaign=twins[kind])

    demo = webgpu_browser.new_context(viewport={"width": 1280, "height": 900})
    worker = webgpu_browser.new_context()
    try:
        page = demo.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{platform.url}/campaigns/{twins['gpu'].pk}/demo/")
        assert page.locator("[data-deep=self]").get_attribute("data-kind") == "gpu"
        assert page.locator("[data-deep=twin]").get_attribute("data-kind") == "wasm"
        # The CPU version on a native worker, the GPU version in a WebGPU browser.
        platform.worker("--exit-when-idle", "5", slots=2)
        contributor = worker.new_page()
        contributor.goto(f"{platform.url}/contribute/?hands=1")
        contributor.wait_for_function(GPU_NOTE_SAYS, arg="found")
        contributor.check("#gpu")
        contributor.click("#start")
        for side in ("self", "twin"):
            page.wait_for_function(
                "(side) => document.querySelector(`[data-deep=${side}] canvas`).dataset.painted"
                " === '4'",
                arg=side,
                timeout=180_000,
            )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "deep-zoom-demo.png"), full_page=True)
        same = page.evaluate(
            """() => {
              const { self, twin } = window.ccgscDeepZoom;
              const a = document.querySelector("[data-deep=self] canvas").getContext("2d");
              const b = document.querySelector("[data-deep=twin] canvas").getContext("2d");
              const pa = a.getImageData(0, 0, 128, 128).data;
              const pb = b.getImageData(0, 0, 128, 128).data;
              return [self.counts.length, self.counts.every((n, i) => n === twin.counts[i]),
                      pa.every((v, i) => v === pb[i]), new Set(self.counts).size];
            }"""
        )
        assert same[:3] == [128 * 128, True, True]
        assert same[3] > 50  # a picture, not a flat colour
        assert not errors, errors
        assert not audit(page, platform.url)  # axe: no serious or critical violations
    finally:
        demo.close()
        worker.close()


LOOP = """
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    var x = input[1] + i;
    for (var k = 0u; k < input[0]; k = k + 1u) { x = x * 1664525u + 1013904223u; }
    output[i] = x;
}
"""

RUN_LOOPS = """
async ({source, runs}) => {
  const { Hand } = await import("/static/js/worker/hand.js");
  const { DEFAULT_LIMITS } = await import("/static/js/worker/wasi_host.js");
  const hand = new Hand(0, { wasm: "/worker/wasm.js", js: "/worker/js.js", gpu: "/worker/gpu.js" });
  const out = [];
  for (const [steps, seconds] of runs) {
    const result = await hand.run({
      kind: "gpu",
      gpu: { sha: "loop", source, manifest: { workgroup_size: 64, output_bytes: 256 } },
      limits: { ...DEFAULT_LIMITS, timeout_s: seconds },
      task: {
        stdin: new Uint8Array(new Uint32Array([steps, 7]).buffer),
        args: [], env: {}, checkpoint: null,
      },
      static: null,
    });
    const words = new Uint32Array(result.stdout.slice().buffer);
    out.push({ error: result.error, stdout: Array.from(words) });
  }
  hand.dispose();
  return out;
}
"""


def loop_output(steps: int) -> list[int]:
    out = []
    for i in range(64):
        x = 7 + i
        for _ in range(steps):
            x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        out.append(x)
    return out


def test_a_gpu_task_past_its_limit_is_stopped_and_the_hand_goes_on(webgpu_browser, platform):
    """The wall-time limit: the hand terminates the GPU worker (its device is abandoned) and
    reports a timeout; the next task gets a fresh worker and device. (SwiftShader takes some
    seconds for 2^23 steps in each of 64 invocations; the limit is one second.)"""
    context = webgpu_browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/")
        timed_out, after = page.evaluate(
            RUN_LOOPS, {"source": LOOP, "runs": [[1 << 23, 1], [100, 60]]}
        )
    finally:
        context.close()
    assert timed_out == {"error": "timeout", "stdout": []}
    assert after == {"error": None, "stdout": loop_output(100)}


def test_embedded_visitors_run_gpu_work_only_where_the_site_owner_opted_in(
    webgpu_browser, platform, people, third_party
):
    from accounts.models import EmbedSite

    site = EmbedSite.objects.create(
        organization=people.org, name="A blog", origin=third_party.origin
    )
    tag = f'<script src="{platform.url}/embed.js" data-site="{site.key}"%s async></script>'
    third_party.pages["/gpu"] = "<!DOCTYPE html><title>GPU</title>" + tag % ' data-gpu="on"'
    third_party.pages["/plain"] = "<!DOCTYPE html><title>Plain</title>" + tag % ""

    seen: list[int] = []

    def visit(path: str) -> tuple[str, Any]:
        context = webgpu_browser.new_context()
        page = context.new_page()
        page.goto(f"{third_party.origin}{path}")
        frame = page.frame_locator("iframe[data-ccgsc]")
        frame.locator("#consent").wait_for(state="visible")
        consent = frame.locator("#consent-cpu").inner_text()
        frame.locator("#opt-in").click()
        session = wait_for(
            lambda: (
                WorkerSession.objects.filter(site_id=site.pk, kind="browser")
                .exclude(pk__in=seen)
                .first()
            ),
            what="the embedded session",
        )
        seen.append(session.pk)
        context.close()
        return consent, session.gpu

    consent, gpu = visit("/gpu")
    assert "graphics processor" in consent
    assert gpu is not None and "swiftshader" in gpu["adapter"]
    consent, gpu = visit("/plain")
    assert "graphics processor" not in consent
    assert gpu is None
