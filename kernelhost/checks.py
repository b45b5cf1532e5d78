"""Contract checks on a compiled module: what a kernel must export, declare and import.

The checks run in a fixed order and the first failure is reported, so an uploader always gets
the same sentence for the same module:

1. it compiles (and is a binary module: wasmtime would also accept WAT text, browsers would not),
   and uses no threads (a shared memory, the wasi-threads `wasi.thread-spawn` import or its
   `wasi_thread_start` export): threads are not supported, and saying so beats wasmtime's
   validation error;
2. it exports a function `_start` taking and returning nothing;
3. it exports a memory `memory` (32-bit, not shared);
4. that memory declares a maximum;
5. the maximum is within the platform cap;
6. every import is a WASI preview 1 function or one of the `ccgsc` functions with its exact type.

The host runs one more check when linking (`unsupported_import_reason`): a WASI name wasmtime
does not provide, or a WASI function imported with the wrong type.
"""

from __future__ import annotations

import re

import wasmtime

from . import wasmbin
from .contract import (
    CCGSC_MODULE,
    WASI_MODULE,
    KernelRejected,
    MiB,
    ModuleInfo,
)

WASM_MAGIC = b"\0asm"

#: The optional host functions: name -> (params, results) as wasmtime spells the value types.
CCGSC_IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "progress": (("f64",), ()),
    "checkpoint": (("i32", "i32"), ("i32",)),
}


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    """Compile `wasm` or raise KernelRejected("does not compile: <wasmtime's message>")."""
    if not wasm.startswith(WASM_MAGIC):
        raise KernelRejected(
            "The module does not compile: it is not a WebAssembly binary (upload the compiled"
            " .wasm file, not its source or another file)."
        )
    check_no_threads(wasm)
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise KernelRejected(f"The module does not compile: {_one_line(str(exc))}") from None


def check_no_threads(wasm: bytes) -> None:
    """Raise KernelRejected when `wasm` is a threads program (see wasmbin.find_threads)."""
    try:
        what = wasmbin.find_threads(wasm)
    except wasmbin.WasmFormatError:
        return  # malformed: wasmtime's compile error says where
    if what is not None:
        raise KernelRejected(
            f"The module uses threads ({what}), and threads are not supported: build it "
            "single-threaded (no -pthread; target wasm32-wasi, not wasm32-wasi-threads)."
        )


def describe_module(
    module: wasmtime.Module, *, sha256: str, size: int, memory_cap: int
) -> ModuleInfo:
    """Check `module` against the contract (checks 2-6 above) and describe it.

    Raises KernelRejected with the first failed check. `memory_cap` is in bytes.
    """
    exports = {e.name: e.type for e in module.exports}
    start = exports.get("_start")
    if not isinstance(start, wasmtime.FuncType):
        raise KernelRejected("The module has no `_start` export (a WASI command's entry point).")
    if start.params or start.results:
        raise KernelRejected("The `_start` export must take no parameters and return nothing.")
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise KernelRejected("The module has no `memory` export.")
    if memory.is_64 or memory.is_shared:
        raise KernelRejected("The `memory` export must be a 32-bit, non-shared memory.")
    page = memory.page_size
    limits = memory.limits
    if limits.max is None:
        raise KernelRejected(
            "The module declares no memory maximum (link with --max-memory=<bytes>; an upload "
            "to the platform sets the platform's cap)."
        )
    memory_min, memory_max = limits.min * page, limits.max * page
    if memory_max > memory_cap:
        raise KernelRejected(
            f"The module's memory maximum {mib(memory_max)} MiB is above the platform cap "
            f"{mib(memory_cap)} MiB."
        )
    imports: list[str] = []
    for imp in module.imports:
        name = imp.name or ""
        label = f"{imp.module}.{name}"
        ty = imp.type
        if imp.module == WASI_MODULE and isinstance(ty, wasmtime.FuncType):
            pass  # names and types are checked against wasmtime's WASI when linking
        elif imp.module == CCGSC_MODULE and name in CCGSC_IMPORTS:
            want = CCGSC_IMPORTS[name]
            if not isinstance(ty, wasmtime.FuncType) or _signature(ty) != want:
                raise KernelRejected(
                    f"The import `{label}` has the wrong type: expected {_format_signature(want)}."
                )
        else:
            raise KernelRejected(f"The module has an unsupported import `{label}`.")
        imports.append(label)
    return ModuleInfo(
        sha256=sha256,
        size=size,
        memory_min=memory_min,
        memory_max=memory_max,
        imports=tuple(imports),
        exports=tuple(exports),
    )


_UNKNOWN_IMPORT = re.compile(r"unknown import: `([^`]*)::([^`]*)`")
_INCOMPATIBLE_IMPORT = re.compile(r"incompatible import type for `([^`]*)::([^`]*)`")


def unsupported_import_reason(message: str) -> str:
    """Turn wasmtime's linking error into the upload error sentence."""
    if m := _UNKNOWN_IMPORT.search(message):
        return f"The module has an unsupported import `{m[1]}.{m[2]}`."
    if m := _INCOMPATIBLE_IMPORT.search(message):
        return f"The import `{m[1]}.{m[2]}` has the wrong type for WASI preview 1."
    return f"The module cannot be linked: {_one_line(message)}"


def _signature(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def _format_signature(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return f"({' '.join(sig[0])}) -> ({' '.join(sig[1])})"


def mib(n: int) -> str:
    value = n / MiB
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def _one_line(message: str) -> str:
    """wasmtime messages are multi-line ("...\\n\\nCaused by:\\n    detail"); keep the gist."""
    lines = [line.strip() for line in message.strip().splitlines()]
    lines = [line for line in lines if line and line != "Caused by:"]
    return "; ".join(lines[:3])
