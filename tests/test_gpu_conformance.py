"""The GPU kernel conformance cases (tests/conformance/gpu/<case>/) through the native host:
wgpu on Mesa's lavapipe (kernelhost.gpuhost, software adapter). Integer cases must give
expected.bin byte for byte, float cases (manifest "float": true) within the contract's
tolerance (relative 1e-5, absolute 1e-6). Chromium runs the same cases
(tests/browser/test_gpu_conformance.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelhost import Limits
from kernelhost.gpu import outputs_close, parse_manifest
from kernelhost.gpuhost import GpuHost, GpuUnavailable, wgpu_installed
from tests.skips import needs, skip_unless_ci

CASES_DIR = Path(__file__).resolve().parent / "conformance" / "gpu"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "kernel.wgsl").exists())

pytestmark = needs(not wgpu_installed(), "the gpu extra is not installed")


@pytest.fixture(scope="module")
def host() -> Iterator[GpuHost]:
    gpu = GpuHost("software")
    try:
        gpu.start()
    except GpuUnavailable as exc:
        skip_unless_ci(f"no software GPU adapter (apt-get install mesa-vulkan-drivers): {exc}")
    yield gpu
    gpu.close()


def test_there_are_cases_of_every_kind_the_contract_names():
    assert len(CASES) >= 7
    manifests = [json.loads((CASES_DIR / c / "manifest.json").read_text()) for c in CASES]
    assert any(m.get("float") for m in manifests)
    assert any(m["output_bytes"] == "input" for m in manifests)
    assert any(isinstance(m.get("invocations"), int) for m in manifests)
    sources = [(CASES_DIR / c / "kernel.wgsl").read_text() for c in CASES]
    assert any("atomic" in s for s in sources) and any("var<workgroup>" in s for s in sources)


@pytest.mark.parametrize("case", CASES)
def test_case_gives_its_expected_output(host, case):
    folder = CASES_DIR / case
    source = (folder / "kernel.wgsl").read_bytes()
    manifest = parse_manifest((folder / "manifest.json").read_bytes())
    kernel = host.compile(source, hashlib.sha256(source).hexdigest(), manifest)
    result = host.run(
        kernel, stdin=(folder / "input.bin").read_bytes(), limits=Limits(timeout_s=60)
    )
    assert result.ok, result.message
    expected = (folder / "expected.bin").read_bytes()
    if manifest.float:
        assert outputs_close(result.stdout, expected)
    else:
        assert result.stdout == expected


def test_a_kernel_that_runs_too_long_is_stopped_and_the_host_recovers(host):
    source = (CASES_DIR / "invocations_guard" / "kernel.wgsl").read_text()
    spin = source.replace(
        "output[i] = (i * 0x01000193u) ^ params.invocations;",
        "var acc = i; for (var j = 0u; j < params.invocations; j++) {"
        " acc = acc * 1664525u + 1013904223u; } if (acc == 7u) { output[0] = i; }",
    ).encode()
    manifest = parse_manifest({"workgroup_size": 64, "output_bytes": 4, "invocations": 64 * 65535})
    kernel = host.compile(spin, hashlib.sha256(spin).hexdigest(), manifest)
    result = host.run(kernel, stdin=b"", limits=Limits(timeout_s=1))
    assert result.error is not None and result.error.value == "timeout"
    # The next task gets a fresh device (a new child process) and runs normally.
    case = CASES_DIR / "empty_input"
    wgsl = (case / "kernel.wgsl").read_bytes()
    good = host.compile(
        wgsl,
        hashlib.sha256(wgsl).hexdigest(),
        parse_manifest((case / "manifest.json").read_bytes()),
    )
    again = host.run(good, stdin=b"")
    assert again.ok and again.stdout == (case / "expected.bin").read_bytes()


def test_a_dispatch_beyond_the_contract_fails_as_invalid(host):
    case = CASES_DIR / "invocations_guard"
    source = (case / "kernel.wgsl").read_bytes()
    manifest = parse_manifest({"workgroup_size": 1, "output_bytes": 4, "invocations": 65536})
    kernel = host.compile(source, hashlib.sha256(source + b"1").hexdigest(), manifest)
    result = host.run(kernel, stdin=b"")
    assert result.error is not None and result.error.value == "invalid"
    assert "dispatch too large" in result.message


def test_a_software_adapter_is_used_only_when_asked():
    # Mode "hardware" (the worker's --gpu auto) takes a real GPU or nothing: never lavapipe.
    hardware = GpuHost("hardware")
    refused = ""
    info = None
    try:
        info = hardware.start()
    except GpuUnavailable as exc:
        refused = str(exc)
    finally:
        hardware.close()
    if info is None:
        assert "CPU" in refused or "no adapter" in refused
    else:
        assert not info.software
