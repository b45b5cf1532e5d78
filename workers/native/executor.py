"""What a task is on this side, and running one through the KernelHost.

Everything here that runs in a slot thread (`execute`) touches only its own Job and calls
`post` to hand things back to the event loop; the loop never waits for a kernel.

The argv/env/stdin rules are the protocol's: argv = ["kernel", *campaign.args, *task.args],
env = campaign.env overlaid by task.env, stdin = the task input, /ccgsc/static = the campaign's
static data, /ccgsc/checkpoint = the task's checkpoint when it is resumed, and the campaign's
timeout is the wall-time limit.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from kernelhost import Limits, RunResult
from kernelhost.gpu import GpuManifest, parse_manifest
from workers.protocol import ERROR_KINDS, MAX_STDERR, ErrorKind, ResultItem

log = logging.getLogger("ccgsc.worker")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: A kernel's progress reaches the server at most this often per task (the host already calls
#: on_progress at most every 50 ms; the server only needs a live bar).
PROGRESS_INTERVAL = 0.5
#: Checkpoints go out at most this often per task; in between only the latest is kept, and it
#: is sent when the run fails (e.g. times out), so a resumed attempt loses at most this much.
CHECKPOINT_INTERVAL = 1.0
#: Memory limit when the campaign does not say (the kernel's declared maximum still applies).
DEFAULT_MEMORY = Limits().memory_bytes

# Kinds of items a slot thread posts to the loop.
DONE, CHECKPOINT, PROGRESS = 0, 1, 2
Post = Callable[[int, "Job", Any], None]


class RunHost(Protocol):
    """What runs a compiled kernel: kernelhost.KernelHost, or kernelhost.gpuhost.GpuHost for
    gpu kernels (which ignores what does not apply to them: args, env, static, checkpoint)."""

    def run(
        self,
        kernel: Any,
        *,
        stdin: bytes = b"",
        args: Sequence[str] = (),
        argv0: str = "kernel",
        env: Mapping[str, str] | None = None,
        static: bytes | None = None,
        static_sha256: str | None = None,
        checkpoint: bytes | None = None,
        limits: Limits = ...,
        on_progress: Callable[[float], None] | None = None,
        on_checkpoint: Callable[[bytes], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RunResult: ...


class Host(RunHost, Protocol):
    """The part of kernelhost.KernelHost the worker uses (tests substitute a fake)."""

    def compile(self, wasm: bytes, sha256: str | None = None) -> Any: ...


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must map strings to strings")
    return value


@dataclass(frozen=True)
class CampaignSpec:
    """A campaign descriptor from a "tasks" frame, validated (the server is trusted to be
    well-formed, but a worker must not crash on a server bug)."""

    id: int
    name: str
    kernel: str
    kind: str
    static: str | None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    memory: int | None = None
    gpu: GpuManifest | None = None  # kind "gpu": the kernel's manifest

    @classmethod
    def parse(cls, campaign_id: int, desc: Any) -> CampaignSpec:
        """Raises ValueError saying what is wrong with the descriptor."""
        if not isinstance(desc, dict):
            raise ValueError("campaign descriptor is not a map")
        kernel, static = desc.get("kernel"), desc.get("static")
        if not isinstance(kernel, str) or not SHA256_RE.match(kernel):
            raise ValueError("campaign descriptor has no valid kernel hash")
        if static is not None and (not isinstance(static, str) or not SHA256_RE.match(static)):
            raise ValueError("campaign descriptor has an invalid static data hash")
        timeout = desc.get("timeout", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError("campaign descriptor has an invalid timeout")
        memory = desc.get("memory")
        if memory is not None and (
            isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0
        ):
            raise ValueError("campaign descriptor has an invalid memory limit")
        kind = str(desc.get("kind", "wasm"))
        manifest = None
        if kind == "gpu":
            if not isinstance(desc.get("gpu"), dict):
                raise ValueError("a gpu campaign's descriptor has no manifest")
            manifest = parse_manifest(desc["gpu"])  # KernelRejected is a ValueError
        return cls(
            id=campaign_id,
            name=str(desc.get("name", "")),
            kernel=kernel,
            kind=kind,
            static=static,
            args=_strings(desc.get("args"), "campaign args"),
            env=_string_map(desc.get("env"), "campaign env"),
            timeout=float(timeout),
            memory=memory,
            gpu=manifest,
        )


@dataclass(frozen=True)
class RunPlan:
    """Everything a slot needs for any task of one campaign in one session: the compiled
    kernel, the static data and the limits (which depend on the server's welcome)."""

    kernel: Any
    static: bytes | None
    static_sha256: str | None
    limits: Limits
    args: list[str]
    env: dict[str, str]
    wants_progress: bool = True
    wants_checkpoint: bool = True

    @classmethod
    def build(
        cls,
        spec: CampaignSpec,
        kernel: Any,
        static: bytes | None,
        *,
        max_output: int,
        max_checkpoint: int,
    ) -> RunPlan:
        imports = getattr(getattr(kernel, "info", None), "imports", None)
        return cls(
            kernel=kernel,
            static=static,
            static_sha256=spec.static if static is not None else None,
            limits=Limits(
                timeout_s=spec.timeout,
                memory_bytes=spec.memory or DEFAULT_MEMORY,
                output_bytes=max_output,
                checkpoint_bytes=max_checkpoint,
            ),
            args=spec.args,
            env=spec.env,
            # Callbacks cost a little per run; skip them for kernels that cannot call them.
            wants_progress=imports is None or "ccgsc.progress" in imports,
            wants_checkpoint=imports is None or "ccgsc.checkpoint" in imports,
        )


class Job:
    """One lease in this worker's hands. Owned by the event loop, except the fields marked
    (thread), which only the slot thread running it touches."""

    __slots__ = (
        "args",
        "campaign",
        "cancel",
        "cancelled",
        "checkpoint",
        "ckpt_deferred",
        "ckpt_sent_at",
        "env",
        "future",
        "gen",
        "lease",
        "plan",
        "progress_at",
        "stdin",
        "task",
    )

    def __init__(
        self,
        *,
        lease: int,
        task: int,
        campaign: int,
        stdin: bytes,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        checkpoint: bytes | None = None,
        gen: int = 0,
    ) -> None:
        self.lease = lease
        self.task = task
        self.campaign = campaign
        self.stdin = stdin
        self.args = args
        self.env = env
        self.checkpoint = checkpoint
        self.gen = gen  # the session (connection) generation it belongs to
        self.plan: RunPlan | None = None
        self.future: Future[None] | None = None
        # Set to stop the kernel of a running job (cancel, disconnect, shutdown).
        self.cancel = threading.Event()
        # Its result must not be sent (cancelled by the server, released, or session gone).
        self.cancelled = False
        self.progress_at = 0.0  # (thread)
        self.ckpt_sent_at = 0.0  # (thread)
        self.ckpt_deferred: bytes | None = None  # (thread)

    @classmethod
    def from_wire(cls, item: Any, gen: int) -> Job:
        """A job from one entry of a "tasks" frame. Raises ValueError (with the lease id when
        it can be read, as `exc.args[1]`) for a malformed entry."""
        if not isinstance(item, dict):
            raise ValueError("task entry is not a map", None)
        lease = item.get("lease")
        if isinstance(lease, bool) or not isinstance(lease, int) or lease <= 0:
            raise ValueError("task entry has no lease id", None)
        try:
            stdin = item.get("in", b"")
            if isinstance(stdin, str):
                stdin = stdin.encode()
            if not isinstance(stdin, bytes):
                raise ValueError("task input is not bytes")
            ckpt = item.get("ckpt")
            if ckpt is not None and not isinstance(ckpt, bytes):
                raise ValueError("task checkpoint is not bytes")
            campaign, task = item.get("c"), item.get("task")
            if not isinstance(campaign, int) or not isinstance(task, int):
                raise ValueError("task entry lacks its campaign or task id")
            return cls(
                lease=lease,
                task=task,
                campaign=campaign,
                stdin=stdin,
                args=_strings(item.get("args"), "task args") or None,
                env=_string_map(item.get("env"), "task env") or None,
                checkpoint=ckpt,
                gen=gen,
            )
        except ValueError as exc:
            raise ValueError(str(exc), lease) from None

    @property
    def size(self) -> int:
        """Bytes this job holds in memory until it is done (input and checkpoint)."""
        return len(self.stdin) + (len(self.checkpoint) if self.checkpoint is not None else 0)

    def __repr__(self) -> str:
        return f"<Job lease={self.lease} task={self.task} campaign={self.campaign}>"


def failure(
    lease: int, err: ErrorKind, message: str, *, ms: int = 0, exit_code: int | None = None
) -> ResultItem:
    """A failed result item, `message` as its stderr."""
    return ResultItem(
        lease=lease,
        ok=False,
        err=err,
        exit=exit_code,
        stderr=message.encode("utf-8", "replace")[-MAX_STDERR:],
        ms=ms,
    )


def result_item(result: RunResult, ms: int, lease: int) -> ResultItem:
    """The wire form of a RunResult.

    A failure's "stderr" is the kernel's stderr tail followed by the host's one-sentence reason
    (e.g. "The kernel ran longer than its time limit of 5 s."), cut to the last MAX_STDERR
    bytes: that is what an owner reads on the campaign's failure list.
    """
    if result.ok:
        return ResultItem(lease=lease, ok=True, output=result.stdout, exit=0, ms=ms)
    kind = result.error.value if result.error is not None else "exit"
    # "cancelled" is no error kind of the protocol: never sent in practice (the job is dropped).
    err = cast(ErrorKind, kind) if kind in ERROR_KINDS else "host"
    stderr = result.stderr_tail
    if result.message:
        sep = b"" if not stderr or stderr.endswith(b"\n") else b"\n"
        stderr = stderr + sep + result.message.encode("utf-8", "replace")
    return ResultItem(
        lease=lease, ok=False, err=err, exit=result.exit_code, stderr=stderr[-MAX_STDERR:], ms=ms
    )


def execute(host: RunHost, job: Job, post: Post) -> ResultItem:
    """Run `job` (its plan must be set) in the calling thread; return its result item.

    Never raises: a host failure (out of descriptors, a bug) becomes err="host", bad
    arguments (NUL in an argument, "=" in an env name) err="invalid". Progress and
    checkpoints are handed to `post`, rate-limited per job (see the constants above).
    """
    plan = job.plan
    assert plan is not None
    args = plan.args + job.args if job.args else plan.args
    env = {**plan.env, **job.env} if job.env else plan.env

    on_progress: Callable[[float], None] | None = None
    on_checkpoint: Callable[[bytes], None] | None = None
    if plan.wants_progress:

        def on_progress(fraction: float) -> None:
            now = time.monotonic()
            if now - job.progress_at >= PROGRESS_INTERVAL:
                job.progress_at = now
                post(PROGRESS, job, fraction)

    if plan.wants_checkpoint:

        def on_checkpoint(data: bytes) -> None:
            now = time.monotonic()
            if now - job.ckpt_sent_at >= CHECKPOINT_INTERVAL:
                job.ckpt_sent_at = now
                job.ckpt_deferred = None
                post(CHECKPOINT, job, data)
            else:
                job.ckpt_deferred = data

    started = time.perf_counter()
    try:
        result = host.run(
            plan.kernel,
            stdin=job.stdin,
            args=args,
            env=env,
            static=plan.static,
            static_sha256=plan.static_sha256,
            checkpoint=job.checkpoint,
            limits=plan.limits,
            on_progress=on_progress,
            on_checkpoint=on_checkpoint,
            cancel=job.cancel,
        )
    except ValueError as exc:
        return failure(job.lease, "invalid", f"The task cannot be run: {exc}")
    except Exception as exc:
        log.exception("the kernel host failed on %r", job)
        return failure(job.lease, "host", f"The worker's kernel host failed: {exc}")
    # The wall time of the whole run (instantiation included): that is what a task costs this
    # worker, and the server learns from it how many tasks to keep in our hands.
    ms = round((time.perf_counter() - started) * 1000)
    if not result.ok and job.ckpt_deferred is not None:
        # A failed attempt (typically a timeout) is retried: let it resume from the latest.
        post(CHECKPOINT, job, job.ckpt_deferred)
        job.ckpt_deferred = None
    return result_item(result, ms, job.lease)
