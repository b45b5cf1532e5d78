"""The kernel-contract conformance suite in headless Chromium: every case of
tests/conformance/cases.json runs through the browser host (static/js/worker/: a hand's module
Worker, the WASI host over browser_wasi_shim, time limits by worker.terminate()) and must give
the observation the wasmtime host gives, byte for byte (see tests/test_conformance.py)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.test_conformance import CASES, KERNELS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    # The platform (another process) reads the test database: committed data only.
    pytest.mark.django_db(transaction=True),
]

# Runs each case in one hand (a real module Worker served with its CSP), as the harness does.
RUN_CASES = """
async ({cases, kernels}) => {
  const { Hand } = await import("/static/js/worker/hand.js");
  const { parseMemoryLimits, DEFAULT_LIMITS } = await import("/static/js/worker/wasi_host.js");
  const modules = {};
  for (const [name, b64] of Object.entries(kernels)) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    modules[name] = { module: await WebAssembly.compile(bytes), memory: parseMemoryLimits(bytes) };
  }
  const hand = new Hand(0, { wasm: "/worker/wasm.js", js: "/worker/js.js" });
  const text = (s) => (s === null ? null : new TextEncoder().encode(s));
  const base64 = (bytes) => {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 8192) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
    }
    return btoa(binary);
  };
  const observed = {};
  for (const c of cases) {
    const { module, memory } = modules[c.kernel];
    const result = await hand.run({
      kind: "wasm",
      module,
      memory,
      limits: { ...DEFAULT_LIMITS, ...(c.limits || {}) },
      task: { stdin: text(c.stdin), args: c.args, env: c.env, checkpoint: text(c.checkpoint) },
      static: c.static === null ? null : { sha: `case:${c.name}`, data: text(c.static) },
    });
    observed[c.name] = {
      exit_code: result.exit_code,
      error: result.error,
      stdout: base64(result.stdout),
      checkpoint: result.checkpoint === null ? null : new TextDecoder().decode(result.checkpoint),
      progress: result.progress,
      stderr: new TextDecoder().decode(result.stderr),
    };
  }
  hand.dispose();
  return observed;
}
"""


@pytest.fixture(scope="module")
def observations(browser: Any, platform: Any) -> dict[str, dict[str, Any]]:
    kernels = {
        name: base64.b64encode((KERNELS / f"{name}.wasm").read_bytes()).decode()
        for name in {case["kernel"] for case in CASES}
    }
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/")
        return page.evaluate(RUN_CASES, {"cases": CASES, "kernels": kernels})
    finally:
        context.close()


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case_in_chromium(observations: dict[str, dict[str, Any]], case: dict[str, Any]) -> None:
    raw = observations[case["name"]]
    stdout = base64.b64decode(raw["stdout"])
    observed: dict[str, Any] = {
        "exit_code": raw["exit_code"],
        "error": raw["error"],
        "checkpoint": raw["checkpoint"],
        "progress": raw["progress"],
    }
    if "stdout_sha256" in case["expect"]:
        observed["stdout_sha256"] = hashlib.sha256(stdout).hexdigest()
    else:
        observed["stdout"] = stdout.decode("utf-8", "replace")
    if "stderr" in case["expect"]:
        observed["stderr"] = raw["stderr"]
    assert observed == case["expect"]
