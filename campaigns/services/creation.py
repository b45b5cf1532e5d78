"""Creating a campaign: every option checked, one row saved, and its input started (a generator
job enqueued, or a task file read into tasks before this returns)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from django.conf import settings
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


#: The tolerance verifier (kernels/src/float_verify.c) that float gpu campaigns get by default.
FLOAT_VERIFIER = Path(settings.BASE_DIR) / "kernels" / "build" / "float_verify.wasm"
#: Its settings for f32 outputs (a campaign's env may set others): GPUs round differently.
GPU_FLOAT_ENV = {"VERIFY_FORMAT": "f32", "VERIFY_RTOL": "1e-5", "VERIFY_ATOL": "1e-6"}


def _gpu_defaults(
    kernel: Kernel,
    args: list[str],
    static_data: bytes | None,
    verifier: Kernel | None,
    env: dict[str, str],
    created_by: User | None,
) -> tuple[Kernel | None, dict[str, str]]:
    """A gpu kernel takes no arguments or static data (its contract has only the task input);
    with a float manifest and no verifier of the owner's, the campaign gets the tolerance
    verifier in f32 mode (the environment, which the verifier reads, gets its settings unless
    the owner set them). Returns the verifier and environment."""
    if args or static_data is not None:
        raise ServiceError("A gpu kernel takes no arguments or static data: only the task input.")
    if verifier is not None or not (kernel.manifest or {}).get("float"):
        return verifier, env
    from campaigns.services.kernels import kernel_get_or_upload

    verifier, _ = kernel_get_or_upload(
        organization=kernel.organization,
        name="float_verify",
        description="tolerance verifier (the default of float gpu campaigns)",
        data=FLOAT_VERIFIER.read_bytes(),
        created_by=created_by,
    )
    return verifier, {**GPU_FLOAT_ENV, **env}


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
    if kernel.kind == Kernel.Kind.GPU:
        verifier, env = _gpu_defaults(kernel, args, static_data, verifier, env, created_by)
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
    if campaign.adaptive_replication and campaign.min_quorum < 2:
        raise ServiceError(
            "Adaptive replication lets a trusted volunteer's result stand in for a quorum:"
            " it needs a quorum of at least 2."
        )
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
