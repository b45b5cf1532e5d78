"""The host side of the kernel contract: limits, results, error kinds and module facts.

Everything here is plain data with no wasmtime dependency, so that code which only *describes*
runs (the protocol, the API, the browser conformance runner) can import it cheaply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import BinaryIO

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Size of a WebAssembly page: linear memory grows in these steps.
WASM_PAGE = 64 * KiB
#: The largest memory a wasm32 module can address (65536 pages).
WASM32_MAX_MEMORY = 4 * GiB

#: Guest directory holding the read-only files the host provides.
GUEST_DIR = "/ccgsc"
#: File names inside GUEST_DIR.
STATIC_NAME = "static"
CHECKPOINT_NAME = "checkpoint"

#: Import modules a kernel may use. Anything else makes the module invalid.
WASI_MODULE = "wasi_snapshot_preview1"
CCGSC_MODULE = "ccgsc"

#: How much of stderr a result keeps (the end of it, where the error message usually is).
STDERR_TAIL_BYTES = 4 * KiB
#: proc_exit statuses a kernel may use; wasmtime refuses anything else (see RunResult.exit_code).
MAX_EXIT_CODE = 125

#: WASI errno answered by calls the contract leaves unsupported (poll_oneoff): ENOTSUP.
WASI_ENOTSUP = 58


class ErrorKind(enum.StrEnum):
    """Why a run did not succeed. The values are stable strings stored in results."""

    TIMEOUT = "timeout"  # wall-clock limit reached (Limits.timeout_s)
    OUT_OF_MEMORY = "out_of_memory"  # failed with linear memory at its limit
    OUTPUT_TOO_LARGE = "output_too_large"  # stdout passed Limits.output_bytes
    TRAP = "trap"  # a wasm trap (unreachable, out-of-bounds access, ...) or a bad host call
    EXIT = "exit"  # proc_exit with a non-zero status (or one outside 0..125)
    INVALID = "invalid"  # the module was rejected before running (see KernelRejected)
    CANCELLED = "cancelled"  # the caller's cancel event was set


@dataclass(frozen=True)
class Limits:
    """Hard limits for one run. All are enforced by the host, none is advisory.

    - timeout_s: wall time from instantiation; checked every host tick (~10 ms), so a run
      overshoots by at most about one tick.
    - memory_bytes: cap on the kernel's linear memory (memory.grow fails beyond it).
    - output_bytes: cap on stdout; past it the run is stopped as output_too_large.
    - stderr_bytes: RAM bound for stderr; past it older stderr is discarded (never an error),
      the last STDERR_TAIL_BYTES are always kept.
    - checkpoint_bytes: the largest checkpoint ccgsc.checkpoint accepts (larger: returns -1).
    """

    timeout_s: float = 60.0
    memory_bytes: int = 256 * MiB
    output_bytes: int = 4 * MiB
    stderr_bytes: int = 1 * MiB
    checkpoint_bytes: int = 4 * MiB

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        for name in ("memory_bytes", "output_bytes", "stderr_bytes", "checkpoint_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass
class RunResult:
    """The outcome of one run. run() returns one for every kernel behaviour, it never raises.

    - exit_code: the proc_exit status, 0 when _start returned normally, None when there is no
      status: trap, any limit hit (also output_too_large, even if the kernel then exited),
      cancelled, or a proc_exit status outside 0..125 (which wasmtime refuses).
    - stdout: everything the kernel wrote to stdout; b"" when the output was too large or when
      stdout_file=True was asked (then read stdout_stream).
    - stderr_tail: the last STDERR_TAIL_BYTES of stderr.
    - error: None on success, else why it failed; message says it in a sentence.
    - runtime_s: wall time of instantiation plus _start.
    - stdout_stream: only with stdout_file=True (also on failure; None only when the module
      was invalid and never ran): an open binary file at position 0 holding stdout. The
      caller reads it in chunks and must close it.
    - checkpoint: the last checkpoint the kernel saved during this run, if any.
    - stdout_size: how many bytes the kernel got written to stdout (may exceed the cap a little).
    - memory_bytes: the size of the kernel's linear memory when it stopped.
    """

    exit_code: int | None
    stdout: bytes
    stderr_tail: bytes
    error: ErrorKind | None
    message: str
    runtime_s: float
    stdout_stream: BinaryIO | None = None
    checkpoint: bytes | None = None
    stdout_size: int = 0
    memory_bytes: int = 0

    @property
    def ok(self) -> bool:
        """True when the kernel exited with 0 and no limit was hit."""
        return self.error is None and self.exit_code == 0


@dataclass(frozen=True)
class ModuleInfo:
    """Facts about an accepted module. Memory sizes are in bytes (pages * 64 KiB).

    imports are "module.name" strings, exports the export names, both in module order.
    """

    sha256: str
    size: int
    memory_min: int
    memory_max: int | None
    imports: tuple[str, ...] = field(default=())
    exports: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Admitted:
    """An upload that passed the checks (KernelHost.admit).

    wasm: the bytes to store and serve: the upload, or the upload with the platform's memory
    cap written into it when it declared no maximum. info: facts about `wasm` (its sha256
    included). original_sha256: the sha256 of the bytes as uploaded (provenance).
    """

    wasm: bytes
    info: ModuleInfo
    original_sha256: str

    @property
    def rewritten(self) -> bool:
        """True when the platform changed the module (set its memory maximum)."""
        return self.info.sha256 != self.original_sha256


class KernelRejected(ValueError):
    """The module breaks the kernel contract. `reason` is one sentence naming the failed check,
    fit to show to the uploader as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
