"""The worker proper: one server session at a time, N slots, batched results, reconnects.

Threads and the loop. Everything here runs on one asyncio event loop except kernels, which
run in slot threads (runner.py: the job runner, and how their reports reach the loop).

Sessions. A session is one connection (WebSocket or HTTP fallback) from hello/welcome to its
end. Leases belong to a session: when it ends, the server releases them, so this side drops
whatever it still holds of it (queued jobs are taken back, running kernels are stopped, and
results not yet sent are discarded; none of that may reach a later session). Jobs carry their
session's generation number, which is how late results of an old session are recognised.

Feeding. The server decides how many tasks a session holds (it learns our speed from the run
times we report, so a fast worker holds hundreds of no-op tasks and a slow one a couple per
slot); we only offer room: `want` = how many more we would take, up to the protocol's 4 frames
in hand and MAX_HELD_BYTES of task data (a memory bound of our own). Wants ride on result
frames, so a busy worker sends no extra frames to ask for work; an idle one sends nothing at
all and waits for the server's push.

Results are sent in batches, paced by the server's acks (results.py: the result batcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import random
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import websockets

from kernelhost import KernelRejected
from kernelhost.gpuhost import AdapterInfo, GpuHost, GpuKernel, GpuUnavailable
from workers import protocol

from . import __version__
from .backoff import Backoff
from .cache import BlobCache, BlobError, default_cache_dir
from .executor import CHECKPOINT, DONE, PROGRESS, CampaignSpec, Host, Job, RunHost, RunPlan, failure
from .results import ResultBatcher
from .runner import JobRunner
from .transport import HttpTransport, Transport, WebSocketTransport, http_base

log = logging.getLogger("ccgsc.worker")
T = TypeVar("T")

#: The server keeps at most 4 frames' worth of tasks in a session's hands; we offer that much
#: room and let its estimate of our speed decide (see module doc).
MAX_IN_HAND = 4 * protocol.MAX_BATCH
#: No more wants while the inputs and checkpoints of the tasks in hand weigh this much.
MAX_HELD_BYTES = 256 * 1024 * 1024
#: Progress of all running tasks is sent together at most this often.
PROGRESS_FLUSH = 0.5
WELCOME_TIMEOUT = 30.0
#: How long to wait for the server's answer to bye.
BYE_WAIT = 5.0
STATS_INTERVAL = 10.0
#: A session whose server has said nothing for this many heartbeats is considered dead (90 s at
#: the WebSocket heartbeat of 45 s, 110 s at 55 s when the server pings a silent session
#: itself: a server answers every ping at once).
SILENT_HEARTBEATS = 2
#: A connection that lasted this long resets the reconnect backoff.
STABLE_SECONDS = 10.0
#: Compiled kernels this worker keeps referenced (the host keeps its own LRU as well).
MAX_KERNELS = 32
#: Said when a worker without --gpu software finds only a software adapter (or none).
GPU_HINT = "; a software adapter (Mesa's lavapipe) is used only with --gpu software"
#: The most disk the cache takes by default: half for downloaded kernels and static data, half
#: for compiled modules and the static data as runs see it (least recently used go first).
CACHE_MAX = 2 * 1024**3
#: Errors after which reconnecting cannot help: the worker exits (status 2).
PERMANENT_ERRORS = {"auth", "version", "origin"}


@dataclass
class Options:
    """What the command line configures (see __main__.py for the flags)."""

    # One server root URL, or several separated by commas: the processes of one deployment
    # reached directly (without a load balancer). The worker starts at a random one and moves
    # to the next whenever its connection is lost or cannot be opened.
    server: str
    token: str | None = None
    slots: int = 1
    campaign: int | None = None
    http_only: bool = False
    cache_dir: Path | None = None
    cache_max: int | None = CACHE_MAX
    max_tasks: int | None = None
    exit_when_idle: float | None = None
    grace: float = 10.0
    max_in_hand: int = MAX_IN_HAND
    # GPU kernels: "auto" runs them on a real GPU when there is one (and the wgpu package),
    # "software" also on a software adapter (Mesa's lavapipe) when there is none, "off" never.
    # The command line's default is "auto" (looking for an adapter takes a second or two).
    gpu: str = "off"
    # Bytes of memory offered to a kernel (hello's `memory`): the server sends no campaign
    # whose kernel declares more. None: not stated.
    memory: int | None = None


def server_list(server: str) -> list[str]:
    """The server URLs of a --server value (comma-separated for several processes)."""
    servers = [part.strip() for part in server.split(",") if part.strip()]
    if not servers:
        raise ValueError("no server URL given")
    return servers


@dataclass
class Stats:
    ok: int = 0  # successful results sent
    failed: int = 0  # failed results sent
    ignored: int = 0  # results the server acknowledged as late or duplicate
    dropped: int = 0  # results discarded (cancelled, or their session ended first)
    sessions: int = 0

    @property
    def sent(self) -> int:
        return self.ok + self.failed


@dataclass(eq=False)
class Session:
    """The state of one connection, from welcome to its end."""

    gen: int
    transport: Transport
    id: Any
    max_frame: int = protocol.MAX_FRAME
    max_batch: int = protocol.MAX_BATCH
    max_output: int = 4 * 1024 * 1024
    max_checkpoint: int = 4 * 1024 * 1024
    heartbeat: float = 20.0
    # Seconds of our silence after which the server pings us (None: it does not, so we ping
    # every heartbeat; protocol.QUIET_HEARTBEAT).
    beat: float | None = None
    campaigns: dict[int, CampaignSpec | str] = field(default_factory=dict)  # str: why invalid
    plans: dict[int, RunPlan] = field(default_factory=dict)
    waiting: dict[int, list[Job]] = field(default_factory=dict)  # for their kernel/static data
    preparing: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)  # every lease held: waiting/queued/running
    held_bytes: int = 0  # inputs and checkpoints of `jobs`
    low_water: int = 0  # HTTP only: ask for more once no more than this many are held
    results: ResultBatcher = field(init=False)  # set by the worker once welcomed
    progress: dict[int, float] = field(default_factory=dict)
    progress_handle: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)
    last_heard: float = field(default_factory=time.monotonic)
    idle: bool = False
    closed: bool = False
    shutdown: asyncio.Task[None] | None = None

    @classmethod
    def from_welcome(cls, gen: int, transport: Transport, welcome: dict[str, Any]) -> Session:
        limits = welcome.get("limits")
        limits = limits if isinstance(limits, dict) else {}

        def num(key: str, default: int) -> int:
            value = limits.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
            return default

        return cls(
            gen=gen,
            transport=transport,
            id=welcome.get("session"),
            max_frame=num("max_frame", protocol.MAX_FRAME),
            max_batch=min(num("max_batch", protocol.MAX_BATCH), protocol.MAX_BATCH),
            max_output=num("max_output", 4 * 1024 * 1024),
            max_checkpoint=num("max_checkpoint", 4 * 1024 * 1024),
            heartbeat=float(num("heartbeat", 20)),
            beat=float(num("beat", 0)) or None,
        )


def heartbeat_step(
    now: float, heard: float, pinged: float, heartbeat: float, beat: float | None
) -> tuple[str, float]:
    """What a session's heartbeat does at `now` (monotonic seconds; `heard`: the server's last
    message, `pinged`: our last ping): ("dead", 0) once the server has been silent
    SILENT_HEARTBEATS heartbeats; ("ping", 0); or ("wait", seconds until the next look).
    Without `beat` a ping every `heartbeat`; with it (the server pings this session when it is
    silent, and we answer) one only once the server has been silent `heartbeat`, once per
    silence."""
    dead_at = heard + SILENT_HEARTBEATS * heartbeat
    if now > dead_at:
        return "dead", 0.0
    if beat is None:
        ping_at = pinged + heartbeat
    else:
        ping_at = heard + heartbeat if pinged < heard else math.inf
    if now >= ping_at:
        return "ping", 0.0
    return "wait", min(ping_at, dead_at) - now + 0.01


def user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        wasmtime_version = version("wasmtime")
    except PackageNotFoundError:
        wasmtime_version = "?"
    return (
        f"ccgsc-worker/{__version__} (python {platform.python_version()}; "
        f"wasmtime {wasmtime_version}; {platform.system()} {platform.machine()})"
    )[:200]


class Worker:
    """Run with `exit_code = await Worker(options).run()`.

    `host`, `cache`, `connect` and `backoff` are for tests: a fake KernelHost, a BlobCache,
    a coroutine function returning a connected Transport (or None when it cannot connect)
    instead of the real WebSocket/HTTP, and a faster reconnect schedule.
    """

    def __init__(
        self,
        options: Options,
        *,
        host: Host | None = None,
        cache: BlobCache | None = None,
        connect: Callable[[], Awaitable[Transport | None]] | None = None,
        backoff: Backoff | None = None,
        gpu_host: GpuHost | None = None,
    ) -> None:
        self.options = options
        self.slots = max(1, min(options.slots, protocol.MAX_SLOTS))
        self.max_in_hand = max(1, min(MAX_IN_HAND, options.max_in_hand))
        self.agent = user_agent()
        self._host = host
        # GPU kernels' host (kernelhost.gpuhost), started in run() unless options.gpu is "off";
        # None when there is no GPU (or wgpu) to run them.
        self.gpu_host = gpu_host
        self.gpu_info: AdapterInfo | None = None
        self._cache = cache
        self._connect = connect
        self.backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self.servers = server_list(options.server)
        # Workers that all start together spread over the processes instead of all choosing
        # the first.
        self._server_at = random.randrange(len(self.servers))
        self.session: Session | None = None
        self.gen = 0
        self.stopping = False
        self.exit_code = 0
        self.stats = Stats()
        self.runner = JobRunner(
            self.slots, host=self._host_for, report=self._on_report, reported=self._reported
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kernels: OrderedDict[str, Any] = OrderedDict()
        self._invalid: dict[str, str] = {}  # kernel sha256 -> why the host rejected it
        self._stop_event: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._signals = 0
        self._idle_since: float | None = None

    # --- lazily created collaborators ----------------------------------------------------------

    @property
    def host(self) -> Host:
        if self._host is None:
            from kernelhost import KernelHost

            root = Path(self.options.cache_dir) if self.options.cache_dir else default_cache_dir()
            cap = self.options.cache_max
            self._host = KernelHost(
                cache_dir=root / "modules", cache_max_bytes=None if cap is None else cap // 2
            )
        return self._host

    @property
    def cache(self) -> BlobCache:
        if self._cache is None:
            root = Path(self.options.cache_dir) if self.options.cache_dir else default_cache_dir()
            cap = self.options.cache_max
            self._cache = BlobCache(
                root, http_base(self.server), max_bytes=None if cap is None else cap // 2
            )
        return self._cache

    # --- the main loop -------------------------------------------------------------------------

    async def run(self) -> int:
        """Connect, work, reconnect on loss, until stopped (signal, --max-tasks,
        --exit-when-idle, or a permanent error). Returns the process exit status."""
        self._loop = asyncio.get_running_loop()
        self.runner.start(self._loop)
        self._stop_event = asyncio.Event()
        self._changed = asyncio.Event()
        self._install_signals()
        helpers = [self._loop.create_task(self._stats_loop())]
        if self.options.exit_when_idle is not None:
            helpers.append(self._loop.create_task(self._idle_loop(self.options.exit_when_idle)))
        backoff = self.backoff
        log.info(
            "ccgsc-worker %s: %d slot(s), server %s", __version__, self.slots, self.options.server
        )
        try:
            _ = self.host, self.cache  # fail early (unwritable cache dir) rather than per task
            await self._start_gpu()
            while not self.stopping:
                transport = await self._unless_stopped(self._open())
                if transport is not None:
                    started = time.monotonic()
                    welcomed = await self._serve(transport)
                    if welcomed and time.monotonic() - started >= STABLE_SECONDS:
                        backoff.reset()
                if self.stopping:
                    break
                self._next_server()
                delay = backoff.next()
                log.info("reconnecting in %.1f s", delay)
                await self._unless_stopped(asyncio.sleep(delay))
        finally:
            for task in helpers:
                task.cancel()
            self._remove_signals()
            await self.runner.finish()
            if self._cache is not None:
                await self._cache.aclose()
            if self.gpu_host is not None:
                await asyncio.to_thread(self.gpu_host.close)
        log.info(
            "stopped: %d task(s) done, %d failed, %d ignored by the server",
            self.stats.ok,
            self.stats.failed,
            self.stats.ignored,
        )
        return self.exit_code

    async def _start_gpu(self) -> None:
        """Find the GPU adapter (in the GPU host's child process) before the first hello, which
        reports it; without one this worker simply gets no gpu campaigns."""
        mode = self.options.gpu
        if mode == "off":
            self.gpu_host = None
            return
        if self.gpu_host is None:
            self.gpu_host = GpuHost("any" if mode == "software" else "hardware")
        try:
            self.gpu_info = await asyncio.to_thread(self.gpu_host.start)
        except GpuUnavailable as exc:
            log.info("no gpu kernels: %s%s", exc, "" if mode == "software" else GPU_HINT)
            self.gpu_host = None
            return
        log.info(
            "gpu kernels on %s%s",
            self.gpu_info.adapter,
            " (software: the CPU emulates a GPU)" if self.gpu_info.software else "",
        )

    async def _unless_stopped(self, aw: Awaitable[T]) -> T | None:
        """Await `aw`, or give up on it (cancelled) as soon as a stop is requested."""
        assert self._stop_event is not None
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            result = await task
            if hasattr(result, "close"):  # a transport that connected just too late
                await result.close()
        return None

    @property
    def server(self) -> str:
        """The server URL this worker connects to now."""
        return self.servers[self._server_at]

    def _next_server(self) -> None:
        """After a lost connection, the next of several servers (a process that died stays
        dead for a while; another one of the deployment takes the session)."""
        self._server_at = (self._server_at + 1) % len(self.servers)
        if self._cache is not None:
            self._cache.base_url = http_base(self.server)

    async def _open(self) -> Transport | None:
        if self._connect is not None:
            return await self._connect()
        server = self.server
        if not self.options.http_only:
            try:
                return await WebSocketTransport.open(server, agent=self.agent)
            except (ConnectionRefusedError, OSError) as exc:
                if not isinstance(exc, TimeoutError):
                    # Nothing listens (or no route): HTTP would fail the same way.
                    log.warning("cannot connect to %s: %s", server, exc)
                    return None
                log.warning("WebSocket connection timed out; trying the HTTP fallback")
            except websockets.InvalidHandshake as exc:
                log.warning("WebSocket refused (%s); trying the HTTP fallback", exc)
        return HttpTransport(server, agent=self.agent)

    async def _serve(self, transport: Transport) -> bool:
        """One session on a connected transport; returns whether the server welcomed us."""
        transport.send(self._hello())
        try:
            # A stop requested meanwhile does not wait for a server that is slow to answer.
            first = await self._unless_stopped(asyncio.wait_for(transport.recv(), WELCOME_TIMEOUT))
        except TimeoutError:
            log.warning("no welcome from the server within %d s", WELCOME_TIMEOUT)
            first = None
        if first is None or first["t"] != "welcome":
            if first is not None and first["t"] == "error":
                self._on_error(None, first)
            elif first is not None:
                log.warning("expected welcome, got %r", first["t"])
            await transport.close()
            return False
        self.gen += 1
        s = Session.from_welcome(self.gen, transport, first)
        s.results = ResultBatcher(
            transport,
            max_frame=s.max_frame,
            max_batch=s.max_batch,
            want=lambda: self._want(s),
            lingering=lambda: self.runner.running >= 2 * self.slots,
            on_sent=self._results_sent,
            alone=lambda: not s.jobs,
        )
        self.session = s
        self.stats.sessions += 1
        log.info(
            "connected to %s over %s: session %s, %d slot(s)",
            self.server,
            transport.name,
            s.id,
            self.slots,
        )
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(s))
        try:
            if self.stopping:
                self._begin_shutdown(s)
            else:
                self._ask(s)
            while True:
                msg = await transport.recv()
                if msg is None:
                    break
                s.last_heard = time.monotonic()
                self._handle(s, msg)
        finally:
            heartbeat.cancel()
            if not self.stopping:
                log.warning("connection lost (session %s)", s.id)
            self._end_session(s)
            await transport.close()
        return True

    def _hello(self) -> protocol.Hello:
        return protocol.Hello(
            v=protocol.VERSION,
            kind="native",
            slots=self.slots,
            kernels=self.cache.kernel_hashes(),
            agent=self.agent,
            token=self.options.token or None,
            campaign=self.options.campaign,
            gpu=protocol.GpuInfo(**self.gpu_info.hello()) if self.gpu_info else None,
            memory=self.options.memory,
            pongs=True,
        )

    async def _heartbeat(self, s: Session) -> None:
        """Ping as heartbeat_step says; a server gone silent ends the session (the TCP
        connection can stay up through a dead proxy)."""
        pinged = time.monotonic() if s.beat is None else -math.inf  # (once per silence)
        while not s.closed:
            now = time.monotonic()
            step, wait = heartbeat_step(now, s.last_heard, pinged, s.heartbeat, s.beat)
            if step == "dead":
                log.warning(
                    "the server has been silent for %.0f s; reconnecting", now - s.last_heard
                )
                await s.transport.close()
                return
            if step == "ping":
                s.transport.send(protocol.Ping())
                pinged = now
            else:
                await asyncio.sleep(wait)

    # --- messages from the server -------------------------------------------------------------

    def _handle(self, s: Session, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "tasks":
            self._on_tasks(s, msg)
        elif kind == "ack":
            if "leases" in msg:  # the answer to a result frame (not a release or checkpoint)
                ignored = msg.get("ignored")
                if isinstance(ignored, list) and ignored:
                    self.stats.ignored += len(ignored)
                    log.debug("server ignored %d late or duplicate result(s)", len(ignored))
                s.results.acked()
        elif kind == "idle":
            if not s.idle and not s.jobs and not self.stopping:
                log.info("no work available; waiting for the server to push some")
            s.idle = True
        elif kind == "cancel":
            self._on_cancel(s, msg)
        elif kind == "error":
            self._on_error(s, msg)
        elif kind == "bye":
            asyncio.get_running_loop().create_task(s.transport.close())
        elif kind == "ping":
            s.transport.send(protocol.Pong())  # the server's, to a silent session (hello: pongs)
        elif kind != "pong":
            log.debug("ignoring a %r message", kind)

    def _on_error(self, s: Session | None, msg: dict[str, Any]) -> None:
        code, message = msg.get("code"), msg.get("message")
        fatal = bool(msg.get("fatal"))
        log.warning("server error %s: %s%s", code, message, " (fatal)" if fatal else "")
        if code in PERMANENT_ERRORS:
            # A wrong token or protocol version stays wrong: retrying would only hammer.
            log.error("cannot work with this server (%s); exiting", code)
            self.exit_code = 2
            self.request_stop(f"server error {code}")
        if (fatal or code in PERMANENT_ERRORS) and s is not None:
            asyncio.get_running_loop().create_task(s.transport.close())

    def _on_tasks(self, s: Session, msg: dict[str, Any]) -> None:
        if s.idle:
            s.idle = False
        campaigns = msg.get("campaigns")
        if isinstance(campaigns, dict):
            for cid, desc in campaigns.items():
                if not isinstance(cid, int):
                    continue
                try:
                    s.campaigns[cid] = CampaignSpec.parse(cid, desc)
                except ValueError as exc:
                    s.campaigns[cid] = str(exc)
        tasks = msg.get("tasks")
        release: list[int] = []
        for item in tasks if isinstance(tasks, list) else []:
            try:
                job = Job.from_wire(item, s.gen)
            except ValueError as exc:
                lease = exc.args[1] if len(exc.args) > 1 else None
                if lease is not None:
                    s.results.add(failure(lease, "host", str(exc.args[0])))
                continue
            if self.stopping:
                release.append(job.lease)  # a frame that crossed our release on the wire
                continue
            s.jobs[job.lease] = job
            s.held_bytes += job.size
            self._schedule(s, job)
        if release:
            s.transport.send(protocol.Release(leases=release))
        if not s.transport.paced:
            s.low_water = max(self.slots, len(s.jobs) // 2)
        self._jobs_changed(s)

    def _on_cancel(self, s: Session, msg: dict[str, Any]) -> None:
        leases = msg.get("leases")
        n = 0
        for lease in leases if isinstance(leases, list) else []:
            job = s.jobs.pop(lease, None) if isinstance(lease, int) else None
            if job is not None:
                s.held_bytes -= job.size
                self.runner.drop(job)
                n += 1
        log.info("server cancelled %d task(s): %s", n, msg.get("reason", ""))
        self._jobs_changed(s)
        self._ask(s)  # the room they took is free again

    # --- scheduling jobs -----------------------------------------------------------------------

    def _schedule(self, s: Session, job: Job) -> None:
        plan = s.plans.get(job.campaign)
        if plan is not None:
            job.plan = plan
            self.runner.submit(job)
            return
        spec = s.campaigns.get(job.campaign)
        if spec is None:
            self._fail(s, job, "host", f"the server sent no descriptor for campaign {job.campaign}")
        elif isinstance(spec, str):
            self._fail(s, job, "host", f"bad descriptor for campaign {job.campaign}: {spec}")
        elif spec.kind == "gpu" and self.gpu_host is None:
            self._fail(s, job, "invalid", "a gpu kernel cannot run here: this worker has no GPU")
        elif spec.kind not in ("wasm", "gpu"):
            self._fail(s, job, "invalid", f"a {spec.kind!r} kernel cannot run in a native worker")
        elif spec.kernel in self._invalid:
            self._fail(s, job, "invalid", self._invalid[spec.kernel])
        else:
            s.waiting.setdefault(job.campaign, []).append(job)
            if job.campaign not in s.preparing:
                task = asyncio.get_running_loop().create_task(self._prepare(s, spec))
                s.preparing[job.campaign] = task

    async def _prepare(self, s: Session, spec: CampaignSpec) -> None:
        """Fetch (or find cached) the campaign's kernel and static data, compile the kernel,
        then start the jobs that waited for them (or fail them saying why)."""
        plan: RunPlan | None = None
        err: protocol.ErrorKind = "host"
        reason = ""
        try:
            kernel = self._kernels.get(spec.kernel)
            if kernel is None:
                code = await self.cache.get(spec.kernel)
                if spec.kind == "gpu":
                    assert self.gpu_host is not None and spec.gpu is not None  # see _schedule
                    kernel = await asyncio.to_thread(
                        self.gpu_host.compile, code, spec.kernel, spec.gpu
                    )
                else:
                    kernel = await asyncio.to_thread(self.host.compile, code, spec.kernel)
                self.cache.mark_kernel(spec.kernel)
                self._kernels[spec.kernel] = kernel
                while len(self._kernels) > MAX_KERNELS:
                    self._kernels.popitem(last=False)
                log.info("kernel %s ready for campaign %d %r", spec.kernel[:12], spec.id, spec.name)
            else:
                self._kernels.move_to_end(spec.kernel)
            static = await self.cache.get(spec.static) if spec.static else None
            plan = RunPlan.build(
                spec, kernel, static, max_output=s.max_output, max_checkpoint=s.max_checkpoint
            )
        except KernelRejected as exc:
            self._invalid[spec.kernel] = err_reason = f"The kernel was rejected: {exc.reason}"
            err, reason = "invalid", err_reason
            log.error("campaign %d: %s", spec.id, err_reason)
        except (BlobError, ValueError, OSError) as exc:
            reason = f"The worker could not get the campaign's kernel or static data: {exc}"
            log.error("campaign %d: %s", spec.id, reason)
        except Exception as exc:
            reason = f"The worker failed to prepare the campaign: {exc}"
            log.exception("campaign %d: preparing failed", spec.id)
        finally:
            s.preparing.pop(spec.id, None)
        if s.closed:
            return  # that session's jobs were dropped with it
        if plan is not None:
            s.plans[spec.id] = plan
        for job in s.waiting.pop(spec.id, []):
            if job.cancelled:
                continue
            if plan is not None:
                job.plan = plan
                self.runner.submit(job)
            else:
                self._fail(s, job, err, reason)
        self._jobs_changed(s)

    def _host_for(self, job: Job) -> RunHost:
        """Slot thread: the host that runs this job's kernel (gpu kernels: the GPU host)."""
        if job.plan is not None and isinstance(job.plan.kernel, GpuKernel):
            assert self.gpu_host is not None  # a gpu plan exists only with one (_schedule)
            return self.gpu_host
        return self.host

    def _fail(self, s: Session, job: Job, err: protocol.ErrorKind, message: str) -> None:
        if s.jobs.get(job.lease) is job:
            del s.jobs[job.lease]
            s.held_bytes -= job.size
        s.results.add(failure(job.lease, err, message))

    # --- what slot threads report (JobRunner) -------------------------------------------------

    def _on_report(self, kind: int, job: Job, payload: Any) -> None:
        """On the loop: a result (DONE), checkpoint or progress of `job`. Anything of a session
        that ended, or of a job dropped meanwhile, goes nowhere."""
        s = self.session
        current = s is not None and job.gen == s.gen and not job.cancelled
        if kind == DONE:
            if not current or payload is None:
                self.stats.dropped += 1
                return
            assert s is not None
            if s.jobs.get(job.lease) is job:
                del s.jobs[job.lease]
                s.held_bytes -= job.size
            s.results.add(payload)
        elif not current or s is None or s.jobs.get(job.lease) is not job:
            return
        elif kind == CHECKPOINT:
            s.transport.send(protocol.Checkpoint(lease=job.lease, data=payload))
        elif kind == PROGRESS:
            s.progress[job.lease] = payload
            if s.progress_handle is None:
                s.progress_handle = asyncio.get_running_loop().call_later(
                    PROGRESS_FLUSH, self._send_progress, s
                )

    def _reported(self) -> None:
        s = self.session
        if s is not None:
            self._jobs_changed(s)
        elif self._changed is not None:
            self._changed.set()

    # --- results and wants ---------------------------------------------------------------------

    def _results_sent(self, ok: int, failed: int) -> None:
        self.stats.ok += ok
        self.stats.failed += failed
        if (
            self.options.max_tasks is not None
            and self.stats.sent >= self.options.max_tasks
            and not self.stopping
        ):
            self.request_stop(f"{self.stats.sent} results sent (--max-tasks)")

    def _want(self, s: Session) -> int:
        """How many more tasks we would take now (0 while stopping)."""
        if self.stopping or s.closed:
            return 0
        if s.held_bytes >= MAX_HELD_BYTES:
            return 0
        if s.low_water and len(s.jobs) > s.low_water:
            # HTTP: a want is a request the server may hold for 10 s, judging our hands as
            # they were when it arrived; asking while we still hold plenty gets such a hold
            # (the server has filled us to its target) instead of tasks. So ask once half of
            # what the server last topped us up to is used: then it has room to fill at once.
            return 0
        room = self.max_in_hand - len(s.jobs)
        if self.options.max_tasks is not None:
            # Never lease more than the remaining budget: exactly N tasks, none left to release.
            budget = self.options.max_tasks - self.stats.sent - len(s.results) - len(s.jobs)
            room = min(room, budget)
        return max(0, min(room, s.max_batch))

    def _ask(self, s: Session) -> None:
        want = self._want(s)
        if want > 0:
            s.transport.send(protocol.Want(n=want))

    def _send_progress(self, s: Session) -> None:
        s.progress_handle = None
        if s.closed:
            return
        progress = {lease: p for lease, p in s.progress.items() if lease in s.jobs}
        s.progress.clear()
        if progress:
            s.transport.send(protocol.Progress(p=progress))

    def _jobs_changed(self, s: Session) -> None:
        if self._changed is not None:
            self._changed.set()

    # --- ending sessions and stopping ----------------------------------------------------------

    def _end_session(self, s: Session) -> None:
        """The connection is gone: the server has released our leases, so drop everything of
        this session (its results too: sending them to a new session would be refused)."""
        if s.closed:
            return
        s.closed = True
        if self.session is s:
            self.session = None
        if s.progress_handle is not None:
            s.progress_handle.cancel()
        for task in s.preparing.values():
            task.cancel()
        for job in s.jobs.values():
            self.runner.drop(job)
        unsent = s.results.close()
        if s.jobs or unsent:
            log.info(
                "dropped %d task(s) in hand and %d unsent result(s) of session %s",
                len(s.jobs),
                unsent,
                s.id,
            )
        self.stats.dropped += unsent
        s.jobs.clear()
        s.held_bytes = 0
        s.waiting.clear()
        if s.shutdown is not None and s.shutdown is not asyncio.current_task():
            s.shutdown.cancel()
        if self._changed is not None:
            self._changed.set()

    def request_stop(self, reason: str) -> None:
        """Stop taking work and shut down gracefully (see _shutdown). Idempotent."""
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping: %s", reason)
        if self._stop_event is not None:
            self._stop_event.set()
        if self.session is not None:
            self._begin_shutdown(self.session)

    def _begin_shutdown(self, s: Session) -> None:
        if s.shutdown is None and not s.closed:
            s.shutdown = asyncio.get_running_loop().create_task(self._shutdown(s))

    async def _shutdown(self, s: Session) -> None:
        """Release what has not started, let running tasks finish (up to the grace period),
        release the rest, send the last results and bye, and wait for the server's bye."""
        try:
            await self._wind_down(s)
        except asyncio.CancelledError:
            raise  # the session ended first: nothing left to do
        except Exception:
            # Whatever went wrong, do not leave the process hanging on a half-closed session.
            log.exception("graceful shutdown failed; closing the connection")
            await s.transport.close()

    async def _wind_down(self, s: Session) -> None:
        assert self._changed is not None
        released = []
        for lease, job in list(s.jobs.items()):
            if job.future is None or self.runner.take_back(job):
                job.cancelled = True
                released.append(lease)
                del s.jobs[lease]
                s.held_bytes -= job.size
        if released:
            s.transport.send(protocol.Release(leases=released))
            log.info("released %d task(s) not started yet", len(released))
        deadline = time.monotonic() + self.options.grace
        if s.jobs:
            log.info("waiting up to %g s for %d running task(s)", self.options.grace, len(s.jobs))
        while s.jobs and not s.closed:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        if s.closed:
            return
        if s.jobs:
            leases = list(s.jobs)
            for job in s.jobs.values():
                self.runner.drop(job)
            s.jobs.clear()
            s.held_bytes = 0
            s.transport.send(protocol.Release(leases=leases))
            log.info("released %d task(s) still running after the grace period", len(leases))
        s.results.flush(force=True)
        s.transport.send(protocol.Bye())
        # The server answers bye and closes; _serve's receive loop then ends the session
        # (which cancels this task).
        await asyncio.sleep(BYE_WAIT)
        log.warning("no goodbye from the server; closing")
        await s.transport.close()

    def threads_busy(self) -> bool:
        """True if a slot thread is still inside a kernel after run() returned (a kernel
        that ignored its cancel event): the caller should exit with os._exit, since the
        interpreter would otherwise wait for that thread at exit."""
        return self.runner.running > 0

    # --- signals, statistics, idleness ---------------------------------------------------------

    def _install_signals(self) -> None:
        assert self._loop is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signals(self) -> None:
        if self._loop is None:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: exiting now", signal.Signals(sig).name)
            logging.shutdown()
            os._exit(128 + sig)
        log.info(
            "%s received: finishing running tasks (again to exit now)", signal.Signals(sig).name
        )
        self.request_stop(signal.Signals(sig).name)

    async def _stats_loop(self) -> None:
        last_sent, last_t = self.stats.sent, time.monotonic()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            now = time.monotonic()
            sent = self.stats.sent
            s = self.session
            held = len(s.jobs) if s is not None else 0
            if sent != last_sent or held:
                log.info(
                    "%d task(s) done, %d failed; %.1f results/s over the last %.0f s; %d in hand",
                    self.stats.ok,
                    self.stats.failed,
                    (sent - last_sent) / (now - last_t),
                    now - last_t,
                    held,
                )
            last_sent, last_t = sent, now

    def busy(self) -> bool:
        s = self.session
        return self.runner.running > 0 or (s is not None and bool(s.jobs or s.results))

    async def _idle_loop(self, seconds: float) -> None:
        """--exit-when-idle: stop after `seconds` with nothing in hand (connected or not)."""
        while not self.stopping:
            await asyncio.sleep(min(0.2, seconds / 4) if seconds > 0 else 0.05)
            now = time.monotonic()
            if self.busy():
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since >= seconds:
                self.request_stop(f"idle for {seconds:g} s (--exit-when-idle)")
