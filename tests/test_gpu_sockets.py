"""Capabilities at the socket (issue 15): what a hello says is what the scheduler goes by. A
session whose hello has no `gpu` is answered `idle` for a gpu campaign that another session,
announcing an adapter, is then handed; a session offering less memory than a kernel declares
is answered `idle` for it, one offering enough gets its tasks."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Kernel
from tests.conftest import kernel_bytes
from tests.test_gpu import DOUBLE, MANIFEST
from tests.test_protocol import connect, hello, recv, send

pytestmark = pytest.mark.django_db(transaction=True)

GPU = {"adapter": "test", "max_buffer": 1 << 27, "max_workgroups": 65535, "max_invocations": 256}
MiB = 1024 * 1024


def running(org, kernel):
    campaign = services.campaign_create(organization=org, name="c", kernel=kernel, approved=True)
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=b"\1\0\0\0")] * 3)
    services.campaign_start(campaign=campaign)
    return campaign


async def first_answer(**hello_fields):
    comm = await connect()
    await hello(comm, **hello_fields)
    await send(comm, {"t": "want", "n": 2})
    answer = await recv(comm)
    return comm, answer


async def test_a_gpu_campaign_goes_only_to_a_hello_with_an_adapter(people):
    def setup():
        kernel = services.kernel_upload(
            organization=people.org, name="k", data=DOUBLE, kind=Kernel.Kind.GPU, manifest=MANIFEST
        )
        return running(people.org, kernel)

    campaign = await sync_to_async(setup)()
    plain, answer = await first_answer()
    assert answer["t"] == "idle"
    capable, answer = await first_answer(gpu=GPU)
    assert answer["t"] == "tasks"
    assert answer["campaigns"][campaign.pk]["gpu"]["workgroup_size"] == 64
    for comm in (plain, capable):
        await comm.disconnect()


async def test_a_kernel_declaring_more_memory_than_offered_never_reaches_the_session(people):
    def setup():
        # nomax declares no maximum: the platform's cap (256 MiB) is written in at upload.
        kernel = services.kernel_upload(
            organization=people.org, name="nomax", data=kernel_bytes("nomax")
        )
        assert kernel.memory_max == 256 * MiB
        return running(people.org, kernel)

    await sync_to_async(setup)()
    small, answer = await first_answer(memory=128 * MiB)
    assert answer["t"] == "idle"
    enough, answer = await first_answer(memory=256 * MiB)
    assert answer["t"] == "tasks"
    for comm in (small, enough):
        await comm.disconnect()
