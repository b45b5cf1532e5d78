"""What the Prometheus decorators of ccgsc/metrics.py cost per call on the hot path:
`python -m bench.metrics_overhead` times a trivial function bare and wrapped by
`metrics.timed_lease` (one histogram observation and one counter increment), in
prometheus_client's single-process mode and in its multi-process mode (PROMETHEUS_MULTIPROC_DIR,
every update written to a memory-mapped file), each in a fresh interpreter. A lease round trip
takes milliseconds, so microseconds here are what matters (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

CALLS = 200_000


def _measure() -> None:
    from ccgsc import metrics

    def bare() -> list[int]:
        return [1, 2, 3, 4]

    wrapped = metrics.timed_lease(bare)
    for name, fn in (("bare", bare), ("timed_lease", wrapped)):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(CALLS):
                fn()
            best = min(best, (time.perf_counter() - start) / CALLS)
        print(f"  {name:12s} {best * 1e6:6.2f} µs/call")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _measure()
        return
    for mode in ("single-process", "multi-process"):
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory() as tmp:
            if mode == "multi-process":
                env["PROMETHEUS_MULTIPROC_DIR"] = tmp
            print(mode)
            sys.stdout.flush()
            subprocess.run(
                [sys.executable, "-m", "bench.metrics_overhead", "--child"], env=env, check=True
            )


if __name__ == "__main__":
    main()
