"""Writes for kernels, campaigns and tasks. Keyword-only, atomic, and each announces what it
changed (campaigns.signals) after commit. Views, the API, the CLI and jobs all call these."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import (
    Case,
    F,
    OuterRef,
    Q,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat
from django.utils import timezone

from accounts.models import Organization, User
from campaigns import replicas, signals
from campaigns.inputs import (
    InputError,
    TaskSpec,
    args_problem,
    env_problem,
    iter_frames,
    iter_task_file,
)
from campaigns.jobs import generate_tasks, reduce_results
from campaigns.models import Blob, Campaign, Kernel, Result, Task
from ccgsc.jobs import enqueue

log = logging.getLogger(__name__)
State = Campaign.State


class ServiceError(ValueError):
    """A request the platform refuses, with a message meant for the person who made it."""


def limits() -> dict[str, Any]:
    return settings.CCGSC


def sandbox_host() -> Any:
    """This process's kernel host, with its compiled-module cache where settings say."""
    from kernelhost import KernelHost, default_host, set_default_host

    global _host_configured
    if not _host_configured:
        set_default_host(
            KernelHost(
                cache_dir=limits()["MODULE_CACHE_DIR"],
                cache_max_bytes=limits()["MODULE_CACHE_MAX_BYTES"],
            )
        )
        _host_configured = True
    return default_host()


_host_configured = False


# --- blobs and kernels --------------------------------------------------------------------------


def blob_put(data: bytes) -> Blob:
    """Store bytes once, by content."""
    digest = hashlib.sha256(data).hexdigest()
    blob, _ = Blob.objects.get_or_create(sha256=digest, defaults={"data": data, "size": len(data)})
    return blob


def kernel_upload(
    *,
    organization: Organization,
    name: str,
    data: bytes,
    kind: str = Kernel.Kind.WASM,
    description: str = "",
    created_by: User | None = None,
) -> Kernel:
    """Validate and store a kernel. The same bytes uploaded twice by one organization give the
    existing kernel back. Raises ServiceError saying which check failed."""
    kernel, _ = kernel_get_or_upload(
        organization=organization,
        name=name,
        data=data,
        kind=kind,
        description=description,
        created_by=created_by,
    )
    return kernel


def kernel_delete(*, kernel: Kernel) -> None:
    """Delete a kernel no campaign refers to (as its kernel, generator, verifier or reducer);
    ServiceError naming the campaigns otherwise. Its blob stays (content-addressed, maybe
    shared)."""
    from django.db.models import Q

    with transaction.atomic():
        Kernel.objects.select_for_update().filter(pk=kernel.pk).first()
        users = list(
            Campaign.objects.filter(
                Q(kernel=kernel) | Q(generator=kernel) | Q(verifier=kernel) | Q(reducer=kernel)
            )
            .order_by("pk")
            .values_list("name", flat=True)[:4]
        )
        if users:
            shown = ", ".join(f"“{name}”" for name in users[:3])
            more = " and others" if len(users) > 3 else ""
            raise ServiceError(
                f"The kernel “{kernel.name}” is used by {shown}{more}: a kernel stays as long as "
                "a campaign refers to it (as its kernel, generator, verifier or reducer)."
            )
        kernel.delete()


def kernel_get_or_upload(
    *,
    organization: Organization,
    name: str,
    data: bytes,
    kind: str = Kernel.Kind.WASM,
    description: str = "",
    created_by: User | None = None,
) -> tuple[Kernel, bool]:
    """kernel_upload, also saying whether a new kernel was stored: (kernel, created). Kernels
    are content-addressed, one per organization and sha256, so bytes the organization already
    uploaded give (the existing kernel, False), under its first name, kind and description;
    nothing is stored or renamed. A module declaring no memory maximum is stored with the
    platform's cap written in, under the new bytes' sha256 (the upload's is kept as
    original_sha256), so uploading it again finds the same kernel."""
    cap = limits()["KERNEL_MAX_BYTES"]
    if not data:
        raise ServiceError("The kernel file is empty.")
    if len(data) > cap:
        raise ServiceError(f"The kernel is {len(data)} bytes; the limit is {cap} bytes.")
    memory_max: int | None = None
    imports: list[str] = []
    original_sha256 = ""
    if kind == Kernel.Kind.WASM:
        # Imported here: loading wasmtime is only needed by processes that validate or run
        # kernels, not by every web process at start-up.
        from kernelhost import KernelRejected

        try:
            admitted = sandbox_host().admit(data, memory_cap=limits()["KERNEL_MEMORY_CAP"])
        except KernelRejected as exc:
            reason = exc.reason[:1].lower() + exc.reason[1:]  # it follows a colon
            raise ServiceError(f"The kernel was rejected: {reason}") from None
        # A module without a memory maximum is stored with the platform's cap written in
        # (browsers enforce no other limit); it is content-addressed by its new hash.
        if admitted.rewritten:
            data, original_sha256 = admitted.wasm, admitted.original_sha256
        memory_max, imports = admitted.info.memory_max, list(admitted.info.imports)
    elif kind == Kernel.Kind.JS:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceError("A JavaScript kernel must be UTF-8 text.") from None
        if "run" not in text or "export" not in text:
            raise ServiceError(
                "A JavaScript kernel is an ES module that exports"
                " an async function run(input, context)."
            )
    else:
        raise ServiceError(f"Unknown kernel kind {kind!r}: use wasm or js.")
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        existing = Kernel.objects.filter(organization=organization, sha256=digest).first()
        if existing is not None:
            return existing, False
        blob = blob_put(data)
        kernel = Kernel.objects.create(
            organization=organization,
            name=name.strip() or "kernel",
            description=description,
            kind=kind,
            blob=blob,
            sha256=digest,
            size=len(data),
            memory_max=memory_max,
            original_sha256=original_sha256,
            imports=imports,
            created_by=created_by,
        )
        return kernel, True


# --- campaigns ----------------------------------------------------------------------------------

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


def _check_args_env(args: Any, env: Any, *, args_field: str = "args") -> None:
    """The one check of arguments and environments (campaigns.inputs): the web form, the API
    and task files refuse the same things with the same words."""
    problem = args_problem(args, args_field) or env_problem(env)
    if problem is not None:
        raise ServiceError(f"{problem}.")


def campaign_create(  # noqa: C901 (validates every option; to split with the services package, issue 14 item 5)
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
    _check_args_env(args, env)
    for k in (kernel, generator, verifier, reducer):
        if k is not None and k.organization_id != organization.pk:
            raise ServiceError("Kernels must belong to the campaign's organization.")
    if input_source == Campaign.InputSource.GENERATOR:
        if generator is None:
            raise ServiceError("A generator campaign needs a generator kernel.")
        if generator.kind != Kernel.Kind.WASM:
            raise ServiceError("Generators run on the server and must be WebAssembly kernels.")
        _check_args_env(generator_args or [], {}, args_field="generator_args")
    elif input_source == Campaign.InputSource.FILE:
        if task_file is None:
            raise ServiceError("A task-file campaign needs a task file.")
    elif input_source != Campaign.InputSource.API:
        raise ServiceError(f"Unknown input source {input_source!r}.")
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
            _start_generating(campaign)
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


def _start_generating(campaign: Campaign) -> None:
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
        _check_args_env(generator_args, {}, args_field="generator_args")
        campaign.generator_args = generator_args
    with transaction.atomic():
        _clear_tasks(campaign)
        Campaign.objects.filter(pk=campaign.pk).update(
            state=State.DRAFT, error="", finished_at=None, generator_args=campaign.generator_args
        )
        campaign.state = State.DRAFT
        _start_generating(campaign)
    return campaign


def _clear_tasks(campaign: Campaign) -> None:
    Task.objects.filter(campaign=campaign).update(canonical_result=None)
    Result.objects.filter(campaign=campaign).delete()
    Task.objects.filter(campaign=campaign).delete()
    Campaign.objects.filter(pk=campaign.pk).update(tasks_total=0, tasks_done=0, tasks_failed=0)


def _insert_replicas(campaign_id: int, first_seq: int, end_seq: int, copies: int) -> None:
    """Create `copies` unsent replicas for each task with first_seq <= seq < end_seq, set-based."""
    r, t = Result._meta.db_table, Task._meta.db_table
    sql = (
        f"INSERT INTO {r} ({replicas.COLUMNS})"
        f" SELECT campaign_id, id, {replicas.FRESH} FROM {t}"
        " WHERE campaign_id = %s AND seq >= %s AND seq < %s ORDER BY seq"
    )
    with connection.cursor() as cursor:
        for _ in range(copies):
            cursor.execute(sql, [campaign_id, first_seq, end_seq])


def _insert_tasks(campaign_id: int, base: int, batch: list[TaskSpec]) -> None:
    """Insert a batch of tasks with seq base, base+1, ... The ORM's bulk_create binds every
    value in Python (about 1.6 s per 5,000 rows on PostgreSQL); COPY streams them (PostgreSQL)
    and executemany loops in C (SQLite), both an order of magnitude faster."""
    now = timezone.now()
    columns = "campaign_id, seq, input, args, env, state, error_count, failure, created_at"
    rows = [
        (
            campaign_id,
            base + i,
            spec.input,
            None if spec.args is None else json.dumps(spec.args),
            None if spec.env is None else json.dumps(spec.env),
            0,
            0,
            "",
            now,
        )
        for i, spec in enumerate(batch)
    ]
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * 9)
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _batches(specs: Iterable[TaskSpec], size: int) -> Iterator[list[TaskSpec]]:
    it = iter(specs)
    while batch := list(islice(it, size)):
        yield batch


def tasks_add(*, campaign: Campaign, specs: Iterable[TaskSpec], batch_size: int = 0) -> int:
    """Append tasks to a campaign in bulk batches, each committed on its own so workers can
    start on the first tasks of a long stream while the rest are inserted, in constant memory.
    Returns the number of tasks added."""
    batch_size = batch_size or limits()["GENERATOR_BATCH"]
    if campaign.state in (State.CANCELLED, State.FAILED):
        raise ServiceError(f"Tasks cannot be added to a {campaign.state} campaign.")
    max_input = limits()["TASK_INPUT_MAX_BYTES"]
    added = 0
    for batch in _batches(specs, batch_size):
        for spec in batch:
            if len(spec.input) > max_input:
                raise ServiceError(f"A task input is above the {max_input}-byte limit.")
        with transaction.atomic():
            # The campaign row lock orders concurrent appends, so seq numbers never collide.
            locked = (
                Campaign.objects.select_for_update()
                .only("tasks_total", "state", "target_replicas")
                .get(pk=campaign.pk)
            )
            if locked.state in (State.CANCELLED, State.FAILED):
                raise ServiceError(f"Tasks cannot be added to a {locked.state} campaign.")
            base = locked.tasks_total
            _insert_tasks(campaign.pk, base, batch)
            _insert_replicas(campaign.pk, base, base + len(batch), locked.target_replicas)
            updates: dict[str, Any] = {"tasks_total": F("tasks_total") + len(batch)}
            if campaign.input_source != Campaign.InputSource.GENERATOR:
                updates["input_state"] = Campaign.InputState.READY
            if locked.state == State.COMPLETED:
                # More work for a finished campaign reopens it.
                updates.update(state=State.RUNNING, finished_at=None)
            Campaign.objects.filter(pk=campaign.pk).update(**updates)
            if locked.state in (State.RUNNING, State.COMPLETED):
                transaction.on_commit(
                    lambda: signals.work_available.send(Campaign, campaign_id=campaign.pk)
                )
        added += len(batch)
    campaign.refresh_from_db()
    return added


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
    _clear_tasks(campaign)
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
            raise ServiceError(_describe_failure("generator", result))
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
            _clear_tasks(campaign)
            Campaign.objects.filter(pk=campaign_id).update(
                state=State.FAILED,
                input_state=Campaign.InputState.FAILED,
                error=message,
                finished_at=timezone.now(),
            )
            _announce(campaign_id, State.FAILED)
        return
    finally:
        if stream is not None:
            stream.close()
    with transaction.atomic():
        Campaign.objects.filter(pk=campaign_id).update(input_state=Campaign.InputState.READY)
        campaign_check_complete(campaign_id=campaign_id)


def _describe_failure(what: str, result: Any) -> str:
    detail = result.message or str(result.error)
    tail = result.stderr_tail.decode("utf-8", "replace").strip()[-500:]
    text = f"The {what} failed ({result.error}): {detail}"
    return f"{text}\nstderr: {tail}" if tail else text


def _announce(campaign_id: int, state: str) -> None:
    transaction.on_commit(
        lambda: signals.campaign_changed.send(Campaign, campaign_id=campaign_id, state=state)
    )


# --- lifecycle ----------------------------------------------------------------------------------

PAST = {"start": "started", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": (State.DRAFT,),
    "pause": (State.RUNNING,),
    "resume": (State.PAUSED,),
    "cancel": (State.DRAFT, State.RUNNING, State.PAUSED),
}


def _transition(campaign: Campaign, action: str, new_state: str, **extra: Any) -> Campaign:
    allowed = TRANSITIONS[action]
    with transaction.atomic():
        updated = Campaign.objects.filter(pk=campaign.pk, state__in=allowed).update(
            state=new_state, **extra
        )
        if not updated:
            campaign.refresh_from_db(fields=["state"])
            raise ServiceError(f"A {campaign.state} campaign cannot be {PAST[action]}.")
        if new_state in (State.PAUSED, State.CANCELLED):
            # Outstanding leases are withdrawn: paused replicas go back to the queue (it was not
            # the worker's fault), cancelled ones are closed. Workers are told to stop them.
            leased = Result.objects.filter(campaign=campaign, state=Result.State.LEASED)
            if new_state == State.PAUSED:
                leased.update(
                    state=Result.State.UNSENT,
                    session_id=None,
                    user=None,
                    site_id=None,
                    leased_at=None,
                    deadline=None,
                )
            else:
                Result.objects.filter(
                    campaign=campaign, state__in=(Result.State.UNSENT, Result.State.LEASED)
                ).update(state=Result.State.CANCELLED)
        _announce(campaign.pk, new_state)
        if new_state == State.RUNNING:
            transaction.on_commit(
                lambda: signals.work_available.send(Campaign, campaign_id=campaign.pk)
            )
            campaign_check_complete(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    return campaign


def campaign_start(*, campaign: Campaign) -> Campaign:
    if campaign.input_state == Campaign.InputState.FAILED:
        raise ServiceError("The campaign's input failed; fix it and regenerate before starting.")
    return _transition(campaign, "start", State.RUNNING, started_at=timezone.now())


def campaign_pause(*, campaign: Campaign) -> Campaign:
    return _transition(campaign, "pause", State.PAUSED)


def campaign_resume(*, campaign: Campaign) -> Campaign:
    return _transition(campaign, "resume", State.RUNNING)


def campaign_cancel(*, campaign: Campaign) -> Campaign:
    return _transition(campaign, "cancel", State.CANCELLED, finished_at=timezone.now())


def campaign_set_approved(*, campaign_ids: list[int], approved: bool) -> int:
    """A platform admin approves campaigns for anonymous and embedded volunteers (or withdraws
    the approval: leases already given out finish, no new ones are made). Returns how many
    campaigns changed; idle workers are woken for newly approved running ones."""
    with transaction.atomic():
        changed = list(
            Campaign.objects.filter(pk__in=campaign_ids)
            .exclude(approved=approved)
            .values_list("pk", "state")
        )
        Campaign.objects.filter(pk__in=[pk for pk, _ in changed]).update(approved=approved)
        woken = [pk for pk, state in changed if approved and state == State.RUNNING]
        if woken:
            transaction.on_commit(lambda: _wake(woken))
    return len(changed)


def _wake(campaign_ids: list[int]) -> None:
    for pk in campaign_ids:
        signals.work_available.send(Campaign, campaign_id=pk)


def campaign_check_complete(*, campaign_id: int) -> bool:
    """End a running campaign whose input is final and whose every task is decided: completed,
    or failed with the reason when not one task succeeded (a kernel that cannot run on any
    host must not look like a finished job). Called inside the transaction that decided the
    last tasks; idempotent. One UPDATE whichever way it ends."""
    first_failed = Task.objects.filter(campaign_id=OuterRef("pk"), state=Task.State.FAILED)
    first_failed = first_failed.order_by("seq")[:1]
    all_failed = Q(tasks_done=0)
    done = Campaign.objects.filter(
        pk=campaign_id,
        state=State.RUNNING,
        input_state=Campaign.InputState.READY,
        tasks_total__gt=0,
        tasks_total=F("tasks_done") + F("tasks_failed"),
    ).update(
        state=Case(When(all_failed, then=Value(State.FAILED)), default=Value(State.COMPLETED)),
        error=Case(
            When(
                all_failed,
                then=Concat(
                    Value("Every task failed. The first failure (task "),
                    Cast(Subquery(first_failed.values("seq")), TextField()),
                    Value("): "),
                    Coalesce(
                        Subquery(first_failed.values("failure")),
                        Value("unknown"),
                        output_field=TextField(),
                    ),
                    output_field=TextField(),
                ),
            ),
            default=F("error"),
            output_field=TextField(),
        ),
        finished_at=timezone.now(),
    )
    if done:
        # Once per campaign, so the extra query stays off the per-result path.
        state, reducer = Campaign.objects.values_list("state", "reducer_id").get(pk=campaign_id)
        _announce(campaign_id, state)
        if state == State.COMPLETED and reducer is not None:
            enqueue(reduce_results, campaign_id, True)
    return bool(done)


# --- reducers -----------------------------------------------------------------------------------

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
        message = _describe_failure("reducer", result)  # starts with REDUCER_ERROR_PREFIX
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
