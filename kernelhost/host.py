"""The wasmtime host: compile kernels once, run them many times under hard limits.

One KernelHost per process is the normal use (default_host()). Per process it lazily creates
one Engine, one Linker (WASI preview 1 plus the `ccgsc` functions) and one ticker thread; every
compiled kernel keeps its Module and InstancePre, so a run is only: new Store, instantiate,
call `_start`. run() is thread-safe: the native worker runs one thread per core on one host,
and wasmtime runs them in parallel (ctypes releases the GIL while wasm executes).

How limits are enforced (see Limits for the numbers):

- Time: the engine uses epoch interruption. The ticker increments the epoch every tick_s
  (while any run is in flight; it sleeps otherwise), and every Store gets a deadline of one
  tick with a callback that runs on the kernel's own thread: it stops the run when its wall
  time is up, its output was too large, or its cancel event is set, and otherwise grants one
  more tick. So a run overshoots its timeout by about one tick at most.
- Memory: Store limits cap linear memory (and the kernel's declared maximum caps it too);
  memory.grow fails beyond it. A run that then fails (trap or non-zero exit) after growing
  its memory close to the cap is reported as out_of_memory (see _oom_margin).
- Output: see streams.py (stdout is sealed and the run stopped; stderr is trimmed in place).
- Blocking: WASI's poll_oneoff is the one preview 1 call that can block the thread (sleep),
  where no epoch check can reach it; the contract makes it unsupported, so it answers ENOTSUP
  at once. Nothing else a kernel can reach blocks: stdio are regular files, sockets do not
  exist, /ccgsc is a read-only directory of regular files.
- No network, no filesystem beyond /ccgsc, no inherited environment or arguments.

Fork safety (Celery prefork): nothing wasmtime-related is created before first use, and the
per-process state is keyed by os.getpid(); a child never touches its parent's Engine. wasmtime
keeps two process-global thread pools a child cannot inherit (see _compiled_here below): a
child compiles single-threaded, and a child of a process that already *ran* kernels refuses to
run any with a RuntimeError instead of hanging. Parents that only import, construct a
KernelHost or compile are fine.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
import importlib.metadata
import itertools
import logging
import math
import os
import platform
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi  # the epoch-deadline callback is not wrapped by wasmtime-py 50

from . import wasmbin
from .checks import (
    check_no_threads,
    compile_module,
    describe_module,
    mib,
    unsupported_import_reason,
)
from .contract import (
    CCGSC_MODULE,
    GUEST_DIR,
    STDERR_TAIL_BYTES,
    WASI_ENOTSUP,
    WASI_MODULE,
    WASM32_MAX_MEMORY,
    WASM_PAGE,
    Admitted,
    ErrorKind,
    KernelRejected,
    Limits,
    MiB,
    ModuleInfo,
    RunResult,
)
from .files import HostFiles
from .streams import Stream

log = logging.getLogger(__name__)

DEFAULT_LIMITS = Limits()
#: on_progress is called at most this often (the latest value wins; the last one is delivered
#: when the run ends), so a kernel may report progress in its inner loop.
PROGRESS_INTERVAL_S = 0.05
#: Table elements a store may hold (8 bytes each): bounds host memory outside linear memory.
MAX_TABLE_ELEMENTS = 1 << 20

ProgressCallback = Callable[[float], None]
CheckpointCallback = Callable[[bytes], None]

# --- engine configuration ---------------------------------------------------------------------

# Every setting that changes generated code goes here: it is part of the on-disk cache key.
_ENGINE_SETTINGS: tuple[tuple[str, Any], ...] = (
    ("epoch_interruption", True),
    ("cranelift_opt_level", "speed"),
    ("wasm_threads", False),  # a WASI preview 1 command has no threads; no shared memories
)


# wasmtime compiles functions in parallel on a rayon thread pool that is global to the process
# and started by the first compilation. A forked child inherits the pool's state but not its
# threads, so compiling there would wait forever: a child of a process that compiled anything
# compiles on its own thread instead (the generated code is the same).
_compiled_here = False
_compile_threads_lost = False
# Likewise WASI I/O goes through a process-global tokio runtime started by the first run. In a
# forked child its threads are gone and the first read (stdin, even from /dev/null) waits
# forever, so a child of a process that ran kernels refuses to run any (RuntimeError) rather
# than hang. Celery's prefork master never runs kernels, so its children are fine.
_ran_here = False
_io_threads_lost = False


def _note_compiling() -> None:
    global _compiled_here
    _compiled_here = True


def _note_running() -> None:
    global _ran_here
    if _io_threads_lost:
        raise RuntimeError(
            "kernelhost cannot run kernels in a process forked from one that already ran "
            "kernels (wasmtime's WASI I/O threads do not survive fork); run kernels only "
            "after forking, or in a fresh process"
        )
    _ran_here = True


def _engine_config() -> wasmtime.Config:
    config = wasmtime.Config()
    for name, value in _ENGINE_SETTINGS:
        setattr(config, name, value)
    config.parallel_compilation = not _compile_threads_lost
    return config


def _wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


WASMTIME_VERSION = _wasmtime_version()
#: Directory name for compiled modules: they only load into the same wasmtime build and config.
_SETTINGS_DIGEST = hashlib.sha256(repr((_ENGINE_SETTINGS, platform.machine())).encode())
ENGINE_FINGERPRINT = f"{WASMTIME_VERSION}-{_SETTINGS_DIGEST.hexdigest()[:16]}"

# --- per-run state and the callbacks wasmtime calls -------------------------------------------


class _Run:
    """Book-keeping of one run in flight, shared by its thread, the ticker and the callbacks."""

    def __init__(
        self,
        run_id: int,
        limits: Limits,
        stdout: Stream,
        stderr: Stream,
        on_progress: ProgressCallback | None,
        on_checkpoint: CheckpointCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        self.id = run_id
        self.limits = limits
        self.stdout = stdout
        self.stderr = stderr
        self.on_progress = on_progress
        self.on_checkpoint = on_checkpoint
        self.cancel = cancel
        self.deadline = math.inf
        # Set once, by whichever thread sees the reason first; the deadline callback acts on it.
        self.stop: ErrorKind | None = None
        self.stop_message = ""
        self.checkpoint: bytes | None = None
        self._progress_at = -math.inf
        self._progress_pending: float | None = None

    def halt(self, kind: ErrorKind, message: str) -> None:
        if self.stop is None:
            self.stop_message = message
            self.stop = kind

    def should_stop(self) -> bool:
        """Checked on the kernel's thread every tick (from the epoch deadline callback)."""
        if self.stop is None:
            if self.cancel is not None and self.cancel.is_set():
                self.halt(ErrorKind.CANCELLED, "The run was cancelled.")
            elif time.monotonic() >= self.deadline:
                self.halt(
                    ErrorKind.TIMEOUT,
                    f"The kernel ran longer than its time limit of {self.limits.timeout_s:g} s.",
                )
        if (
            self.stop is None
            and self._progress_pending is not None
            and time.monotonic() - self._progress_at >= PROGRESS_INTERVAL_S
        ):
            self.flush_progress()
        return self.stop is not None

    def police(self) -> None:
        """Called by the ticker (under the state lock, so the streams are still open)."""
        limits = self.limits
        if self.stop is None and self.stdout.size() > limits.output_bytes:
            self.stdout.seal()
            self.halt(ErrorKind.OUTPUT_TOO_LARGE, _too_large_message(limits.output_bytes))
        stderr = self.stderr
        if (
            stderr.resident() > limits.stderr_bytes
            and not stderr.sealed
            and not stderr.discard_before_tail(STDERR_TAIL_BYTES)
            # Cannot trim in place here: stop the growth instead (memfd) or else the run.
            and not stderr.seal()
        ):
            self.halt(
                ErrorKind.OUTPUT_TOO_LARGE,
                f"The kernel wrote more than {limits.stderr_bytes} bytes to stderr.",
            )

    def progress(self, value: float) -> None:
        if self.on_progress is None or math.isnan(value):
            return
        self._progress_pending = min(1.0, max(0.0, value))
        if time.monotonic() - self._progress_at >= PROGRESS_INTERVAL_S:
            self.flush_progress()

    def flush_progress(self) -> None:
        value, self._progress_pending = self._progress_pending, None
        if value is None or self.on_progress is None:
            return
        self._progress_at = time.monotonic()
        try:
            self.on_progress(value)
        except Exception:
            log.exception("on_progress callback failed")

    def save_checkpoint(self, data: bytes) -> None:
        self.checkpoint = data
        if self.on_checkpoint is not None:
            try:
                self.on_checkpoint(data)
            except Exception:
                log.exception("on_checkpoint callback failed")


def _too_large_message(cap: int) -> str:
    return f"The kernel wrote more than {cap} bytes to stdout (the output limit)."


# The run a host function call belongs to. The Linker (and so the host functions) is shared by
# all runs and threads; a run executes entirely on the thread that called run().
_current = threading.local()
# Runs by id, for the epoch deadline callback which gets the id as its data pointer.
_RUNS: dict[int, _Run] = {}
_run_ids = itertools.count(1)


def _current_run() -> _Run | None:
    return getattr(_current, "run", None)


# Host functions must never raise: wasmtime-py turns an exception into a trap *and* parks it in
# a process-global slot that the next wasm call on any thread re-raises, so one run's bug could
# surface in another thread's run. Everything is caught and logged instead.


def _host_progress(value: float) -> None:
    """ccgsc.progress(f64) -> (): report progress, a fraction in [0, 1] (clamped; NaN ignored)."""
    try:
        run = _current_run()
        if run is not None:
            run.progress(value)
    except Exception:
        log.exception("ccgsc.progress failed")


def _host_checkpoint(caller: wasmtime.Caller, ptr: int, length: int) -> int:
    """ccgsc.checkpoint(i32 ptr, i32 len) -> i32: 0 accepted, -1 refused (len negative or above
    the cap, or the range outside the kernel's memory)."""
    try:
        run = _current_run()
        if run is None or length < 0 or length > run.limits.checkpoint_bytes:
            return -1
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return -1
        start = ptr & 0xFFFFFFFF  # i32 arrives signed; guest pointers are unsigned
        if start + length > memory.data_len(caller):
            return -1
        run.save_checkpoint(bytes(memory.read(caller, start, start + length)))
        return 0
    except Exception:
        log.exception("ccgsc.checkpoint failed")
        return -1


def _host_poll_oneoff(in_ptr: int, out_ptr: int, nsubscriptions: int, nevents_ptr: int) -> int:
    """wasi poll_oneoff: unsupported by the contract (wasmtime's would block the thread out of
    reach of the time limit, and browsers cannot block)."""
    return WASI_ENOTSUP


_UPDATE_DEADLINE_CONTINUE = 0


def _error_pointer(message: bytes) -> int:
    """A new wasmtime_error_t, owned by wasmtime once returned from the callback."""
    error = _ffi.wasmtime_error_new(message)
    return ctypes.cast(error, ctypes.c_void_p).value or 0


def _on_deadline(context: Any, data: int | None, delta: Any, kind: Any) -> int:
    """Epoch deadline callback: runs on the kernel's thread each time the epoch passes the
    store's deadline. Returning an error stops the kernel; otherwise one more tick is granted.
    It must never raise (ctypes would print and return garbage), so everything is caught."""
    try:
        run = _RUNS.get(data or 0)
        if run is None or run.should_stop():
            return _error_pointer(b"ccgsc: run stopped by the host")
        delta[0] = 1
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0
    except BaseException:
        return _error_pointer(b"ccgsc: deadline check failed")


def _no_finalizer(data: int | None) -> None:
    return None


# wasmtime-py 50 binds wasmtime_store_epoch_deadline_callback but does not wrap it; take the
# ctypes prototypes from its bindings. Without them only the time limit is enforced.
try:
    from wasmtime import _bindings

    _set_deadline_callback: Any = _bindings._wasmtime_store_epoch_deadline_callback
    _ON_DEADLINE: Any = _set_deadline_callback.argtypes[1](_on_deadline)
    _NO_FINALIZER: Any = _set_deadline_callback.argtypes[3](_no_finalizer)
except (ImportError, AttributeError, IndexError, TypeError):  # pragma: no cover
    _set_deadline_callback = None


def _install_deadline(store: wasmtime.Store, run: _Run, tick_s: float) -> None:
    if _set_deadline_callback is not None:
        store.set_epoch_deadline(1)
        _set_deadline_callback(store.ptr(), _ON_DEADLINE, run.id, _NO_FINALIZER)
    else:  # pragma: no cover
        # Only the time limit, as an INTERRUPT trap; floods stop when their time is up.
        store.set_epoch_deadline(math.ceil(run.limits.timeout_s / tick_s) + 1)


# --- per-process engine state -------------------------------------------------------------------


class Kernel:
    """A compiled module that passed the contract checks. Get one from KernelHost.compile().

    It is bound to the process that compiled it; run() transparently recompiles (from cache)
    a Kernel created before a fork.
    """

    __slots__ = ("_module", "_pre", "_state", "_wasm", "info", "sha256")

    def __init__(
        self,
        info: ModuleInfo,
        module: wasmtime.Module,
        pre: wasmtime.InstancePre,
        state: _EngineState,
        wasm: bytes,
    ) -> None:
        self.sha256 = info.sha256
        self.info = info
        self._module = module
        self._pre = pre
        self._state = state
        self._wasm = wasm

    def __repr__(self) -> str:
        return f"<Kernel {self.sha256[:12]} {self.info.size} bytes>"


class _EngineState:
    """Engine, Linker, ticker and compiled kernels of one process."""

    def __init__(self, tick_s: float, max_kernels: int) -> None:
        self.pid = os.getpid()
        self.tick_s = tick_s
        self.engine = wasmtime.Engine(_engine_config())
        self.linker = self._make_linker()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.runs: dict[int, _Run] = {}
        self.kernels: collections.OrderedDict[str, Kernel] = collections.OrderedDict()
        self.max_kernels = max_kernels
        self.compile_lock = threading.Lock()
        threading.Thread(
            target=_ticker, args=(weakref.ref(self),), name="kernelhost-ticker", daemon=True
        ).start()

    def _make_linker(self) -> wasmtime.Linker:
        i32, f64 = wasmtime.ValType.i32(), wasmtime.ValType.f64()
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        linker.allow_shadowing = True  # to replace poll_oneoff
        linker.define_func(
            WASI_MODULE, "poll_oneoff", wasmtime.FuncType([i32] * 4, [i32]), _host_poll_oneoff
        )
        linker.allow_shadowing = False
        linker.define_func(CCGSC_MODULE, "progress", wasmtime.FuncType([f64], []), _host_progress)
        linker.define_func(
            CCGSC_MODULE,
            "checkpoint",
            wasmtime.FuncType([i32, i32], [i32]),
            _host_checkpoint,
            access_caller=True,
        )
        return linker

    def cached(self, sha256: str) -> Kernel | None:
        with self.lock:
            kernel = self.kernels.get(sha256)
            if kernel is not None:
                self.kernels.move_to_end(sha256)
            return kernel

    def remember(self, kernel: Kernel) -> None:
        with self.lock:
            self.kernels[kernel.sha256] = kernel
            self.kernels.move_to_end(kernel.sha256)
            while len(self.kernels) > self.max_kernels:
                self.kernels.popitem(last=False)

    def register(self, run: _Run) -> None:
        with self.lock:
            self.runs[run.id] = run
            _RUNS[run.id] = run
            self.wake.notify()

    def unregister(self, run: _Run) -> None:
        # Under the lock the ticker polices with, so it never touches a closed descriptor.
        with self.lock:
            self.runs.pop(run.id, None)
            _RUNS.pop(run.id, None)


def _ticker(ref: weakref.ref[_EngineState]) -> None:
    """Advance the epoch and police output sizes while runs are in flight; idle otherwise.
    Holds its state only weakly so a discarded KernelHost's thread ends."""
    while True:
        state = ref()
        if state is None or state.pid != os.getpid():
            return
        with state.lock:
            if not state.runs:
                state.wake.wait(timeout=1.0)
                continue
            state.engine.increment_epoch()
            for run in state.runs.values():
                try:
                    run.police()
                except OSError:
                    log.exception("policing run %s failed", run.id)
        tick_s = state.tick_s
        del state
        time.sleep(tick_s)


# --- the host -----------------------------------------------------------------------------------


@dataclass
class CacheStats:
    """Counters of compile(): `compiled` with cranelift, `loaded` from the disk cache, `hits`
    served from memory. Per process (a forked child starts again from zero)."""

    compiled: int = 0
    loaded: int = 0
    hits: int = 0


_HOSTS: weakref.WeakSet[KernelHost] = weakref.WeakSet()
# Engine states inherited through fork: never freed in the child (their destructors could
# wait on locks held by threads that do not exist there).
_INHERITED: list[object] = []


class KernelHost:
    """Compiles and runs kernels. See the module docstring for how limits are enforced.

    - cache_dir: the host's private directory (compiled modules, static data); created 0700.
      None: a temporary directory removed at exit, and no compiled modules on disk.
    - tick_s: epoch tick; the precision of time limits and of output policing.
    - memory_cap: the largest memory maximum compile() accepts (upload-time caps are checked
      by inspect() with the caller's own cap).
    - max_kernels: compiled kernels kept in memory (least recently used are dropped).
    - cache_max_bytes: the most disk the compiled modules and static data in cache_dir may
      take (least recently used are removed past it); None: no cap.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        tick_s: float = 0.01,
        memory_cap: int = WASM32_MAX_MEMORY,
        max_kernels: int = 64,
        cache_max_bytes: int | None = None,
    ) -> None:
        if not tick_s > 0:
            raise ValueError("tick_s must be positive")
        self.tick_s = tick_s
        self.memory_cap = memory_cap
        self.max_kernels = max_kernels
        self.files = HostFiles(cache_dir, ENGINE_FINGERPRINT, max_bytes=cache_max_bytes)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._state_obj: _EngineState | None = None
        _HOSTS.add(self)

    def _count(self, what: str) -> None:
        with self._stats_lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)

    @property
    def cache_dir(self) -> Path:
        return self.files.root

    def _state(self) -> _EngineState:
        state = self._state_obj
        if state is not None and state.pid == os.getpid():
            return state
        with self._lock:
            state = self._state_obj
            if state is None or state.pid != os.getpid():
                state = self._state_obj = _EngineState(self.tick_s, self.max_kernels)
            return state

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.files.after_fork_in_child()
        if self._state_obj is not None:
            _INHERITED.append(self._state_obj)
            self._state_obj = None
        self.stats = CacheStats()

    # --- compile --------------------------------------------------------------------------------

    def compile(self, wasm: bytes, sha256: str | None = None) -> Kernel:
        """Compile and check `wasm`, or return the cached Kernel for it.

        Cached in memory (LRU, keyed by sha256) and on disk. A given `sha256` lets a memory hit
        skip hashing; on a miss it is verified (ValueError if it does not match).
        Raises KernelRejected when the module breaks the contract (checks.py lists the checks).
        """
        state = self._state()
        if sha256 is not None:
            kernel = state.cached(sha256.lower())
            if kernel is not None:
                self._count("hits")
                return kernel
        wasm = bytes(wasm)
        digest = hashlib.sha256(wasm).hexdigest()
        if sha256 is not None and sha256.lower() != digest:
            raise ValueError("sha256 does not match the module bytes")
        kernel = state.cached(digest)
        if kernel is not None:
            self._count("hits")
            return kernel
        with state.compile_lock:
            kernel = state.cached(digest)  # another thread may have just compiled it
            if kernel is not None:
                self._count("hits")
                return kernel
            module = self.files.load_module(state.engine, digest)
            fresh = module is None
            if module is None:
                _note_compiling()
                module = compile_module(state.engine, wasm)
            info = describe_module(
                module, sha256=digest, size=len(wasm), memory_cap=self.memory_cap
            )
            try:
                pre = state.linker.instantiate_pre(module)
            except wasmtime.WasmtimeError as exc:
                raise KernelRejected(unsupported_import_reason(str(exc))) from None
            if fresh:
                self.files.store_module(digest, module)
                self._count("compiled")
            else:
                self._count("loaded")
            kernel = Kernel(info, module, pre, state, wasm)
            state.remember(kernel)
            return kernel

    def inspect(self, wasm: bytes, *, memory_cap: int) -> ModuleInfo:
        """Validate an upload: compile() plus the platform's memory cap (bytes).
        Raises KernelRejected saying which check failed."""
        info = self.compile(wasm).info
        if info.memory_max is not None and info.memory_max > memory_cap:
            # Same sentence as describe_module() gives when the cap is checked there.
            raise KernelRejected(
                f"The module's memory maximum {mib(info.memory_max)} MiB is above the platform "
                f"cap {mib(memory_cap)} MiB."
            )
        return info

    def admit(self, wasm: bytes, *, memory_cap: int) -> Admitted:
        """Validate an upload, giving a module with no memory maximum the platform's cap.

        A module whose memories declare no maximum (Rust's default wasm32-wasi output, most
        existing WASI programs) gets `memory_cap` (bytes, rounded down to whole pages) written
        into its memory section (wasmbin.set_memory_max), so that browsers, which enforce no
        other memory limit, are bound by it too. The result holds the bytes to store and serve
        (the rewritten ones, or `wasm` itself when it already declared a maximum), their
        ModuleInfo, and the sha256 of `wasm` as uploaded (provenance).
        Raises KernelRejected saying which check failed (threads, an initial memory above the
        cap, and every check of inspect()).
        """
        wasm = bytes(wasm)
        original = hashlib.sha256(wasm).hexdigest()
        if wasm.startswith(wasmbin.WASM_HEADER):
            check_no_threads(wasm)
        cap_pages = min(memory_cap, WASM32_MAX_MEMORY) // WASM_PAGE
        try:
            undeclared = [
                m
                for m in wasmbin.memories(wasm)
                if not m.imported and m.max_pages is None and not m.is64
            ]
        except wasmbin.WasmFormatError:
            undeclared = []  # inspect() reports what wasmtime finds wrong with it
        for memory in undeclared:
            if memory.min_pages > cap_pages:
                raise KernelRejected(
                    f"The module's initial memory {mib(memory.min_pages * WASM_PAGE)} MiB is "
                    f"above the platform cap {mib(cap_pages * WASM_PAGE)} MiB."
                )
        stored = wasmbin.set_memory_max(wasm, cap_pages) if undeclared else wasm
        info = self.inspect(stored, memory_cap=memory_cap)
        return Admitted(wasm=stored, info=info, original_sha256=original)

    # --- run ------------------------------------------------------------------------------------

    def run(
        self,
        kernel: Kernel | bytes,
        *,
        stdin: bytes = b"",
        args: Sequence[str] = (),
        argv0: str = "kernel",
        env: Mapping[str, str] | None = None,
        static: bytes | None = None,
        static_sha256: str | None = None,
        checkpoint: bytes | None = None,
        limits: Limits = DEFAULT_LIMITS,
        on_progress: ProgressCallback | None = None,
        on_checkpoint: CheckpointCallback | None = None,
        stdout_file: bool = False,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Run a kernel once. Never raises for anything the kernel does: every outcome is a
        RunResult (error=None and exit_code=0 on success). Thread-safe.

        The kernel sees argv [argv0, *args], exactly `env`, `stdin` on fd 0, and a read-only
        /ccgsc holding `static` and `checkpoint` when given. `kernel` may also be raw module
        bytes (compiled through the cache; a rejected module gives error=INVALID).

        on_progress(fraction in [0, 1]) and on_checkpoint(bytes) are called on this thread
        while the kernel is paused: keep them quick. Their exceptions are logged, not raised.
        Setting `cancel` stops the run within a tick (error=CANCELLED).

        stdout_file=True spools stdout to disk instead of RAM (for generators): the result's
        stdout is b"" and stdout_stream is an open file at position 0 which the caller closes.

        Raises ValueError for bad arguments (NUL in args/env, "=" in an env name, a
        static_sha256 that does not match), OSError when the host itself runs out of
        resources (descriptors, disk), and RuntimeError in a process forked from one that
        already ran kernels (see _note_running).
        """
        if not isinstance(kernel, Kernel):
            try:
                kernel = self.compile(bytes(kernel))
            except KernelRejected as exc:
                return RunResult(None, b"", b"", ErrorKind.INVALID, exc.reason, 0.0)
        state = self._state()
        if kernel._state is not state:  # compiled before a fork, or by another host
            kernel = self.compile(kernel._wasm, kernel.sha256)
        argv = [argv0, *args]
        env_pairs = list((env or {}).items())
        _check_strings(argv, env_pairs)
        _note_running()

        files = self.files
        static_dir = files.static_dir_for(static, static_sha256) if static is not None else None
        run_dir = files.run_dir(static_dir, checkpoint) if checkpoint is not None else None
        guest_dir = run_dir or static_dir or files.empty_dir
        streams: list[Stream] = []
        store: wasmtime.Store | None = None
        run: _Run | None = None
        try:
            stdin_stream = Stream.input(stdin, files.spool_dir)
            if stdin_stream is not None:
                streams.append(stdin_stream)
            stdout = Stream.output("stdout", files.spool_dir, on_disk=stdout_file)
            streams.append(stdout)
            stderr = Stream.output("stderr", files.spool_dir)
            streams.append(stderr)

            wasi = wasmtime.WasiConfig()
            wasi.argv = argv
            wasi.env = env_pairs
            wasi.stdin_file = stdin_stream.path if stdin_stream is not None else os.devnull
            wasi.stdout_file = stdout.path
            wasi.stderr_file = stderr.path
            wasi.preopen_dir(str(guest_dir), GUEST_DIR, fs_mutable=False)
            for stream in streams:
                stream.opened()

            run = _Run(next(_run_ids), limits, stdout, stderr, on_progress, on_checkpoint, cancel)
            store = wasmtime.Store(state.engine)
            store.set_limits(
                memory_size=limits.memory_bytes,
                table_elements=MAX_TABLE_ELEMENTS,
                instances=1,
                memories=1,
            )
            store.set_wasi(wasi)
            _install_deadline(store, run, state.tick_s)
            return self._execute(state, kernel, store, run, stdout, stderr, stdout_file)
        finally:
            if run is not None:
                state.unregister(run)
            if store is not None:
                store.close()  # closes wasmtime's own descriptors now, not at some GC
            for stream in streams:
                stream.close()
            if run_dir is not None:
                files.remove_run_dir(run_dir)

    def _execute(
        self,
        state: _EngineState,
        kernel: Kernel,
        store: wasmtime.Store,
        run: _Run,
        stdout: Stream,
        stderr: Stream,
        stdout_file: bool,
    ) -> RunResult:
        memory: wasmtime.Memory | None = None
        memory_start = 0
        outcome: BaseException | None = None
        previous = _current_run()
        _current.run = run
        started = time.monotonic()
        run.deadline = started + run.limits.timeout_s
        state.register(run)
        try:
            instance = kernel._pre.instantiate(store)
            exports = instance.exports(store)
            found = exports["memory"]
            assert isinstance(found, wasmtime.Memory)  # checked by describe_module
            memory = found
            memory_start = memory.data_len(store)
            start = exports["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            outcome = exc
        finally:
            _current.run = previous
            runtime = time.monotonic() - started
            state.unregister(run)
        run.flush_progress()

        memory_end = memory.data_len(store) if memory is not None else 0
        exit_code, error, message = _classify(
            run, kernel, outcome, memory is not None, memory_start, memory_end
        )
        stdout_size = stdout.size()
        # The ticker may not have seen the last writes: the cap holds regardless. Too much
        # output wins over how the kernel ended, and has no exit code, so the outcome does not
        # depend on whether the ticker or this check noticed first.
        if stdout_size > run.limits.output_bytes and error is not ErrorKind.CANCELLED:
            exit_code, error = None, ErrorKind.OUTPUT_TOO_LARGE
            message = _too_large_message(run.limits.output_bytes)
        result = RunResult(
            exit_code=exit_code,
            stdout=b"",
            stderr_tail=stderr.tail(STDERR_TAIL_BYTES),
            error=error,
            message=message,
            runtime_s=runtime,
            checkpoint=run.checkpoint,
            stdout_size=stdout_size,
            memory_bytes=memory_end,
        )
        if stdout_file:
            result.stdout_stream = stdout.detach()
        elif error is not ErrorKind.OUTPUT_TOO_LARGE:
            result.stdout = stdout.read()
        return result


def _classify(
    run: _Run,
    kernel: Kernel,
    outcome: BaseException | None,
    instantiated: bool,
    memory_start: int,
    memory_end: int,
) -> tuple[int | None, ErrorKind | None, str]:
    """(exit_code, error, message) for how a run ended."""
    limits = run.limits
    if run.stop is not None:  # the host stopped it: that is the cause, whatever wasm saw
        return None, run.stop, run.stop_message
    if outcome is None:
        return 0, None, ""
    exit_code: int | None = None
    if isinstance(outcome, wasmtime.ExitTrap):
        if outcome.code == 0:
            return 0, None, ""
        exit_code = outcome.code
        error, message = ErrorKind.EXIT, f"The kernel exited with status {exit_code}."
    elif isinstance(outcome, wasmtime.Trap) and outcome.trap_code == wasmtime.TrapCode.INTERRUPT:
        # Only without the deadline callback (see _install_deadline).
        message = f"The kernel ran longer than its time limit of {limits.timeout_s:g} s."
        return None, ErrorKind.TIMEOUT, message
    elif not instantiated and kernel.info.memory_min > limits.memory_bytes:
        message = (
            f"The kernel's initial memory ({kernel.info.memory_min / MiB:g} MiB) is above the "
            f"memory limit of {limits.memory_bytes / MiB:g} MiB."
        )
        return None, ErrorKind.OUT_OF_MEMORY, message
    else:
        cause = _root_cause(str(outcome))
        if "invalid exit status" in cause:
            # wasmtime refuses proc_exit(>= 126) with this error instead of an exit.
            error = ErrorKind.EXIT
            message = (
                "The kernel called proc_exit with a status outside 0..125, which WASI hosts refuse."
            )
        else:
            error = ErrorKind.TRAP
            message = f"The kernel trapped: {cause}{_where(outcome)}"
    cap = min(limits.memory_bytes, kernel.info.memory_max or WASM32_MAX_MEMORY)
    if memory_end > memory_start and memory_end >= cap - _oom_margin(cap):
        message = (
            f"The kernel ran out of memory: it grew its memory to {memory_end / MiB:.1f} MiB of "
            f"the {cap / MiB:g} MiB limit and then failed. ({message})"
        )
        error = ErrorKind.OUT_OF_MEMORY
    return exit_code, error, message


def _oom_margin(cap: int) -> int:
    """How close to the cap a failed run's memory must have grown to count as out of memory.

    wasmtime does not tell whether a memory.grow was refused, so this is inferred. One page is
    not enough: allocators grow in large steps (wasi-libc's malloc asking for a 1 MiB block
    can fail with 1.9 MiB still free under a 16 MiB cap), so an eighth of the cap is allowed.
    Only runs that *grew* their memory qualify, so a kernel with a fixed-size memory that traps
    is still a trap.
    """
    return max(WASM_PAGE, cap // 8)


def _root_cause(message: str) -> str:
    """wasmtime: "error while executing at wasm backtrace: ...\\n\\nCaused by:\\n    cause"."""
    text = message.split("Caused by:")[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return message.strip()
    cause = lines[-1]
    # Nested causes are numbered ("0: In func ...", "1: Pointer not aligned"): keep the last.
    head, sep, rest = cause.partition(": ")
    return rest if sep and head.isdigit() else cause


def _where(outcome: BaseException) -> str:
    if isinstance(outcome, wasmtime.Trap):
        with contextlib.suppress(Exception):
            for frame in outcome.frames:
                if frame.func_name:
                    return f" (in {frame.func_name})"
    return ""


def _check_strings(argv: Sequence[str], env: Sequence[tuple[str, str]]) -> None:
    for arg in argv:
        if "\0" in arg:
            raise ValueError("arguments must not contain NUL")
    for name, value in env:
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"invalid environment variable name or value: {name!r}")


# --- the process's host -------------------------------------------------------------------------

_default_host: KernelHost | None = None
_default_lock = threading.Lock()


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA")
    return (Path(base) if base else Path.home() / ".cache") / "ccgsc" / "modules"


def default_host() -> KernelHost:
    """The process's KernelHost (created on first use; safe across fork).

    Its cache directory is $MODULE_CACHE_DIR, else the user's cache (~/.cache/ccgsc/modules).
    Call set_default_host() first to choose otherwise.
    """
    global _default_host
    host = _default_host
    if host is None:
        with _default_lock:
            if _default_host is None:
                cache = os.environ.get("MODULE_CACHE_DIR") or _user_cache_dir()
                _default_host = KernelHost(cache_dir=cache)
            host = _default_host
    return host


def set_default_host(host: KernelHost) -> None:
    """Make `host` what default_host() returns (e.g. from Django settings at startup)."""
    global _default_host
    with _default_lock:
        _default_host = host


def admit_module(wasm: bytes, *, memory_cap: int) -> Admitted:
    """KernelHost.admit() on the process's host: validate an upload, writing the platform's
    memory cap into a module that declares no maximum."""
    return default_host().admit(wasm, memory_cap=memory_cap)


def inspect_module(wasm: bytes, *, memory_cap: int) -> ModuleInfo:
    """Validate an uploaded module against the kernel contract and the platform memory cap
    (bytes). Raises KernelRejected whose `reason` says which check failed."""
    return default_host().inspect(wasm, memory_cap=memory_cap)


def _reinit_after_fork() -> None:
    global _default_lock, _compile_threads_lost, _io_threads_lost
    _default_lock = threading.Lock()
    _compile_threads_lost = _compile_threads_lost or _compiled_here
    _io_threads_lost = _io_threads_lost or _ran_here
    _RUNS.clear()
    for host in list(_HOSTS):
        host._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
