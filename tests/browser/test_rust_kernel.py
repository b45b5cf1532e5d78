"""Rust's default wasm32-wasi output as a campaign (issue 12): kernels/build/sieve_rs.wasm
declares no memory maximum; the upload writes the platform's cap into it and stores it under
its new hash; a browser hand fetches those bytes by hash and is bound by the cap (browsers
enforce no other memory limit), answering exactly as wasmtime does with the same bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Result, Task
from kernelhost import KernelHost, wasmbin
from tests.browser.helpers import wait_for
from tests.conftest import kernel_bytes

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

CAP = 16 * 1024 * 1024
# Primes <= N from a sieve of N + 1 bytes: 10 MB fits under the 16 MiB cap, 20 MB does not.
FITS, TOO_BIG = "10000000", "20000000"


def test_rusts_default_output_runs_in_chromium_under_the_cap_written_at_upload(
    browser: Any, platform: Any, people: Any, settings: Any, tmp_path: Any
) -> None:
    uploaded = kernel_bytes("sieve_rs")
    assert [m.max_pages for m in wasmbin.memories(uploaded)] == [None]
    settings.CCGSC = {**settings.CCGSC, "KERNEL_MEMORY_CAP": CAP}
    kernel = services.kernel_upload(organization=people.org, name="sieve", data=uploaded)
    stored = bytes(kernel.blob.data)
    assert kernel.original_sha256 == hashlib.sha256(uploaded).hexdigest()
    assert kernel.sha256 == hashlib.sha256(stored).hexdigest() != kernel.original_sha256
    assert [m.max_pages for m in wasmbin.memories(stored)] == [CAP // 65536]
    assert kernel.memory_max == CAP

    campaign = services.campaign_create(
        organization=people.org, name="sieve", kernel=kernel, approved=True, max_attempts=1
    )
    services.tasks_add(
        campaign=campaign, specs=[TaskSpec(input=FITS.encode()), TaskSpec(input=TOO_BIG.encode())]
    )
    services.campaign_start(campaign=campaign)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/?hands=1")
        page.click("#start")
        wait_for(
            lambda: Task.objects.filter(campaign=campaign, state=Task.State.PENDING).count() == 0,
            timeout=60,
            what="both sieve tasks",
        )
    finally:
        context.close()

    host = KernelHost(cache_dir=tmp_path)
    results = {
        bytes(r.task.input).decode(): r
        for r in Result.objects.filter(campaign=campaign, state=Result.State.RETURNED)
    }
    assert results.keys() == {FITS, TOO_BIG}
    fits = results[FITS]
    assert fits.outcome == Result.Outcome.SUCCESS, fits.stderr_tail
    native = host.run(stored, stdin=FITS.encode())
    assert bytes(fits.output or b"") == native.stdout == b"664579\n"
    # The browser was held to the cap written into the module, as wasmtime is.
    too_big = results[TOO_BIG]
    native = host.run(stored, stdin=TOO_BIG.encode())
    assert native.error is not None and native.memory_bytes <= CAP
    assert too_big.outcome == Result.Outcome.ERROR
    assert too_big.error_kind == str(native.error) == "trap"
    message = "memory allocation of 20000001 bytes failed"
    assert message in too_big.stderr_tail and message in native.stderr_tail.decode()
