"""The GPU kernel conformance cases (tests/conformance/gpu/<case>/) in headless Chromium with
WebGPU (SwiftShader, --enable-unsafe-webgpu): each runs through the browser's GPU host (a
hand's GPU module Worker, static/js/worker/gpu_worker.js, served with its CSP) and must give
expected.bin: byte for byte for integer cases, within the contract's tolerance (relative 1e-5,
absolute 1e-6) for float cases (manifest "float": true). The native wgpu host runs the same
cases (GPU_CONTRACT / docs/kernels.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.helpers import WEBGPU_ARGS, launched_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

CASES_DIR = Path(__file__).resolve().parent.parent / "conformance" / "gpu"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "kernel.wgsl").exists())
REL, ABS = 1e-5, 1e-6

# Every case in one hand, as the harness runs a GPU task (kernel source, manifest, input).
RUN_CASES = """
async (cases) => {
  const { Hand } = await import("/static/js/worker/hand.js");
  const { DEFAULT_LIMITS } = await import("/static/js/worker/wasi_host.js");
  const hand = new Hand(0, { wasm: "/worker/wasm.js", js: "/worker/js.js", gpu: "/worker/gpu.js" });
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const base64 = (data) => {
    let binary = "";
    for (let i = 0; i < data.length; i += 8192) {
      binary += String.fromCharCode(...data.subarray(i, i + 8192));
    }
    return btoa(binary);
  };
  const observed = {};
  for (const c of cases) {
    const result = await hand.run({
      kind: "gpu",
      gpu: { sha: c.sha, source: c.source, manifest: c.manifest },
      limits: { ...DEFAULT_LIMITS, timeout_s: 120 },
      task: { stdin: bytes(c.input), args: [], env: {}, checkpoint: null },
      static: null,
    });
    observed[c.name] = {
      error: result.error, exit_code: result.exit_code, stdout: base64(result.stdout),
      stderr: new TextDecoder().decode(result.stderr),
    };
  }
  hand.dispose();
  return observed;
}
"""


def load_case(name: str) -> dict[str, Any]:
    folder = CASES_DIR / name
    source = (folder / "kernel.wgsl").read_text()
    return {
        "name": name,
        "sha": hashlib.sha256(source.encode()).hexdigest(),
        "source": source,
        "manifest": json.loads((folder / "manifest.json").read_text()),
        "input": base64.b64encode((folder / "input.bin").read_bytes()).decode(),
    }


@pytest.fixture(scope="module")
def webgpu_browser() -> Iterator[Any]:
    with launched_chromium(WEBGPU_ARGS) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def observations(webgpu_browser: Any, platform: Any) -> dict[str, dict[str, Any]]:
    context = webgpu_browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/")
        return page.evaluate(RUN_CASES, [load_case(name) for name in CASES])
    finally:
        context.close()


def test_there_are_integer_and_float_cases() -> None:
    floats = {json.loads((CASES_DIR / n / "manifest.json").read_text()).get("float") for n in CASES}
    assert floats == {True, False}


@pytest.mark.parametrize("name", CASES)
def test_case_in_chromium_webgpu(observations: dict[str, dict[str, Any]], name: str) -> None:
    raw = observations[name]
    assert (raw["error"], raw["exit_code"], raw["stderr"]) == (None, 0, "")
    got = base64.b64decode(raw["stdout"])
    expected = (CASES_DIR / name / "expected.bin").read_bytes()
    manifest = json.loads((CASES_DIR / name / "manifest.json").read_text())
    if not manifest.get("float"):
        assert got == expected
        return
    assert len(got) == len(expected)
    n = len(expected) // 4
    pairs = zip(struct.unpack(f"<{n}f", got), struct.unpack(f"<{n}f", expected), strict=True)
    off = [
        (i, g, e)
        for i, (g, e) in enumerate(pairs)
        if not math.isclose(g, e, rel_tol=REL, abs_tol=ABS)
    ]
    assert off == []
