"""kernelhost: the one wasmtime host for CCGSC kernels (no Django in here).

Used by the server's Celery jobs (generators, verifiers, reducers), the native worker (threads
sharing one host) and the `ccgsc kernel run` command. The kernel contract it implements:

- a WASI preview 1 command module exporting `_start` and `memory`, whose memory declares a
  maximum within the platform cap (an upload that declares none gets the cap written into it:
  KernelHost.admit); no threads; imports only from `wasi_snapshot_preview1` and the optional
  `ccgsc.progress(f64) -> ()` and `ccgsc.checkpoint(i32 ptr, i32 len) -> i32`;
- stdin is the task input, stdout the result, exit status 0 success and 1..125 failure
  (a proc_exit status outside 0..125 is refused by wasmtime: reported as EXIT with no code);
- argv is [argv0, *args] (argv0 "kernel", "generator" for generators), env exactly as given;
- a read-only directory /ccgsc holds `static` (the campaign's static data) and `checkpoint`
  (when resuming), when given;
- stdio are not terminals (WASI filetype unknown) and unsupported calls answer a WASI errno:
  poll_oneoff answers ENOTSUP (58) always, sockets ENOTSOCK (57) / EBADF (8), the CPU-time
  clocks EBADF (8).

Typical use::

    host = default_host()
    kernel = host.compile(wasm_bytes)            # cached by sha256, in memory and on disk
    result = host.run(kernel, stdin=b"0 100", limits=Limits(timeout_s=5))
    if result.ok: use(result.stdout)
    else: report(result.error, result.message, result.stderr_tail)
"""

from . import wasmbin
from .contract import (
    GUEST_DIR,
    STDERR_TAIL_BYTES,
    Admitted,
    ErrorKind,
    KernelRejected,
    Limits,
    ModuleInfo,
    RunResult,
)
from .host import (
    CacheStats,
    Kernel,
    KernelHost,
    admit_module,
    default_host,
    inspect_module,
    set_default_host,
)

__all__ = [
    "GUEST_DIR",
    "STDERR_TAIL_BYTES",
    "Admitted",
    "CacheStats",
    "ErrorKind",
    "Kernel",
    "KernelHost",
    "KernelRejected",
    "Limits",
    "ModuleInfo",
    "RunResult",
    "admit_module",
    "default_host",
    "inspect_module",
    "set_default_host",
    "wasmbin",
]
