"""Reducers: a kernel run in the sandbox over a campaign's canonical results (frames in task
order) whose stdout becomes the campaign's reduced output; final when the campaign completes,
partial (throttled) while it runs; a hostile reducer fails cleanly with its reason."""

from __future__ import annotations

import io
import struct

import pytest
from django.core.cache import cache

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign
from kernelhost import default_host
from tests.conftest import kernel_bytes
from tests.test_owner_ui import complete_tasks

pytestmark = pytest.mark.django_db


def frames(*outputs: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(o)) + o for o in outputs)


def reduced(campaign: Campaign) -> bytes:
    assert campaign.reduced_output is not None
    return bytes(campaign.reduced_output)


def run_kernel(name: str, stdin: bytes) -> bytes:
    result = default_host().run(kernel_bytes(name), stdin=stdin)
    assert result.ok, result
    return result.stdout


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()


def make(people, kernel: str, reducer: str | None, inputs: list[str], **policies) -> Campaign:
    org = people.org
    k = services.kernel_upload(organization=org, name=kernel, data=kernel_bytes(kernel))
    r = (
        services.kernel_upload(organization=org, name=reducer, data=kernel_bytes(reducer))
        if reducer
        else None
    )
    campaign = services.campaign_create(
        organization=org, name="reduce me", kernel=k, reducer=r, **policies
    )
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i.encode()) for i in inputs])
    services.campaign_start(campaign=campaign)
    campaign.refresh_from_db()
    return campaign


def test_montecarlo_reducer_folds_the_results_when_the_campaign_completes(
    people, django_capture_on_commit_callbacks
):
    inputs = [f"{seed} 20000" for seed in range(1, 9)]
    campaign = make(people, "montecarlo", "montecarlo_reduce", inputs)
    outputs = {seq: run_kernel("montecarlo", i.encode()) for seq, i in enumerate(inputs)}
    with django_capture_on_commit_callbacks(execute=True):
        complete_tasks(campaign, outputs=outputs, n=8)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.COMPLETED
    inside = sum(int(o.split()[0]) for o in outputs.values())
    total = 8 * 20000
    assert campaign.reduced_output is not None and campaign.reduced_at is not None
    assert reduced(campaign) == f"{4 * inside / total:.10f} {inside} {total}\n".encode()
    assert campaign.error == ""
    # The owners' page calls it final now, no longer partial.
    from django.urls import reverse

    from tests.test_owner_ui import client_for

    page = client_for(people.owner).get(
        reverse("campaigns:campaign_detail", args=[people.org.slug, campaign.pk])
    )
    html = page.content.decode()
    assert "Final: the campaign has completed." in html and "Partial while" not in html


def test_reducer_sees_every_canonical_result_in_task_order(
    people, django_capture_on_commit_callbacks
):
    """echo as the reducer hands back exactly what it was given."""
    campaign = make(people, "echo", "echo", ["a", "b", "c", "d", "e"])
    # Complete out of order: the later tasks first, through two sessions.
    answers = {0: b"zero", 1: b"", 2: b"two\n", 3: bytes(range(256)), 4: b"four"}
    complete_tasks(campaign, outputs=answers, n=2)
    with django_capture_on_commit_callbacks(execute=True):
        complete_tasks(campaign, outputs=answers, n=3)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.COMPLETED
    assert reduced(campaign) == frames(*(answers[i] for i in range(5)))


def test_partial_reduction_while_running_and_its_throttle(people, settings):
    inputs = [f"{seed} 1000" for seed in range(1, 5)]
    campaign = make(people, "montecarlo", "montecarlo_reduce", inputs)
    outputs = {seq: run_kernel("montecarlo", i.encode()) for seq, i in enumerate(inputs)}
    complete_tasks(campaign, outputs=outputs, n=2)
    assert services.campaign_reduce(campaign_id=campaign.pk, final=False)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING
    done = [seq for seq in range(4) if campaign.tasks.get(seq=seq).state == 1]
    inside = sum(int(outputs[s].split()[0]) for s in done)
    assert reduced(campaign).split()[1:] == [str(inside).encode(), b"2000"]

    # Throttled: the first request schedules (and, eagerly, runs) a reduction, the next waits.
    assert services.campaign_reduce_soon(campaign_id=campaign.pk) is True
    assert services.campaign_reduce_soon(campaign_id=campaign.pk) is False
    # A partial run never overwrites the output of a completed campaign.
    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.COMPLETED)
    assert services.campaign_reduce(campaign_id=campaign.pk, final=False) is False
    # Campaigns without a reducer, or gone, are ignored quietly.
    assert services.campaign_reduce(campaign_id=campaign.pk + 999, final=True) is False


@pytest.mark.parametrize(
    ("reducer", "limits", "reason"),
    [
        ("loop", {"SANDBOX_TIMEOUT_SECONDS": 1}, "The reducer failed (timeout)"),
        ("flood", {"REDUCED_OUTPUT_MAX_BYTES": 65536}, "The reducer failed (output_too_large)"),
        ("trap", {}, "The reducer failed (trap)"),
        ("membomb", {}, "The reducer failed (out_of_memory)"),
        ("exitcode", {}, "The reducer failed (exit)"),
    ],
)
def test_hostile_reducer_fails_cleanly_with_its_reason(
    people, settings, django_capture_on_commit_callbacks, reducer, limits, reason
):
    settings.CCGSC = {**settings.CCGSC, **limits}
    campaign = make(people, "echo", reducer, ["x", "y"])
    with django_capture_on_commit_callbacks(execute=True):
        complete_tasks(campaign, n=2)
    campaign.refresh_from_db()
    # The work is done and stays done; only the reduction failed, and says why.
    assert campaign.state == Campaign.State.COMPLETED
    assert campaign.tasks_done == 2
    assert campaign.reduced_output is None
    assert campaign.error.startswith(reason), campaign.error


def test_a_good_run_after_a_failed_one_clears_the_error(people, settings):
    campaign = make(people, "echo", "echo", ["x"])
    complete_tasks(campaign, n=1)
    campaign.refresh_from_db()
    settings.CCGSC = {**settings.CCGSC, "REDUCER_INPUT_MAX_BYTES": 4}
    assert services.campaign_reduce(campaign_id=campaign.pk, final=True) is False
    campaign.refresh_from_db()
    assert "above the 4-byte reducer input limit" in campaign.error
    settings.CCGSC = {**settings.CCGSC, "REDUCER_INPUT_MAX_BYTES": 1 << 20}
    assert services.campaign_reduce(campaign_id=campaign.pk, final=True) is True
    campaign.refresh_from_db()
    assert campaign.error == "" and reduced(campaign) == frames(b"x")


def test_reducer_error_does_not_hide_a_generator_error(people):
    campaign = make(people, "echo", "echo", ["x"])
    complete_tasks(campaign, n=1)
    Campaign.objects.filter(pk=campaign.pk).update(error="The generator failed (trap): x")
    assert services.campaign_reduce(campaign_id=campaign.pk, final=True)
    campaign.refresh_from_db()
    assert campaign.error == "The generator failed (trap): x"


def test_load_demo_gives_monte_carlo_its_reducer(db, django_capture_on_commit_callbacks):
    from django.core.management import call_command

    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_demo", stdout=io.StringIO())
    mc = Campaign.objects.select_related("reducer").get(name="Monte Carlo π")
    assert mc.reducer is not None and mc.reducer.name == "montecarlo_reduce"
    assert mc.state == Campaign.State.RUNNING and mc.tasks_total == 720
    # Idempotent, and an older demo without a reducer gets it.
    Campaign.objects.filter(pk=mc.pk).update(reducer=None)
    call_command("load_demo", stdout=io.StringIO())
    mc.refresh_from_db()
    assert mc.reducer_id is not None
    assert Campaign.objects.filter(name="Monte Carlo π").count() == 1
