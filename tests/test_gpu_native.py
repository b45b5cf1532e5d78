"""GPU kernels end to end on real processes (issue 15): a WGSL kernel pushed with the command
line, a campaign created and started through the REST API, a native worker with wgpu on the
software adapter (--gpu software: Mesa's lavapipe) runs it; the float manifest gives the
campaign the tolerance verifier, which validates the results, and points are granted. A native
worker without a GPU, connected and waiting the whole time, is never leased any of it."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from accounts import services as account_services
from campaigns.models import Campaign, Result, Task
from kernelhost.gpu import outputs_close
from kernelhost.gpuhost import wgpu_installed
from rewards.models import LedgerEntry
from tests.skips import needs
from tests.test_cli import as_json, ok, run_cli
from workers.models import WorkerSession

CASE = Path(__file__).resolve().parent / "conformance" / "gpu" / "f32_series"

pytestmark = [
    pytest.mark.live,
    needs(not wgpu_installed(), "the gpu extra is not installed"),
]


def until(condition, what: str, timeout: float = 120.0) -> None:
    """Wait for a condition on the database (an event another process causes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_gpu_campaign_completes_on_a_native_gpu_worker_and_never_reaches_one_without(
    live_platform, people, tmp_path
):
    token = account_services.token_issue(
        organization=people.org, name="gpu", created_by=people.owner
    )[1]
    home = tmp_path / "home"
    ok(run_cli("login", "--server", live_platform.url, "--token", token, home=home))
    wgsl = tmp_path / "series.wgsl"
    wgsl.write_bytes((CASE / "kernel.wgsl").read_bytes())
    (tmp_path / "series.json").write_bytes((CASE / "manifest.json").read_bytes())
    kernel = as_json(run_cli("kernel", "push", str(wgsl), "--json", home=home))
    assert kernel["kind"] == "gpu" and kernel["manifest"]["float"] is True
    assert kernel["download_url"].endswith(f"/blobs/{kernel['sha256']}.wgsl")

    # A worker without a GPU waits for work from the start.
    live_platform.worker("--token", token, "--gpu", "off")
    until(
        lambda: WorkerSession.objects.filter(disconnected_at__isnull=True).count() == 1,
        "the worker without a GPU to connect",
    )
    plain = WorkerSession.objects.get()
    assert plain.gpu is None

    api = httpx.Client(
        base_url=f"{live_platform.url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    created = api.post(
        "/campaigns", json={"name": "gpu series", "kernel": kernel["id"], "points_per_task": 7}
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    data = (CASE / "input.bin").read_bytes()
    inputs = [data[i : i + 240] for i in range(0, len(data), 240)]  # 5 tasks of 60 floats
    body = "".join(
        json.dumps({"input_b64": base64.b64encode(chunk).decode()}) + "\n" for chunk in inputs
    )
    added = api.post(
        f"/campaigns/{campaign_id}/tasks",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert added.status_code in (200, 201), added.text
    assert api.post(f"/campaigns/{campaign_id}/start").status_code == 200

    gpu_worker = live_platform.worker("--token", token, "--gpu", "software")
    campaign = Campaign.objects.get(pk=campaign_id)
    until(
        lambda: Campaign.objects.filter(pk=campaign_id, state="completed").exists(),
        "the gpu campaign to complete",
        timeout=300,
    )
    assert gpu_worker.poll() is None
    campaign.refresh_from_db()
    assert campaign.verifier is not None and campaign.verifier.name == "float_verify"
    assert campaign.env["VERIFY_FORMAT"] == "f32"
    assert (campaign.tasks_done, campaign.tasks_failed) == (len(inputs), 0)

    capable = WorkerSession.objects.exclude(pk=plain.pk).get()
    assert capable.gpu is not None and "llvmpipe" in capable.gpu["adapter"]
    results = Result.objects.filter(campaign_id=campaign_id)
    # Every replica went to the worker with a GPU; the one without never held a lease.
    assert set(results.values_list("session_id", flat=True)) == {capable.pk}
    assert all(r.validation == Result.Validation.VALID for r in results)
    expected = (CASE / "expected.bin").read_bytes()
    for task in Task.objects.filter(campaign_id=campaign_id).select_related("canonical_result"):
        assert task.canonical_result is not None and task.canonical_result.output is not None
        output = bytes(task.canonical_result.output)
        start = task.seq * 240
        assert outputs_close(output, expected[start : start + 240])
    points = LedgerEntry.objects.filter(campaign_id=campaign_id, user=people.owner)
    assert points.count() == len(inputs) and sum(p.points for p in points) == 7 * len(inputs)
    # The blob the worker fetched is the WGSL as pushed.
    blob = httpx.get(kernel["download_url"], timeout=30)
    assert hashlib.sha256(blob.content).hexdigest() == kernel["sha256"]
    assert blob.headers["content-type"].startswith("text/wgsl")
