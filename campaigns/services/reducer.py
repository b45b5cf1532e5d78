"""Reducers: the campaign's reducer kernel runs in the server's sandbox over the canonical
results (now and then while it runs, once when it completes) and its output is stored."""

from __future__ import annotations

import logging

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from campaigns.jobs import reduce_results
from campaigns.models import Campaign, Task
from campaigns.services.base import ServiceError, describe_failure, limits, sandbox_host
from ccgsc.jobs import enqueue

log = logging.getLogger(__name__)
State = Campaign.State


#: Defaults for the reducer's limits (settings.CCGSC may override them): the framed results
#: handed to a reducer are built in memory, and its output is stored on the campaign row.
REDUCER_INPUT_MAX_BYTES = 256 * 1024 * 1024
REDUCED_OUTPUT_MAX_BYTES = 16 * 1024 * 1024
#: A running campaign's partial reduction is refreshed at most this often, and only for
#: campaigns up to this many tasks (each run reads every result so far).
REDUCE_INTERVAL_SECONDS = 10
REDUCE_PARTIAL_MAX_TASKS = 100_000
REDUCER_ERROR_PREFIX = "The reducer failed"


def campaign_reduce_soon(*, campaign_id: int) -> bool:
    """Schedule a partial reduction of a running campaign unless one was scheduled in the last
    REDUCE_INTERVAL_SECONDS (a cache key throttles, per cache). Returns whether it was."""
    interval = limits().get("REDUCE_INTERVAL_SECONDS", REDUCE_INTERVAL_SECONDS)
    if not cache.add(f"ccgsc:reduce-soon:{campaign_id}", 1, timeout=interval):
        return False
    enqueue(reduce_results, campaign_id, False)
    return True


def _reducer_input(campaign_id: int, cap: int) -> tuple[bytes, int]:
    """The canonical outputs of the campaign's done tasks in task order, framed as
    <u32 LE length><bytes>. Raises ServiceError past `cap` bytes."""
    from campaigns.inputs import FRAME_HEADER

    parts: list[bytes] = []
    size = count = 0
    outputs = (
        Task.objects.filter(campaign_id=campaign_id, state=Task.State.DONE)
        .order_by("seq")
        .values_list("canonical_result__output", flat=True)
    )
    for output in outputs.iterator(chunk_size=2000):
        data = bytes(output or b"")
        size += FRAME_HEADER.size + len(data)
        if size > cap:
            raise ServiceError(
                f"{REDUCER_ERROR_PREFIX}: the results are above the {cap}-byte reducer input limit."
            )
        parts.append(FRAME_HEADER.pack(len(data)))
        parts.append(data)
        count += 1
    return b"".join(parts), count


def campaign_reduce(*, campaign_id: int, final: bool) -> bool:
    """The reducer job: run the campaign's reducer kernel in the sandbox over its results and
    store the output as `reduced_output`. `final` runs after the campaign completed; otherwise
    a partial reduction of a running campaign. A failing reducer (limits, trap, non-zero exit,
    too much input) leaves the previous output, records the reason in `error` and never
    changes the campaign's state: the tasks' results stay valid. Returns True on success."""
    campaign = (
        Campaign.objects.select_related("reducer__blob", "static_data")
        .filter(pk=campaign_id)
        .first()
    )
    if campaign is None or campaign.reducer is None:
        return False
    wanted = State.COMPLETED if final else State.RUNNING
    if campaign.state != wanted:
        return False
    if not final and campaign.tasks_total > limits().get(
        "REDUCE_PARTIAL_MAX_TASKS", REDUCE_PARTIAL_MAX_TASKS
    ):
        return False
    from kernelhost import Limits

    cfg = limits()
    try:
        stdin, count = _reducer_input(
            campaign_id, cfg.get("REDUCER_INPUT_MAX_BYTES", REDUCER_INPUT_MAX_BYTES)
        )
    except ServiceError as exc:
        _reducer_failed(campaign_id, wanted, str(exc))
        return False
    host = sandbox_host()
    static = campaign.static_data
    result = host.run(
        host.compile(bytes(campaign.reducer.blob.data), campaign.reducer.sha256),
        stdin=stdin,
        argv0="reducer",
        env={
            "CCGSC_FINAL": "1" if final else "0",
            "CCGSC_RESULTS": str(count),
            "CCGSC_TASKS_TOTAL": str(campaign.tasks_total),
        },
        static=bytes(static.data) if static else None,
        static_sha256=static.sha256 if static else None,
        limits=Limits(
            timeout_s=cfg["SANDBOX_TIMEOUT_SECONDS"],
            memory_bytes=cfg["KERNEL_MEMORY_CAP"],
            output_bytes=cfg.get("REDUCED_OUTPUT_MAX_BYTES", REDUCED_OUTPUT_MAX_BYTES),
        ),
    )
    if not result.ok:
        message = describe_failure("reducer", result)  # starts with REDUCER_ERROR_PREFIX
        log.warning("reducer of campaign %s failed: %s", campaign_id, message)
        _reducer_failed(campaign_id, wanted, message)
        return False
    with transaction.atomic():
        # Conditional on the state this run was for: a partial reduction that finishes after
        # the campaign completed must not overwrite the final one.
        updated = Campaign.objects.filter(pk=campaign_id, state=wanted).update(
            reduced_output=result.stdout, reduced_at=timezone.now()
        )
        if updated:
            Campaign.objects.filter(pk=campaign_id, error__startswith=REDUCER_ERROR_PREFIX).update(
                error=""
            )
    return bool(updated)


def _reducer_failed(campaign_id: int, state: str, message: str) -> None:
    Campaign.objects.filter(pk=campaign_id, state=state).update(error=message)
