"""Generator campaigns: the generator kernel runs in the server's sandbox (a Celery job) and its
framed output becomes the campaign's tasks; a failed generator can run again."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from campaigns.inputs import InputError, iter_frames
from campaigns.jobs import generate_tasks
from campaigns.models import Campaign
from campaigns.services.base import (
    ServiceError,
    announce,
    check_args_env,
    describe_failure,
    limits,
    sandbox_host,
)
from campaigns.services.lifecycle import campaign_check_complete
from campaigns.services.tasks import clear_tasks, tasks_add
from ccgsc.jobs import enqueue

log = logging.getLogger(__name__)
State = Campaign.State


def start_generating(campaign: Campaign) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(
        input_state=Campaign.InputState.GENERATING, error=""
    )
    campaign.input_state = Campaign.InputState.GENERATING
    enqueue(generate_tasks, campaign.pk)


def campaign_regenerate(*, campaign: Campaign, generator_args: list[str] | None = None) -> Campaign:
    """Run a failed generator again, with new arguments if given: the campaign goes back to
    draft with no tasks."""
    if campaign.input_source != Campaign.InputSource.GENERATOR:
        raise ServiceError("Only generator campaigns can regenerate their tasks.")
    if campaign.input_state == Campaign.InputState.GENERATING:
        raise ServiceError("The generator is already running.")
    if campaign.state not in (State.DRAFT, State.FAILED):
        raise ServiceError("Only a draft or failed campaign can regenerate its tasks.")
    if generator_args is not None:
        check_args_env(generator_args, {}, args_field="generator_args")
        campaign.generator_args = generator_args
    with transaction.atomic():
        clear_tasks(campaign)
        Campaign.objects.filter(pk=campaign.pk).update(
            state=State.DRAFT, error="", finished_at=None, generator_args=campaign.generator_args
        )
        campaign.state = State.DRAFT
        start_generating(campaign)
    return campaign


def run_generator(campaign_id: int) -> None:
    """The generator job: run the campaign's generator in the sandbox and stream its framed
    output into tasks. Any failure (limits, bad framing) fails the campaign with the reason and
    removes the tasks inserted so far, so a retry starts clean."""
    campaign = (
        Campaign.objects.select_related("generator__blob", "static_data")
        .filter(pk=campaign_id)
        .first()
    )
    if campaign is None or campaign.input_state != Campaign.InputState.GENERATING:
        return  # deleted, or already handled by an earlier delivery of this job
    assert campaign.generator is not None
    from kernelhost import Limits

    cfg = limits()
    # A redelivered job (worker crash) starts from scratch rather than appending twice.
    clear_tasks(campaign)
    host = sandbox_host()
    static = campaign.static_data
    result = host.run(
        host.compile(bytes(campaign.generator.blob.data), campaign.generator.sha256),
        args=list(campaign.generator_args),
        argv0="generator",
        static=bytes(static.data) if static else None,
        static_sha256=static.sha256 if static else None,
        limits=Limits(
            timeout_s=cfg["SANDBOX_TIMEOUT_SECONDS"],
            memory_bytes=cfg["KERNEL_MEMORY_CAP"],
            output_bytes=cfg["SANDBOX_OUTPUT_MAX_BYTES"],
        ),
        stdout_file=True,
    )
    stream = result.stdout_stream
    try:
        if not result.ok:
            raise ServiceError(describe_failure("generator", result))
        assert stream is not None
        count = tasks_add(
            campaign=campaign,
            specs=iter_frames(stream, max_input=cfg["TASK_INPUT_MAX_BYTES"]),
        )
        if count == 0:
            raise ServiceError("The generator produced no tasks.")
    except (ServiceError, InputError) as exc:
        message = str(exc)
        if isinstance(exc, InputError):
            message = f"The generator's output is malformed: {exc}"
        log.warning("generator for campaign %s failed: %s", campaign_id, message)
        with transaction.atomic():
            clear_tasks(campaign)
            Campaign.objects.filter(pk=campaign_id).update(
                state=State.FAILED,
                input_state=Campaign.InputState.FAILED,
                error=message,
                finished_at=timezone.now(),
            )
            announce(campaign_id, State.FAILED)
        return
    finally:
        if stream is not None:
            stream.close()
    with transaction.atomic():
        Campaign.objects.filter(pk=campaign_id).update(input_state=Campaign.InputState.READY)
        campaign_check_complete(campaign_id=campaign_id)
