"""Browser against native: the same campaigns run once by a headless Chromium worker (the
contribute page with two hands) and once by a native worker (wasmtime, two slots).

    .venv/bin/python -m bench.browser_vs_native [--mc-iterations N] [--no-record]

Workloads (Panther's experiments): Monte Carlo pi in 720 tasks, and Mandelbrot 400x300 in 720
tiles. Throughput is tasks per second between the first lease and the last result of each
campaign (process and page start-up excluded); both workers get the machine to themselves in
turn. The outputs of the two runs are compared task by task (they must be byte-identical). The
figures are printed and recorded in docs/benchmarks.md between the browser markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import platform as bp

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:browser:start -->", "<!-- bench:browser:end -->"
SLOTS = 2
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]


@dataclass
class Run:
    worker: str
    tasks: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def montecarlo_inputs(iterations: int) -> list[bytes]:
    return [f"{seed} {iterations}".encode() for seed in range(1, 721)]


def mandelbrot_inputs() -> list[bytes]:
    """400x300 in 24 x 30 tiles, as kernels/src/mandelbrot_gen.c emits them."""
    inputs = []
    for j in range(30):
        for i in range(24):
            x0, x1 = i * 400 // 24, (i + 1) * 400 // 24
            y0, y1 = j * 300 // 30, (j + 1) * 300 // 30
            inputs.append(f"400 300 {x0} {y0} {x1 - x0} {y1 - y0} 1000".encode())
    return inputs


def measured(campaign_id: int) -> float:
    """Seconds from the campaign's first lease to its last result."""
    from django.db.models import Max, Min

    from campaigns.models import Result

    span = Result.objects.filter(campaign_id=campaign_id).aggregate(
        first=Min("leased_at"), last=Max("returned_at")
    )
    return (span["last"] - span["first"]).total_seconds()


def outputs(campaign_id: int) -> dict[int, bytes]:
    from campaigns.models import Result

    rows = Result.objects.filter(campaign_id=campaign_id, outcome=Result.Outcome.SUCCESS)
    return {seq: bytes(out or b"") for seq, out in rows.values_list("task__seq", "output")}


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("Chromium is not installed (set $CHROMIUM or install the chromium package)")


def run_native(server: Any, kernel: str, inputs: list[bytes], name: str) -> tuple[Run, int]:
    cid = bp.make_campaign(kernel, inputs, name=f"{name} (native)", priority=1000)
    # The server's directory of running campaigns refreshes every second: a worker that asks
    # before it does is told "idle", and this one leaves after a few idle seconds.
    time.sleep(1.5)
    worker = server.worker("--campaign", str(cid), "--exit-when-idle", "5", slots=SLOTS)
    bp.wait_done(cid, 1800)
    worker.wait(60)
    return Run("native (wasmtime)", len(inputs), measured(cid)), cid


def run_browser(
    server: Any, browser: Any, kernel: str, inputs: list[bytes], name: str
) -> tuple[Run, int]:
    cid = bp.make_campaign(kernel, inputs, name=f"{name} (browser)", priority=1000)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/contribute/?hands={SLOTS}&throttle=100")
        page.click("#start")
        bp.wait_done(cid, 1800)
    finally:
        context.close()
    return Run("headless Chromium", len(inputs), measured(cid)), cid


def record(machine: str, command: str, rows: list[str], load: float) -> None:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Browser vs native",
        "",
        f"Measured {when} on {machine}, with `{command}`. The same 720-task campaign run",
        f"once by headless Chromium on the contribute page ({SLOTS} hands, throttle 100 %)",
        f"and once by a native worker ({SLOTS} slots), one after the other; throughput is",
        "tasks per second from the first lease to the last result. Every task's output is",
        "byte-identical between the two. The machine's 1-minute load average when the run",
        f"started was {load:.1f} (other work on it slows both workers alike).",
        "",
        "| workload | worker | time | throughput | browser / native |",
        "|---|---|---|---|---|",
        *rows,
    ]
    bp.record_section(START, END, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mc-iterations",
        type=int,
        default=4_000_000,
        help="points per Monte Carlo task (default 4,000,000: ~50 ms natively here)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not touch docs/")
    args = parser.parse_args(argv)
    executable = chromium_path()

    env = bp.bench_env()
    bp.setup_django(env)
    from django.core.management import call_command

    # The server runs with DEBUG=false: it serves the harness from collected static files.
    call_command("collectstatic", "--noinput", verbosity=0)
    machine = bp.describe(env)
    load = os.getloadavg()[0]
    print(f"machine: {machine}, load average {load:.1f}")
    workloads = [
        (
            f"Monte Carlo π, 720 tasks x {args.mc_iterations:,} points",
            "montecarlo",
            montecarlo_inputs(args.mc_iterations),
        ),
        ("Mandelbrot 400x300 in 720 tiles", "mandelbrot", mandelbrot_inputs()),
    ]
    from playwright.sync_api import sync_playwright

    rows: list[str] = []
    server = bp.start_server(env)
    # Playwright's sync API runs an event loop in this thread; the ORM polling here is plain
    # synchronous code (the server processes do not get this variable).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                for title, kernel, inputs in workloads:
                    native, native_id = run_native(server, kernel, inputs, title)
                    time.sleep(1)
                    chromium, browser_id = run_browser(server, browser, kernel, inputs, title)
                    native_out = outputs(native_id)
                    if native_out != outputs(browser_id) or len(native_out) != len(inputs):
                        print(f"{title}: outputs differ between browser and native!")
                        return 1
                    ratio = chromium.rate / native.rate
                    for run in (native, chromium):
                        print(
                            f"{title}: {run.worker}: {run.tasks} tasks in {run.seconds:.2f} s"
                            f" = {run.rate:.1f} tasks/s"
                        )
                    print(f"{title}: browser / native = {ratio:.2f}")
                    rows.append(
                        f"| {title} | native (wasmtime), {SLOTS} slots | {native.seconds:.2f} s"
                        f" | {native.rate:,.1f} tasks/s | |"
                    )
                    rows.append(
                        f"| {title} | headless Chromium, {SLOTS} hands | {chromium.seconds:.2f} s"
                        f" | {chromium.rate:,.1f} tasks/s | **{ratio:.2f}** |"
                    )
            finally:
                browser.close()
    finally:
        server.stop()
    if not args.no_record:
        command = ".venv/bin/python -m bench.browser_vs_native"
        if args.mc_iterations != 4_000_000:
            command += f" --mc-iterations {args.mc_iterations}"
        record(machine, command, rows, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
