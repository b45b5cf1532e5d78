"""The same workload as WebAssembly and as WGSL, through the whole stack: the deep-zoom
Mandelbrot (kernels/src/mandelbrot_deep.c and kernels/gpu/mandelbrot_deep.wgsl, one algorithm
in 64-bit fixed point) run once by a native worker (wasmtime), once by headless Chromium on the
CPU (WASM hands) and once by headless Chromium on its WebGPU adapter (one GPU hand).

    .venv/bin/python -m bench.gpu_browser [--view W H MAXITER] [--no-record]

Throughput is tiles per second from the campaign's first lease to its last result. Every tile's
output must be byte-identical in the three runs. The adapter is whatever the browser offers;
headless Chromium here has SwiftShader, a software adapter (the CPU emulating a GPU), so the GPU
figure says what the GPU path costs on CPUs, not what a graphics card does. Recorded in
docs/benchmarks.md between the gpu-browser markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import struct
import time
from typing import Any

from bench import platform as bp
from bench.browser_vs_native import CHROMIUM_ARGS, ROOT, Run, chromium_path, measured, outputs

START, END = "<!-- bench:gpu-browser:start -->", "<!-- bench:gpu-browser:end -->"
HANDS = 2
CENTRE = ["-0.743643887037151", "0.131825904205330", "0.000000002"]


def tiles(w: int, h: int, maxiter: int) -> list[bytes]:
    from kernelhost import KernelHost

    gen = (ROOT / "kernels" / "build" / "mandelbrot_deep_gen.wasm").read_bytes()
    run = KernelHost().run(gen, args=[str(w), str(h), str(maxiter), *CENTRE])
    assert run.exit_code == 0, run
    out, at = [], 0
    while at < len(run.stdout):
        (size,) = struct.unpack_from("<I", run.stdout, at)
        out.append(run.stdout[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def gpu_campaign(inputs: list[bytes], name: str) -> int:
    from accounts.models import Organization
    from campaigns import services
    from campaigns.inputs import TaskSpec
    from campaigns.models import Kernel

    org, _ = Organization.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    gpu = ROOT / "kernels" / "gpu"
    kernel = services.kernel_upload(
        organization=org,
        name="mandelbrot_deep (WGSL)",
        kind=Kernel.Kind.GPU,
        data=(gpu / "mandelbrot_deep.wgsl").read_bytes(),
        manifest=json.loads((gpu / "mandelbrot_deep.json").read_text()),
    )
    c = services.campaign_create(
        organization=org, name=name, kernel=kernel, approved=True, priority=1000
    )
    services.tasks_add(campaign=c, specs=(TaskSpec(input=i) for i in inputs))
    services.campaign_start(campaign=c)
    bp.settle()
    return c.pk


def contribute(browser: Any, server: Any, cid: int, hands: int, gpu: bool) -> str | None:
    """Run the contribute page until campaign `cid` is done; returns the adapter it showed."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/contribute/?hands={hands}&throttle=100")
        page.wait_for_function(
            "() => document.getElementById('gpu-note').dataset.state !== 'checking'"
        )
        adapter = page.get_attribute("#gpu-note", "data-adapter")
        if page.is_checked("#gpu") != gpu:
            page.click("#gpu")
        page.click("#start")
        bp.wait_done(cid, 3600)
        return adapter
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--view", nargs=3, type=int, default=[512, 384, 1500], metavar=("W", "H", "MAXITER")
    )
    parser.add_argument("--no-record", action="store_true", help="do not touch docs/")
    args = parser.parse_args(argv)
    w, h, maxiter = args.view
    executable = chromium_path()
    env = bp.bench_env()
    bp.setup_django(env)
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    machine = bp.describe(env)
    load = os.getloadavg()[0]
    inputs = tiles(w, h, maxiter)
    title = f"deep zoom {w}x{h}, {len(inputs)} tiles of 64x64, MAXITER {maxiter}"
    print(f"machine: {machine}, load average {load:.1f}; {title}")
    from playwright.sync_api import sync_playwright

    server = bp.start_server(env)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    runs: list[tuple[Run, int]] = []
    adapter = None
    try:
        cid = bp.make_campaign("mandelbrot_deep", inputs, name="deep (native)", priority=1000)
        time.sleep(1.5)  # the server's directory of running campaigns refreshes every second
        worker = server.worker("--campaign", str(cid), "--exit-when-idle", "5", slots=HANDS)
        bp.wait_done(cid, 3600)
        worker.wait(60)
        runs.append((Run(f"native (wasmtime), {HANDS} slots", len(inputs), measured(cid)), cid))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable, args=[*CHROMIUM_ARGS, "--enable-unsafe-webgpu"]
            )
            try:
                cid = bp.make_campaign("mandelbrot_deep", inputs, name="deep (wasm)", priority=1000)
                contribute(browser, server, cid, HANDS, gpu=False)
                runs.append(
                    (
                        Run(f"headless Chromium, WASM, {HANDS} hands", len(inputs), measured(cid)),
                        cid,
                    )
                )
                cid = gpu_campaign(inputs, "deep (gpu)")
                adapter = contribute(browser, server, cid, 1, gpu=True)
                runs.append(
                    (
                        Run(
                            f"headless Chromium, WebGPU ({adapter}), 1 hand",
                            len(inputs),
                            measured(cid),
                        ),
                        cid,
                    )
                )
            finally:
                browser.close()
    finally:
        server.stop()
    reference = outputs(runs[0][1])
    if len(reference) != len(inputs) or any(outputs(c) != reference for _, c in runs[1:]):
        print("outputs differ between the runs!")
        return 1
    base = runs[0][0].rate
    rows = []
    for run, _ in runs:
        print(f"{run.worker}: {run.tasks} tiles in {run.seconds:.2f} s = {run.rate:.2f} tiles/s")
        rows.append(
            f"| {run.worker} | {run.seconds:.2f} s | {run.rate:,.2f} tiles/s"
            f" | {run.rate / base:.2f} |"
        )
    if not args.no_record:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        bp.record_section(
            START,
            END,
            [
                "## GPU (WebGPU) and WASM in the browser",
                "",
                f"Measured {when} on {machine}, with `.venv/bin/python -m bench.gpu_browser"
                f" --view {w} {h} {maxiter}`: the {title} (mandelbrot_deep: WASM and WGSL, one",
                "fixed-point algorithm), run by a native worker, then by headless Chromium on",
                "its CPU, then by the same Chromium on its WebGPU adapter, one after the other;",
                "tiles per second from the first lease to the last result. Every tile's output",
                f"is byte-identical in the three runs. The adapter is **{adapter}**: SwiftShader,",
                "the CPU emulating a GPU (this machine has no GPU), so the WebGPU row measures",
                "the GPU path's cost on CPUs, not a graphics card's speed. 1-minute load average",
                f"at the start: {load:.1f}.",
                "",
                "| worker | time | throughput | / native |",
                "|---|---|---|---|",
                *rows,
            ],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
