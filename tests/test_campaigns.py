"""Kernels and the campaign lifecycle through the services."""

from __future__ import annotations

import hashlib

import pytest
import wasmtime

from campaigns import services
from campaigns.inputs import env_problem
from campaigns.models import Campaign, Kernel, Result
from kernelhost.host import _check_strings
from tests.conftest import kernel_bytes


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"not a wasm module", "not a WebAssembly binary"),
        (
            bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1 2 shared))')),
            "threads are not supported",
        ),
    ],
)
def test_rejected_kernels_say_which_check_failed(people, data, reason):
    with pytest.raises(services.ServiceError) as err:
        services.kernel_upload(organization=people.org, name="k", data=data)
    assert reason in str(err.value)
    assert not Kernel.objects.exists()


def test_kernel_above_memory_cap_is_rejected(people, settings):
    settings.CCGSC = {**settings.CCGSC, "KERNEL_MEMORY_CAP": 32 * 1024 * 1024}
    with pytest.raises(services.ServiceError, match="above the platform cap"):
        services.kernel_upload(organization=people.org, name="k", data=kernel_bytes("echo"))


def test_a_kernel_without_a_memory_maximum_is_stored_with_the_cap_written_in(people, settings):
    settings.CCGSC = {**settings.CCGSC, "KERNEL_MEMORY_CAP": 128 * 1024 * 1024}
    uploaded = kernel_bytes("nomax")
    kernel = services.kernel_upload(organization=people.org, name="k", data=uploaded)
    stored = bytes(kernel.blob.data)
    assert kernel.memory_max == 128 * 1024 * 1024
    assert kernel.original_sha256 == hashlib.sha256(uploaded).hexdigest()
    assert kernel.sha256 == kernel.blob_id == hashlib.sha256(stored).hexdigest()
    assert stored != uploaded and len(stored) == len(uploaded) + 2  # max: 2-byte LEB, flag set
    # The same upload again is the same kernel; so is uploading the rewritten bytes.
    again = services.kernel_upload(organization=people.org, name="k2", data=uploaded)
    assert again.pk == kernel.pk
    assert services.kernel_upload(organization=people.org, name="k3", data=stored).pk == kernel.pk
    # A module that declared its own maximum is stored as uploaded, with no provenance hash.
    echo = services.kernel_upload(organization=people.org, name="e", data=kernel_bytes("echo"))
    assert echo.original_sha256 == "" and bytes(echo.blob.data) == kernel_bytes("echo")


def test_kernel_over_size_cap_is_rejected(people, settings):
    settings.CCGSC = {**settings.CCGSC, "KERNEL_MAX_BYTES": 100}
    with pytest.raises(services.ServiceError, match="the limit is 100 bytes"):
        services.kernel_upload(organization=people.org, name="k", data=kernel_bytes("echo"))


def test_kernels_are_content_addressed_and_uploaded_once_per_org(people):
    a = services.kernel_upload(organization=people.org, name="a", data=kernel_bytes("echo"))
    b = services.kernel_upload(organization=people.org, name="b", data=kernel_bytes("echo"))
    c = services.kernel_upload(organization=people.other_org, name="c", data=kernel_bytes("echo"))
    assert a.pk == b.pk and c.pk != a.pk
    assert a.blob_id == c.blob_id == a.sha256
    assert a.memory_max == 64 * 1024 * 1024


def test_lifecycle_transitions(make_campaign):
    c = make_campaign(["a", "b"], start=False)
    assert c.state == Campaign.State.DRAFT
    with pytest.raises(services.ServiceError, match="cannot be paused"):
        services.campaign_pause(campaign=c)
    c = services.campaign_start(campaign=c)
    assert c.state == Campaign.State.RUNNING and c.started_at is not None
    with pytest.raises(services.ServiceError, match="cannot be started"):
        services.campaign_start(campaign=c)
    assert services.campaign_pause(campaign=c).state == Campaign.State.PAUSED
    assert services.campaign_resume(campaign=c).state == Campaign.State.RUNNING
    c = services.campaign_cancel(campaign=c)
    assert c.state == Campaign.State.CANCELLED and c.finished_at is not None
    assert set(Result.objects.filter(campaign=c).values_list("state", flat=True)) == {
        Result.State.CANCELLED
    }
    with pytest.raises(services.ServiceError, match="cannot be resumed"):
        services.campaign_resume(campaign=c)
    with pytest.raises(services.ServiceError, match="cancelled campaign"):
        services.tasks_add(campaign=c, specs=[])


def test_replication_policy_is_checked(people):
    kernel = services.kernel_upload(organization=people.org, name="k", data=kernel_bytes("echo"))
    with pytest.raises(services.ServiceError, match="at least the quorum"):
        services.campaign_create(
            organization=people.org, name="x", kernel=kernel, min_quorum=3, target_replicas=2
        )
    with pytest.raises(services.ServiceError, match="Unknown campaign setting"):
        services.campaign_create(organization=people.org, name="x", kernel=kernel, colour=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env": {"B=C": "d"}}, 'env: "B=C" cannot be a variable name: it contains "=".'),
        ({"env": {"": "d"}}, "env: a variable name cannot be empty."),
        ({"env": {"A\0": "d"}}, "it contains a NUL character."),
        ({"env": {"A": "d\0"}}, 'env["A"]: contains a NUL character.'),
        ({"env": {"A": 1}}, 'env["A"]: not a valid string.'),
        ({"args": ["-n", 5]}, "args[1]: not a valid string."),
        ({"args": ["a\0"]}, "args[0]: contains a NUL character."),
        ({"args": "-n 5"}, "args must be a list of strings"),
    ],
)
def test_arguments_and_environment_a_kernel_cannot_receive_are_refused(people, kwargs, message):
    """The services' check, which the web form and the API both go through (campaigns.inputs):
    the kernel host would refuse these only when a task runs."""
    kernel = services.kernel_upload(organization=people.org, name="k", data=kernel_bytes("echo"))
    with pytest.raises(services.ServiceError) as err:
        services.campaign_create(organization=people.org, name="x", kernel=kernel, **kwargs)
    assert message in str(err.value)
    assert not Campaign.objects.exists()


def test_environment_names_and_values_the_kernel_host_accepts_are_valid():
    # The kernel host's own rule (kernelhost.host._check_strings), mirrored by env_problem.
    for env in ({"A": "b=c"}, {"LONG_NAME_1": ""}, {"lower": "x y"}):
        assert env_problem(env) is None
    for env in ({"B=C": "d"}, {"": "d"}, {"A\0": "d"}, {"A": "\0"}):
        assert env_problem(env) is not None
        with pytest.raises(ValueError, match="environment"):
            _check_strings([], list(env.items()))


def test_replicas_created_per_task(make_campaign):
    c = make_campaign(["a", "b", "c"], min_quorum=2, target_replicas=3)
    assert Result.objects.filter(campaign=c).count() == 9
    assert c.tasks_total == 3


def test_kernels_of_another_organization_cannot_be_used(people):
    theirs = services.kernel_upload(
        organization=people.other_org, name="k", data=kernel_bytes("echo")
    )
    with pytest.raises(services.ServiceError, match="must belong to the campaign's organization"):
        services.campaign_create(organization=people.org, name="x", kernel=theirs)
