"""`make bench`: the work-distribution benchmarks, side by side in one run.

1. Simulated protocol clients answering no-op tasks instantly, under three scheduling policies
   (one at a time, batches, batches with prefetch): tasks/s through the whole stack and
   server CPU per task (the scheduler's overhead).
2. Native workers on the no-op kernel: tasks/s with real kernels in wasmtime.
3. Monte Carlo π, 720 tasks: one native worker with 2 slots against the same kernel run
   sequentially in wasmtime in this process (parallel efficiency), and against two bare
   wasmtime threads in this process (the machine's own ceiling), interleaved in rounds.
   `python -m bench montecarlo` runs just this one and records nothing.
4. Mandelbrot 400x300 in 720 tasks on one native worker with 2 slots.
5. Verification under attack (bench/adversaries.py): wrong canonical results under 20 %
   colluding adversaries with many anonymous sessions, with and without the defences, and
   the cost of the independence checks per result batch.

`python -m bench scale` (the last step of `make bench`) runs bench/scale.py: idle sessions,
distinct visitors under the default per-origin caps, visitor churn, 20,000 idle sessions on two
server processes and server CPU per task with 10,000 and 1,000 sessions working, on
DATABASE_URL and REDIS_URL (skipped without them); recorded in its own section.

Figures are printed and written to docs/benchmarks.md (between the distribution markers).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

from bench import platform as bp
from ccgsc.processes import Platform

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:distribution:start -->", "<!-- bench:distribution:end -->"
MC_ITERATIONS = 10_000_000  # ~35 ms per task here: the per-task overhead is about 1 %
MC_ROUNDS = 9  # a multiple of 3: each step comes first, second and last equally often


SPIN_C = r"""
#include <stdint.h>
#include <stdio.h>
int main(void) {
    uint64_t x = 88172645463325252ULL;
    double s = 0;
    for (long i = 0; i < 300000000L; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        s += (double)(x >> 11) * (1.0 / 9007199254740992.0);
    }
    printf("%f\n", s);
    return 0;
}
"""
CEILING_ROUNDS = 6


def machine_ceiling() -> list[str]:
    """What two cores give here with no platform, no Python and no wasm at all: a plain C loop
    run alone, then two copies side by side, interleaved over CEILING_ROUNDS rounds.
    Efficiency = time alone / time of the pair (1.0: two cores are twice one core)."""
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "spin.c", Path(tmp) / "spin"
        src.write_text(SPIN_C)
        system_cc = shutil.which("cc")
        cc = [system_cc] if system_cc else [sys.executable, "-m", "ziglang", "cc"]
        subprocess.run([*cc, "-O2", "-o", str(exe), str(src)], check=True)

        def timed(copies: int) -> float:
            t0 = time.monotonic()
            procs = [subprocess.Popen([exe], stdout=subprocess.DEVNULL) for _ in range(copies)]
            for proc in procs:
                proc.wait()
            return time.monotonic() - t0

        alone = pair = 0.0
        for _ in range(CEILING_ROUNDS):
            alone += timed(1)
            pair += timed(2)
    line = (
        f"| Machine ceiling: a C loop, 2 processes side by side vs 1 alone"
        f" ({CEILING_ROUNDS} interleaved rounds) | {pair:.1f} s (alone: {alone:.1f} s)"
        f" | | parallel efficiency {alone / pair:.3f} |"
    )
    print(line)
    return [line]


def montecarlo(server: Platform) -> list[str]:
    """Monte Carlo π: one native worker with 2 slots against the same runs in sequence in
    wasmtime, and against the machine's own ceiling: the same runs on 2 threads of a bare
    KernelHost (no server, no protocol, nothing else running).

    This machine's speed drifts by ±15 % within a minute (other tenants), more than the effect
    measured, so the three are interleaved: the campaign's 720 tasks are added in MC_ROUNDS
    rounds; each round's inputs run sequentially here, on two bare threads here, and as
    campaign tasks on the (already connected) worker, in an order that rotates every round.
    Efficiency = total sequential time / (2 x total parallel time), the worker's parallel time
    being each round's span from first lease to last result."""
    import threading

    from django.db.models import Max, Min

    from campaigns import services
    from campaigns.inputs import TaskSpec
    from campaigns.models import Campaign, Result
    from kernelhost import KernelHost

    inputs = [f"{i + 1} {MC_ITERATIONS}".encode() for i in range(720)]
    size = len(inputs) // MC_ROUNDS
    host = KernelHost()
    kernel = host.compile((ROOT / "kernels" / "build" / "montecarlo.wasm").read_bytes())
    cid = bp.make_campaign("montecarlo", [], name="monte carlo", priority=1000)
    campaign = Campaign.objects.get(pk=cid)
    worker = server.worker("--campaign", str(cid), slots=2)

    def sequential(r: int, part: list[bytes]) -> float:
        t0 = time.monotonic()
        for data in part:
            assert host.run(kernel, stdin=data).ok
        return time.monotonic() - t0

    def bare(r: int, part: list[bytes]) -> float:
        queue = iter(part)
        lock = threading.Lock()

        def slot() -> None:
            while True:
                with lock:
                    data = next(queue, None)
                if data is None:
                    return
                assert host.run(kernel, stdin=data).ok

        t0 = time.monotonic()
        threads = [threading.Thread(target=slot) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - t0

    def platform(r: int, part: list[bytes]) -> float:
        services.tasks_add(campaign=campaign, specs=(TaskSpec(input=i) for i in part))
        deadline = time.monotonic() + 300
        while Campaign.objects.get(pk=cid).tasks_done < (r + 1) * size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Monte Carlo round {r + 1} not done after 300 s")
            time.sleep(0.25)  # gently: this process shares the cores being measured
        span = Result.objects.filter(
            campaign_id=cid, task__seq__gte=r * size, task__seq__lt=(r + 1) * size
        ).aggregate(first=Min("leased_at"), last=Max("returned_at"))
        return float((span["last"] - span["first"]).total_seconds())

    steps = [sequential, bare, platform]
    totals = dict.fromkeys(steps, 0.0)
    for r in range(MC_ROUNDS):
        part = inputs[r * size : (r + 1) * size]
        for step in steps[r % 3 :] + steps[: r % 3]:
            totals[step] += step(r, part)
    worker.terminate()
    worker.wait(30)
    seq, ceiling, spans = totals[sequential], totals[bare], totals[platform]
    lines = [
        f"| Monte Carlo π, 720 tasks x {MC_ITERATIONS:,} points: 2 bare wasmtime threads"
        f" (the machine's ceiling) | {ceiling:.1f} s (sequential: {seq:.1f} s)"
        f" | {720 / ceiling:,.1f} tasks/s | parallel efficiency {seq / (2 * ceiling):.3f} |",
        f"| Monte Carlo π, 720 tasks x {MC_ITERATIONS:,} points: 1 native worker x 2 slots"
        f" through the platform | {spans:.1f} s (sequential: {seq:.1f} s)"
        f" | {720 / spans:,.1f} tasks/s | parallel efficiency **{seq / (2 * spans):.3f}**"
        f" ({ceiling / spans:.3f} of the ceiling) |",
    ]
    for line in lines:
        print(line)
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["scale"]:
        # Its own database and services (DATABASE_URL, REDIS_URL): see bench/scale.py.
        from bench import scale

        if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
            print("scale: skipped, it needs DATABASE_URL (PostgreSQL) and REDIS_URL")
            return 0
        return scale.main(argv[1:])
    env = bp.bench_env()
    bp.setup_django(env)
    if argv == ["montecarlo"]:  # just that figure, printed, not recorded
        server = bp.start_server(env)
        try:
            machine_ceiling()
            montecarlo(server)
        finally:
            server.stop()
        return 0
    if argv:
        print("usage: python -m bench [montecarlo | scale [--before REV]]", file=sys.stderr)
        return 2
    machine = bp.describe(env) + f", load average {os.getloadavg()[0]:.1f} at the start"
    print(f"machine: {machine}")
    rows: list[str] = []
    server = bp.start_server(env)
    try:
        # 1. Scheduling policies with simulated clients (protocol cost only).
        from bench.swarm import run_swarm

        bp.make_campaign("noop", [b""] * 200_000, name="swarm no-op")
        for policy in ("one", "batch", "prefetch"):
            bp.settle()
            cpu0 = bp.cpu_seconds(server.proc.pid)
            r = run_swarm(server.url, clients=40, slots=4, policy=policy, seconds=8)
            cpu = bp.cpu_seconds(server.proc.pid) - cpu0
            per_task = cpu / r.acked * 1e6 if r.acked else float("nan")
            line = (
                f"| swarm, 40 clients x 4 slots, policy `{policy}`"
                f" | {r.acked:,} tasks in {r.seconds:.1f} s"
                f" | **{r.rate:,.0f} tasks/s** | {per_task:,.0f} µs server CPU/task |"
            )
            print(line)
            rows.append(line)

        # 2. Native workers, no-op kernel.
        cid = bp.make_campaign("noop", [b""] * 20_000, name="native no-op", priority=1000)
        t0 = time.monotonic()
        cpu0 = bp.cpu_seconds(server.proc.pid)
        workers = [server.worker("--campaign", str(cid), "--exit-when-idle", "5") for _ in range(2)]
        elapsed = bp.wait_done(cid, 300)
        cpu = bp.cpu_seconds(server.proc.pid) - cpu0
        line = (
            f"| 2 native workers x 2 slots, no-op kernel | 20,000 tasks in {elapsed:.1f} s"
            f" | **{20_000 / elapsed:,.0f} tasks/s**"
            f" | {cpu / 20_000 * 1e6:,.0f} µs server CPU/task |"
        )
        print(line)
        rows.append(line)
        for w in workers:
            w.wait(60)
        del t0

        # 3. Monte Carlo efficiency against sequential wasmtime, and what this machine's two
        # cores give at best.
        rows += machine_ceiling()
        rows += montecarlo(server)

        # 4. Mandelbrot 400x300 in 720 tiles.
        from campaigns.models import Campaign

        gen_inputs = []
        for j in range(30):
            for i in range(24):
                x0, x1 = i * 400 // 24, (i + 1) * 400 // 24
                y0, y1 = j * 300 // 30, (j + 1) * 300 // 30
                gen_inputs.append(f"400 300 {x0} {y0} {x1 - x0} {y1 - y0} 1000".encode())
        cid = bp.make_campaign("mandelbrot", gen_inputs, name="mandelbrot", priority=1000)
        server.worker("--campaign", str(cid), "--exit-when-idle", "5", slots=2)
        elapsed = bp.wait_done(cid, 600)
        assert Campaign.objects.get(pk=cid).tasks_done == 720
        line = (
            f"| Mandelbrot 400x300 in 720 tiles, 1 native worker x 2 slots | {elapsed:.2f} s"
            f" | {720 / elapsed:,.0f} tasks/s | |"
        )
        print(line)
        rows.append(line)
    finally:
        server.stop()

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Work distribution",
        "",
        f"Measured {when} on {machine}, with `make bench` (server: one daphne process;",
        "the clients and workers run on the same machine and compete for its cores).",
        "Monte Carlo's time runs from the campaign's first lease to its last result;",
        "parallel efficiency = sequential wasmtime time / (2 slots x that time).",
        "",
        "| setup | work | throughput | overhead / efficiency |",
        "|---|---|---|---|",
        *rows,
    ]
    bp.record_section(START, END, lines)

    # 5. Verification under attack, in this process (its own section of docs/benchmarks.md).
    from bench import adversaries

    adversaries.measure(machine)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
