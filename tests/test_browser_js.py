"""The browser harness's unit tests in Node (tests/browser/js/*.test.mjs, node's own test
runner): the throttle's arithmetic, protocol frames, and the WASI host against the conformance
cases. Node runs the same ES modules the browser loads; skipped where Node is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.skips import needs

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")


@needs(NODE is None, "Node.js is not installed")
def test_harness_units_in_node() -> None:
    assert NODE is not None
    files = sorted(str(p) for p in (ROOT / "tests" / "browser" / "js").glob("*.test.mjs"))
    assert files
    proc = subprocess.run(
        [NODE, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
