"""Creating a campaign: every option checked, one row saved, and its input started (a generator
job enqueued, or a task file read into tasks before this returns)."""

from __future__ import annotations

from typing import IO

from django.db import transaction

from accounts.models import Organization, User
from campaigns.inputs import InputError, iter_task_file
from campaigns.models import Campaign, Kernel
from campaigns.services.base import ServiceError, check_args_env, limits
from campaigns.services.blobs import blob_put
from campaigns.services.generators import start_generating
from campaigns.services.tasks import tasks_add

POLICY_FIELDS = (
    "priority",
    "task_timeout",
    "max_attempts",
    "points_per_task",
    "min_quorum",
    "target_replicas",
    "max_error_replicas",
    "max_total_replicas",
    "adaptive_replication",
    "quorum_needs_account",
)


def _check_input_source(
    input_source: str,
    generator: Kernel | None,
    generator_args: list[str] | None,
    task_file: IO[bytes] | None,
) -> None:
    """The input source names one of the three and brings what that one needs."""
    if input_source == Campaign.InputSource.GENERATOR:
        if generator is None:
            raise ServiceError("A generator campaign needs a generator kernel.")
        if generator.kind != Kernel.Kind.WASM:
            raise ServiceError("Generators run on the server and must be WebAssembly kernels.")
        check_args_env(generator_args or [], {}, args_field="generator_args")
    elif input_source == Campaign.InputSource.FILE:
        if task_file is None:
            raise ServiceError("A task-file campaign needs a task file.")
    elif input_source != Campaign.InputSource.API:
        raise ServiceError(f"Unknown input source {input_source!r}.")


def campaign_create(
    *,
    organization: Organization,
    name: str,
    kernel: Kernel,
    created_by: User | None = None,
    description: str = "",
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    static_data: bytes | None = None,
    input_source: str = Campaign.InputSource.API,
    generator: Kernel | None = None,
    generator_args: list[str] | None = None,
    task_file: IO[bytes] | None = None,
    task_file_format: str = "jsonl",
    verifier: Kernel | None = None,
    reducer: Kernel | None = None,
    approved: bool = False,
    **policies: int,
) -> Campaign:
    """Create a draft campaign. A generator campaign starts generating its tasks at once (in
    the background); a task file is read and its tasks inserted before this returns."""
    unknown = set(policies) - set(POLICY_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown campaign setting(s): {', '.join(sorted(unknown))}.")
    args, env = args or [], env or {}
    check_args_env(args, env)
    for k in (kernel, generator, verifier, reducer):
        if k is not None and k.organization_id != organization.pk:
            raise ServiceError("Kernels must belong to the campaign's organization.")
    _check_input_source(input_source, generator, generator_args, task_file)
    static_cap = limits()["STATIC_DATA_MAX_BYTES"]
    if static_data is not None and len(static_data) > static_cap:
        raise ServiceError(f"Static data is {len(static_data)} bytes; the limit is {static_cap}.")

    campaign = Campaign(
        organization=organization,
        name=name.strip() or "campaign",
        description=description,
        kernel=kernel,
        args=args,
        env=env,
        input_source=input_source,
        generator=generator,
        generator_args=generator_args or [],
        verifier=verifier,
        reducer=reducer,
        approved=approved or bool(limits()["CAMPAIGN_AUTO_APPROVE"]),
        created_by=created_by,
        **policies,
    )
    if campaign.min_quorum > campaign.target_replicas:
        raise ServiceError("The target number of replicas must be at least the quorum.")
    if campaign.target_replicas > campaign.max_total_replicas:
        raise ServiceError("The cap on total replicas must be at least the target.")
    with transaction.atomic():
        if static_data is not None:
            campaign.static_data = blob_put(static_data)
        campaign.save()
        if input_source == Campaign.InputSource.GENERATOR:
            start_generating(campaign)
    if task_file is not None and input_source == Campaign.InputSource.FILE:
        try:
            tasks_add(
                campaign=campaign,
                specs=iter_task_file(
                    task_file, fmt=task_file_format, max_input=limits()["TASK_INPUT_MAX_BYTES"]
                ),
            )
        except InputError as exc:
            # Nothing half-made: a campaign whose task file is bad is not kept.
            campaign.delete()
            raise ServiceError(f"The task file was rejected: {exc}") from None
    return campaign
