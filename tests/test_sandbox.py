"""The kernel host (kernelhost): contract, limits, caching and threads.

Hostile and probing modules are written in WAT right here (wasmtime.wat2wasm), so these tests
depend on nothing else; the reference C kernels in kernels/build are exercised at the end when
they have been built.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import wasmtime

from kernelhost import (
    ErrorKind,
    Kernel,
    KernelHost,
    KernelRejected,
    Limits,
    RunResult,
)
from kernelhost.contract import MiB
from kernelhost.streams import HAVE_MEMFD, Stream
from tests.skips import skip_unless_ci

KERNELS = Path(__file__).resolve().parent.parent / "kernels" / "build"

# --- a tiny WAT toolkit -------------------------------------------------------------------------
# Memory layout of the test modules: 0..63 iovecs, 64..159 call results, 160..201 the number
# printer's buffer, 256..1023 string constants, 1024..4095 argv/env pointers, 4096.. buffers.

IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"""

HELPERS = """
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func $read (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (local $e i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (local.set $e (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
    (if (result i32) (local.get $e)
      (then (i32.sub (i32.const 0) (local.get $e)))
      (else (i32.load (i32.const 24)))))
  ;; copy fd -> fd until EOF; 0 or the errno
  (func $copy (param $from i32) (param $to i32) (result i32)
    (local $n i32)
    (loop $more
      (local.set $n (call $read (local.get $from) (i32.const 4096) (i32.const 61440)))
      (if (i32.lt_s (local.get $n) (i32.const 0))
        (then (return (i32.sub (i32.const 0) (local.get $n)))))
      (if (i32.gt_s (local.get $n) (i32.const 0))
        (then
          (drop (call $write (local.get $to) (i32.const 4096) (local.get $n)))
          (br $more))))
    (i32.const 0))
  ;; open a path under the preopen (fd 3); the new fd or -errno
  (func $open (param $path i32) (param $len i32) (param $oflags i32) (param $rights i64)
    (result i32)
    (local $e i32)
    (local.set $e (call $path_open (i32.const 3) (i32.const 0) (local.get $path)
      (local.get $len) (local.get $oflags) (local.get $rights) (local.get $rights)
      (i32.const 0) (i32.const 64)))
    (if (result i32) (local.get $e)
      (then (i32.sub (i32.const 0) (local.get $e)))
      (else (i32.load (i32.const 64)))))
  ;; print a signed decimal and a newline on stdout
  (func $print_num (param $n i32)
    (local $p i32) (local $u i32) (local $neg i32)
    (local.set $p (i32.const 200))
    (i32.store8 (i32.const 200) (i32.const 10))
    (local.set $neg (i32.lt_s (local.get $n) (i32.const 0)))
    (local.set $u (local.get $n))
    (if (local.get $neg) (then (local.set $u (i32.sub (i32.const 0) (local.get $n)))))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $u) (i32.const 10))))
      (local.set $u (i32.div_u (local.get $u) (i32.const 10)))
      (br_if $digits (local.get $u)))
    (if (local.get $neg)
      (then
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i32.store8 (local.get $p) (i32.const 45))))
    (drop (call $write (i32.const 1) (local.get $p) (i32.sub (i32.const 201) (local.get $p)))))
"""

MEMORY = '(memory (export "memory") 1 16)'


def wat_kernel(
    body: str,
    *,
    memory: str = MEMORY,
    data: Mapping[int, bytes] | None = None,
    imports: str = "",
    funcs: str = "",
) -> bytes:
    """A WASI command module: `body` is the body of _start (locals allowed first)."""
    segments = "".join(
        f'(data (i32.const {offset}) "{_wat_string(value)}")'
        for offset, value in (data or {}).items()
    )
    return bytes(
        wasmtime.wat2wasm(
            f"(module {IMPORTS} {imports} {memory} {segments} {HELPERS} {funcs}"
            f' (func (export "_start") {body}))'
        )
    )


def _wat_string(value: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in value)


def wat_module(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


ECHO = wat_kernel("(call $proc_exit (call $copy (i32.const 0) (i32.const 1)))")
LOOP = wat_kernel("(loop $forever (br $forever))")
UNREACHABLE = wat_kernel("unreachable")
EXIT = {code: wat_kernel(f"(call $proc_exit (i32.const {code}))") for code in (0, 3, 125, 200)}
# Grow memory 1 MiB at a time until refused, then trap like a C abort() after malloc fails.
MEMBOMB = wat_kernel(
    "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
    memory='(memory (export "memory") 1 65536)',
)
# Write 60 KiB to stdout forever, ignoring errors.
FLOOD = wat_kernel(
    "(loop $forever (drop (call $write (i32.const 1) (i32.const 4096) (i32.const 61440)))"
    " (br $forever))"
)
RECURSE = wat_kernel("(call $down)", funcs="(func $down (call $down))")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> KernelHost:
    return KernelHost(cache_dir=tmp_path_factory.mktemp("kernelhost"))


def run_ok(host: KernelHost, wasm: bytes | Kernel, **kwargs: object) -> RunResult:
    result = host.run(wasm, **kwargs)  # type: ignore[arg-type]
    assert result.ok, (result.error, result.message, result.stderr_tail)
    return result


# --- the contract: stdio, argv, env, exit codes -------------------------------------------------


def test_stdin_reaches_stdout(host: KernelHost) -> None:
    data = bytes(range(256)) * 1000  # binary, larger than one read
    result = run_ok(host, ECHO, stdin=data)
    assert result.stdout == data
    assert result.exit_code == 0
    assert result.stderr_tail == b""


def test_empty_stdin_is_eof(host: KernelHost) -> None:
    assert run_ok(host, ECHO).stdout == b""


def test_args_and_env_are_exactly_what_was_given(host: KernelHost) -> None:
    args_kernel = wat_kernel(
        """
        (drop (call $args_sizes_get (i32.const 96) (i32.const 100)))
        (drop (call $args_get (i32.const 1024) (i32.const 8192)))
        (drop (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 100))))
        """,
        imports='(import "wasi_snapshot_preview1" "args_sizes_get" '
        "(func $args_sizes_get (param i32 i32) (result i32)))"
        '(import "wasi_snapshot_preview1" "args_get" '
        "(func $args_get (param i32 i32) (result i32)))",
    )
    env_kernel = wat_kernel(
        """
        (drop (call $environ_sizes_get (i32.const 96) (i32.const 100)))
        (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
        (drop (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 100))))
        """,
        imports='(import "wasi_snapshot_preview1" "environ_sizes_get" '
        "(func $environ_sizes_get (param i32 i32) (result i32)))"
        '(import "wasi_snapshot_preview1" "environ_get" '
        "(func $environ_get (param i32 i32) (result i32)))",
    )
    out = run_ok(host, args_kernel, args=["0", "100", "two words", "é"]).stdout
    assert out.split(b"\0") == [b"kernel", b"0", b"100", b"two words", "é".encode(), b""]
    assert run_ok(host, args_kernel, argv0="generator").stdout == b"generator\0"
    # Nothing of the host's own environment leaks in.
    assert run_ok(host, env_kernel).stdout == b""
    out = run_ok(host, env_kernel, env={"MODE": "fast", "EMPTY": ""}).stdout
    assert out == b"MODE=fast\0EMPTY=\0"


@pytest.mark.parametrize("bad", [{"args": ["a\0b"]}, {"env": {"A=B": "1"}}, {"env": {"": "1"}}])
def test_bad_args_or_env_are_refused(host: KernelHost, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"NUL|environment"):
        host.run(ECHO, **bad)  # type: ignore[arg-type]


def test_exit_codes(host: KernelHost) -> None:
    assert host.run(EXIT[0]).ok
    three = host.run(EXIT[3])
    assert (three.ok, three.error, three.exit_code) == (False, ErrorKind.EXIT, 3)
    assert "status 3" in three.message
    assert host.run(EXIT[125]).exit_code == 125
    # wasmtime refuses proc_exit(>= 126) with an error instead of an exit: no code to report.
    invalid = host.run(EXIT[200])
    assert (invalid.error, invalid.exit_code) == (ErrorKind.EXIT, None)
    assert "0..125" in invalid.message


def test_trap(host: KernelHost) -> None:
    result = host.run(UNREACHABLE)
    assert (result.error, result.exit_code) == (ErrorKind.TRAP, None)
    assert "unreachable" in result.message


def test_stack_overflow_is_a_trap_also_in_a_thread(host: KernelHost) -> None:
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(host.run, RECURSE).result()
    assert result.error is ErrorKind.TRAP
    assert "call stack exhausted" in result.message


def test_stderr_keeps_the_last_4_kib(host: KernelHost) -> None:
    # 25 MiB of stderr with a 1 MiB stderr cap, then a final line: still a success.
    kernel = wat_kernel(
        """
        (local $i i32)
        (loop $spam
          (drop (call $write (i32.const 2) (i32.const 4096) (i32.const 61440)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $spam (i32.lt_u (local.get $i) (i32.const 430))))
        (drop (call $write (i32.const 2) (i32.const 256) (i32.const 8)))
        """,
        data={256: b"THE END\n", 4096: b"x" * 61440},
    )
    result = run_ok(host, kernel, limits=Limits(stderr_bytes=1 * MiB))
    assert len(result.stderr_tail) == 4096
    assert result.stderr_tail.endswith(b"x" * 100 + b"THE END\n")


# --- /ccgsc -------------------------------------------------------------------------------------

O_CREAT, O_TRUNC = 1, 8
RIGHT_READ, RIGHT_WRITE = 2, 64


def cat_kernel(path: bytes) -> bytes:
    """Print the file at `path` under /ccgsc, or the errno (as a negative number)."""
    return wat_kernel(
        f"""
        (local $fd i32)
        (local.set $fd (call $open (i32.const 256) (i32.const {len(path)}) (i32.const 0)
          (i64.const {RIGHT_READ})))
        (if (i32.lt_s (local.get $fd) (i32.const 0))
          (then (call $print_num (local.get $fd)) (return)))
        (call $proc_exit (call $copy (local.get $fd) (i32.const 1)))
        """,
        data={256: path},
    )


def open_kernel(path: bytes, oflags: int, rights: int) -> bytes:
    """Print the result of path_open (a new fd, or -errno)."""
    return wat_kernel(
        f"(call $print_num (call $open (i32.const 256) (i32.const {len(path)})"
        f" (i32.const {oflags}) (i64.const {rights})))",
        data={256: path},
    )


def test_static_and_checkpoint_are_readable(host: KernelHost) -> None:
    static = b"static data \x00\xff" * 100
    assert run_ok(host, cat_kernel(b"static"), static=static).stdout == static
    both = {"static": static, "checkpoint": b"saved state"}
    for name, content in both.items():
        result = run_ok(host, cat_kernel(name.encode()), static=static, checkpoint=b"saved state")
        assert result.stdout == content
    # Absent when not given: ENOENT (44), and /ccgsc itself always exists.
    assert run_ok(host, cat_kernel(b"static")).stdout == b"-44\n"
    assert run_ok(host, cat_kernel(b"checkpoint"), static=static).stdout == b"-44\n"


def test_static_data_is_stored_once_and_checked(host: KernelHost) -> None:
    static = os.urandom(1000)
    digest = hashlib.sha256(static).hexdigest()
    for _ in range(3):
        out = run_ok(host, cat_kernel(b"static"), static=static, static_sha256=digest).stdout
        assert out == static
    entry = host.cache_dir / "static" / digest / "static"
    assert entry.read_bytes() == static
    assert not entry.stat().st_mode & 0o222  # read-only on disk too
    with pytest.raises(ValueError, match="does not match"):
        host.run(ECHO, static=b"other bytes", static_sha256="0" * 64)
    # Per-run directories (for checkpoints) are removed afterwards.
    run_ok(host, cat_kernel(b"checkpoint"), static=static, checkpoint=b"c")
    assert list((host.cache_dir / "runs").iterdir()) == []


@pytest.mark.parametrize(
    ("path", "oflags", "rights"),
    [
        (b"static", 0, RIGHT_WRITE),  # open the static file for writing
        (b"static", O_TRUNC, RIGHT_READ),  # truncate it
        (b"new", O_CREAT, RIGHT_WRITE),  # create a file
        (b"../../../../etc/passwd", 0, RIGHT_READ),  # climb out
        (b"/etc/passwd", 0, RIGHT_READ),  # absolute path
    ],
)
def test_ccgsc_cannot_be_written_or_escaped(
    host: KernelHost, path: bytes, oflags: int, rights: int
) -> None:
    static = b"precious"
    result = run_ok(host, open_kernel(path, oflags, rights), static=static)
    assert int(result.stdout) < 0, "path_open must fail with an errno"
    digest = hashlib.sha256(static).hexdigest()
    assert sorted(p.name for p in (host.cache_dir / "static" / digest).iterdir()) == ["static"]
    assert (host.cache_dir / "static" / digest / "static").read_bytes() == static


# --- progress and checkpoints -------------------------------------------------------------------

CCGSC_IMPORTS = (
    '(import "ccgsc" "progress" (func $progress (param f64)))'
    '(import "ccgsc" "checkpoint" (func $checkpoint (param i32 i32) (result i32)))'
)


def test_progress_and_checkpoint_callbacks(host: KernelHost) -> None:
    kernel = wat_kernel(
        """
        (call $progress (f64.const 0.25))
        (call $progress (f64.const 0.5))
        (call $progress (f64.const 7))
        (call $print_num (call $checkpoint (i32.const 256) (i32.const 11)))
        (call $print_num (call $checkpoint (i32.const 256) (i32.const 5)))
        """,
        imports=CCGSC_IMPORTS,
        data={256: b"state-00042"},
    )
    progress: list[float] = []
    saved: list[bytes] = []
    result = run_ok(host, kernel, on_progress=progress.append, on_checkpoint=saved.append)
    assert result.stdout == b"0\n0\n"
    assert saved == [b"state-00042", b"state"]
    assert result.checkpoint == b"state"
    # Rate-limited: the first value at once, the latest one (clamped to 1) at the end.
    assert progress == [0.25, 1.0]


def test_checkpoint_above_the_cap_or_outside_memory_is_refused(host: KernelHost) -> None:
    kernel = wat_kernel(
        """
        (call $print_num (call $checkpoint (i32.const 256) (i32.const 9)))
        (call $print_num (call $checkpoint (i32.const 256) (i32.const 8)))
        (call $print_num (call $checkpoint (i32.const 65530) (i32.const 8)))
        (call $print_num (call $checkpoint (i32.const -8) (i32.const 4)))
        (call $print_num (call $checkpoint (i32.const 256) (i32.const -1)))
        """,
        imports=CCGSC_IMPORTS,
        memory='(memory (export "memory") 1 1)',
        data={256: b"123456789"},
    )
    saved: list[bytes] = []
    result = run_ok(host, kernel, limits=Limits(checkpoint_bytes=8), on_checkpoint=saved.append)
    assert result.stdout == b"-1\n0\n-1\n-1\n-1\n"
    assert saved == [b"12345678"]


def test_callback_exceptions_do_not_reach_the_kernel(host: KernelHost) -> None:
    kernel = wat_kernel(
        "(call $progress (f64.const 0.5))"
        "(call $print_num (call $checkpoint (i32.const 256) (i32.const 2)))",
        imports=CCGSC_IMPORTS,
    )

    def explode(_: object) -> None:
        raise RuntimeError("callback bug")

    result = run_ok(host, kernel, on_progress=explode, on_checkpoint=explode)
    assert result.stdout == b"0\n"


# --- limits -------------------------------------------------------------------------------------


def test_endless_loop_times_out(host: KernelHost) -> None:
    started = time.monotonic()
    result = host.run(LOOP, limits=Limits(timeout_s=0.2))
    elapsed = time.monotonic() - started
    assert (result.error, result.exit_code) == (ErrorKind.TIMEOUT, None)
    assert "0.2 s" in result.message
    assert 0.19 <= elapsed < 2.0


def test_cancel_stops_a_run(host: KernelHost) -> None:
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    result = host.run(LOOP, limits=Limits(timeout_s=30), cancel=cancel)
    assert result.error is ErrorKind.CANCELLED
    assert time.monotonic() - started < 2.0


def test_sleeping_is_unsupported_so_it_cannot_outlast_the_timeout(host: KernelHost) -> None:
    # poll_oneoff with a 60 s clock subscription: wasmtime's own would block the thread where
    # no epoch check reaches it. The contract answers ENOTSUP (58) at once.
    subscription = (
        (1).to_bytes(8, "little")  # userdata
        + bytes(8)  # tag 0 = clock, padding
        + (1).to_bytes(4, "little")  # monotonic clock
        + bytes(4)
        + (60 * 10**9).to_bytes(8, "little")  # timeout in ns
        + bytes(16)
    )
    kernel = wat_kernel(
        "(call $print_num (call $poll_oneoff (i32.const 4096) (i32.const 8192) (i32.const 1)"
        " (i32.const 96)))",
        imports='(import "wasi_snapshot_preview1" "poll_oneoff" '
        "(func $poll_oneoff (param i32 i32 i32 i32) (result i32)))",
        data={4096: subscription},
    )
    started = time.monotonic()
    assert run_ok(host, kernel, limits=Limits(timeout_s=1)).stdout == b"58\n"
    assert time.monotonic() - started < 1.0


def test_memory_bomb_is_out_of_memory(host: KernelHost) -> None:
    result = host.run(MEMBOMB, limits=Limits(memory_bytes=16 * MiB))
    assert (result.error, result.exit_code) == (ErrorKind.OUT_OF_MEMORY, None)
    assert 15 * MiB < result.memory_bytes <= 16 * MiB
    assert "16 MiB" in result.message


def test_a_trap_with_fixed_memory_at_the_cap_is_not_out_of_memory(host: KernelHost) -> None:
    fixed = wat_kernel("unreachable", memory='(memory (export "memory") 256 256)')
    result = host.run(fixed, limits=Limits(memory_bytes=16 * MiB))
    assert result.error is ErrorKind.TRAP


def test_initial_memory_above_the_limit_is_out_of_memory(host: KernelHost) -> None:
    big = wat_kernel("", memory='(memory (export "memory") 512 512)')  # 32 MiB from the start
    result = host.run(big, limits=Limits(memory_bytes=16 * MiB))
    assert result.error is ErrorKind.OUT_OF_MEMORY
    assert "initial memory" in result.message


def test_stdout_flood_is_stopped(host: KernelHost) -> None:
    started = time.monotonic()
    result = host.run(FLOOD, limits=Limits(timeout_s=30, output_bytes=1 * MiB))
    assert (result.error, result.stdout) == (ErrorKind.OUTPUT_TOO_LARGE, b"")
    assert "1048576 bytes" in result.message
    # Stopped within ticks, not at the timeout, with the written output bounded.
    assert time.monotonic() - started < 2.0
    assert 1 * MiB < result.stdout_size < 512 * MiB


def test_output_just_over_the_cap_is_caught_after_the_run(host: KernelHost) -> None:
    kernel = wat_kernel("(drop (call $write (i32.const 1) (i32.const 4096) (i32.const 1001)))")
    assert host.run(kernel, limits=Limits(output_bytes=1001)).ok
    result = host.run(kernel, limits=Limits(output_bytes=1000))
    assert result.error is ErrorKind.OUTPUT_TOO_LARGE


@pytest.mark.skipif(not HAVE_MEMFD, reason="memfd sealing is Linux-only")
def test_sealed_stdout_fails_wasmtime_writes_with_an_errno(tmp_path: Path) -> None:
    # The mechanism behind the flood limit: wasmtime opens its own description of the memfd
    # through /proc/self/fd/N, and a seal still makes its writes fail (EPERM, WASI errno 63).
    kernel = wat_kernel(
        "(call $proc_exit (call $write (i32.const 1) (i32.const 256) (i32.const 3)))"
    )
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    stdout = Stream.output("stdout", tmp_path)
    try:
        stdout.seal()
        wasi = wasmtime.WasiConfig()
        wasi.stdout_file = stdout.path
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        instance = linker.instantiate(store, wasmtime.Module(engine, kernel))
        with pytest.raises(wasmtime.ExitTrap) as exit_:
            instance.exports(store)["_start"](store)  # type: ignore[operator]
        assert exit_.value.code == 63
        assert stdout.size() == 0
    finally:
        stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="hole punching is Linux-only")
def test_stderr_trimming_frees_all_but_the_tail(tmp_path: Path) -> None:
    stderr = Stream.output("stderr", tmp_path)
    try:
        os.write(stderr.fd, b"a" * (4 * MiB) + b"b" * 100)
        assert stderr.resident() >= 4 * MiB
        assert stderr.discard_before_tail(4096)
        assert stderr.resident() <= 3 * 4096
        assert stderr.size() == 4 * MiB + 100
        assert stderr.tail(4096) == b"a" * 3996 + b"b" * 100
    finally:
        stderr.close()


def test_generator_output_can_be_streamed_from_disk(host: KernelHost) -> None:
    data = os.urandom(3 * MiB)
    result = run_ok(host, ECHO, stdin=data, stdout_file=True, limits=Limits(output_bytes=8 * MiB))
    assert result.stdout == b""
    assert result.stdout_stream is not None
    with result.stdout_stream as stream:
        chunks = iter(lambda: stream.read(1 << 20), b"")
        assert b"".join(chunks) == data
    flood = host.run(FLOOD, stdout_file=True, limits=Limits(output_bytes=2 * MiB))
    assert flood.error is ErrorKind.OUTPUT_TOO_LARGE
    assert flood.stdout_stream is not None
    flood.stdout_stream.close()


def test_raw_bytes_of_an_invalid_module_give_an_invalid_result(host: KernelHost) -> None:
    result = host.run(b"not wasm at all")
    assert (result.error, result.exit_code) == (ErrorKind.INVALID, None)
    assert "does not compile" in result.message


# --- threads ------------------------------------------------------------------------------------


def test_eight_concurrent_runs_are_all_correct(host: KernelHost) -> None:
    kernel = host.compile(
        wat_kernel(
            "(call $progress (f64.const 0.5))"
            "(drop (call $checkpoint (i32.const 4096) (i32.const 0)))"
            "(call $proc_exit (call $copy (i32.const 0) (i32.const 1)))",
            imports=CCGSC_IMPORTS,
        )
    )

    def one(i: int) -> tuple[bytes, list[float], list[bytes]]:
        progress: list[float] = []
        saved: list[bytes] = []
        result = run_ok(
            host,
            kernel,
            stdin=f"task {i} ".encode() * (i + 1),
            on_progress=progress.append,
            on_checkpoint=saved.append,
        )
        return result.stdout, progress, saved

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(64)))
    for i, (stdout, progress, saved) in enumerate(outcomes):
        assert stdout == f"task {i} ".encode() * (i + 1)
        assert progress == [0.5]  # each run's callbacks went to that run only
        assert saved == [b""]


def test_timeouts_in_some_threads_do_not_disturb_the_others(host: KernelHost) -> None:
    with ThreadPoolExecutor(8) as pool:
        loops = [pool.submit(host.run, LOOP, limits=Limits(timeout_s=0.3)) for _ in range(4)]
        echoes = [pool.submit(host.run, ECHO, stdin=b"%d" % i) for i in range(4)]
        bombs = [
            pool.submit(host.run, MEMBOMB, limits=Limits(memory_bytes=8 * MiB)) for _ in range(2)
        ]
        assert [f.result().stdout for f in echoes] == [b"0", b"1", b"2", b"3"]
        assert all(f.result().error is ErrorKind.TIMEOUT for f in loops)
        assert all(f.result().error is ErrorKind.OUT_OF_MEMORY for f in bombs)


# --- compile cache ------------------------------------------------------------------------------


def test_compiled_modules_are_reused_in_memory_and_from_disk(tmp_path: Path) -> None:
    wasm = wat_kernel("(call $print_num (i32.const 42))")
    first = KernelHost(cache_dir=tmp_path)
    kernel = first.compile(wasm)
    assert first.compile(wasm) is kernel
    assert first.compile(wasm, kernel.sha256) is kernel
    assert (first.stats.compiled, first.stats.loaded, first.stats.hits) == (1, 0, 2)
    assert kernel.sha256 == hashlib.sha256(wasm).hexdigest()
    cached = list((tmp_path / "modules").glob(f"*/{kernel.sha256}.cwasm"))
    assert len(cached) == 1

    second = KernelHost(cache_dir=tmp_path)
    again = second.compile(wasm)
    assert (second.stats.compiled, second.stats.loaded) == (0, 1)
    assert run_ok(second, again).stdout == b"42\n"

    # A damaged cache file is discarded and the module compiled again.
    cached[0].write_bytes(b"garbage")
    third = KernelHost(cache_dir=tmp_path)
    assert run_ok(third, third.compile(wasm)).stdout == b"42\n"
    assert (third.stats.compiled, third.stats.loaded) == (1, 0)


def test_the_store_keeps_to_its_size_cap_least_recently_used_first(tmp_path: Path) -> None:
    datas = [bytes([i]) * 100_000 for i in range(4)]
    shas = [hashlib.sha256(d).hexdigest() for d in datas]
    reader = cat_kernel(b"static")
    first = KernelHost(cache_dir=tmp_path)
    kernel = first.compile(reader)
    for data in datas[:3]:
        assert run_ok(first, kernel, static=data).stdout == data
    module = next((tmp_path / "modules").glob(f"*/{kernel.sha256}.cwasm"))
    for age, path in (
        (400, module),
        *((300 - 100 * i, tmp_path / "static" / shas[i]) for i in range(3)),
    ):
        os.utime(path, (time.time() - age, time.time() - age))
    # Compiled modules of another wasmtime build: gone once unused for a day.
    stale, recent = tmp_path / "modules" / "old-engine", tmp_path / "modules" / "other-engine"
    for d, age in ((stale, 2 * 86400), (recent, 3600)):
        d.mkdir()
        os.utime(d, (time.time() - age, time.time() - age))

    # A later process capped at 3 static entries' worth: on start, the least recently used
    # entry (the compiled module) goes. Then it compiles (storing the module again: static 0
    # goes), runs with static 1 (marking it as used) and with static 3 (new: static 2 goes,
    # not 1, which this process uses).
    cap = 3 * 100_000 + 50
    second = KernelHost(cache_dir=tmp_path, cache_max_bytes=cap)
    assert not stale.exists() and recent.exists()
    assert not module.exists()
    assert run_ok(second, reader, static=datas[1]).stdout == datas[1]
    long_ago = time.time() - 500  # in use for a long time, still spared
    os.utime(tmp_path / "static" / shas[1], (long_ago, long_ago))
    assert run_ok(second, reader, static=datas[3]).stdout == datas[3]
    assert module.exists()
    assert {p.name for p in (tmp_path / "static").iterdir()} == {shas[1], shas[3]}
    assert second.files.usage() <= cap

    # Another process pruned what this one uses: it is written again, not failed.
    shutil.rmtree(tmp_path / "static" / shas[1])
    assert run_ok(second, reader, static=datas[1], static_sha256=shas[1]).stdout == datas[1]
    assert run_ok(second, reader, static=datas[1], static_sha256=shas[1]).stdout == datas[1]
    with pytest.raises(ValueError, match="max_bytes"):
        KernelHost(cache_dir=tmp_path, cache_max_bytes=-1)


def test_leftovers_of_dead_processes_are_swept(tmp_path: Path) -> None:
    KernelHost(cache_dir=tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    leftover = tmp_path / "runs" / f"{dead}-abc"
    leftover.mkdir()
    (leftover / "checkpoint").write_bytes(b"old")
    mine = tmp_path / "runs" / f"{os.getpid()}-live"
    mine.mkdir()
    KernelHost(cache_dir=tmp_path)
    assert not leftover.exists()
    assert mine.exists()


def test_wrong_sha256_is_refused(host: KernelHost) -> None:
    with pytest.raises(ValueError, match="sha256"):
        host.compile(ECHO, "0" * 64)


def test_a_cache_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        KernelHost(cache_dir=shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777


def _wait_for_child(pid: int, timeout_s: float = 120) -> int:
    """The forked child's exit code, waited for (not polled); a child still running after
    `timeout_s` is killed and the test fails."""
    hung = threading.Event()

    def kill() -> None:
        hung.set()
        os.kill(pid, 9)

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.start()
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        watchdog.cancel()
    if hung.is_set():
        pytest.fail("the forked child hung")
    return os.waitstatus_to_exitcode(status)


# Like a Celery prefork master: compile (or nothing) in the parent, run only in the children.
FORK_SCRIPT = """
import os, sys
from kernelhost import ErrorKind, KernelHost, Limits
echo, loop, fresh = (open(p, "rb").read() for p in sys.argv[1:4])
host = KernelHost()
kernel = host.compile(echo)
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = host.run(kernel, stdin=b"child").stdout == b"child"
            ok &= host.run(loop, limits=Limits(timeout_s=0.1)).error is ErrorKind.TIMEOUT
            ok &= host.run(fresh).ok  # compiled in the child
            code = 0 if ok else 2
        finally:
            os._exit(code)
    children.append(pid)
sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_get_their_own_engine(tmp_path: Path) -> None:
    paths = []
    for name, wasm in [("echo", ECHO), ("loop", LOOP), ("fresh", EXIT[0])]:
        paths.append(tmp_path / f"{name}.wasm")
        paths[-1].write_bytes(wasm)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, *map(str, paths)],
        cwd=root,
        timeout=60,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_of_a_process_that_ran_kernels_refuses_instead_of_hanging(
    host: KernelHost,
) -> None:
    assert run_ok(host, ECHO, stdin=b"parent").stdout == b"parent"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            host.run(ECHO, stdin=b"child")
            code = 2
        except RuntimeError as exc:
            code = 0 if "forked" in str(exc) else 3
        finally:
            os._exit(code)
    assert _wait_for_child(pid) == 0
    assert run_ok(host, ECHO, stdin=b"parent again").stdout == b"parent again"


# --- module checks (upload validation) ----------------------------------------------------------


def reason(host: KernelHost, wasm: bytes, memory_cap: int = 256 * MiB) -> str:
    with pytest.raises(KernelRejected) as rejected:
        host.inspect(wasm, memory_cap=memory_cap)
    return rejected.value.reason


def test_inspect_accepts_a_kernel_and_describes_it(host: KernelHost) -> None:
    wasm = wat_kernel("", imports=CCGSC_IMPORTS)
    info = host.inspect(wasm, memory_cap=256 * MiB)
    assert info.sha256 == hashlib.sha256(wasm).hexdigest()
    assert info.size == len(wasm)
    assert (info.memory_min, info.memory_max) == (64 * 1024, 16 * 64 * 1024)
    assert "ccgsc.progress" in info.imports
    assert "wasi_snapshot_preview1.fd_write" in info.imports
    assert {"_start", "memory"} <= set(info.exports)


def test_inspect_rejects_garbage(host: KernelHost) -> None:
    assert "does not compile" in reason(host, os.urandom(64))
    broken = reason(host, b"\0asm\x01\0\0\0\x99garbage")
    assert broken.startswith("The module does not compile: ")
    assert len(broken) > len("The module does not compile: ") + 5  # wasmtime's message
    # WAT text compiles in wasmtime but is not a module a browser would take.
    assert "not a WebAssembly binary" in reason(host, b'(module (func (export "_start")))')


def test_inspect_rejects_each_broken_rule(host: KernelHost) -> None:
    no_start = wat_module('(module (memory (export "memory") 1 2) (func (export "main")))')
    assert "no `_start` export" in reason(host, no_start)
    no_memory = wat_module('(module (memory 1 2) (func (export "_start")))')
    assert "no `memory` export" in reason(host, no_memory)
    no_max = wat_module('(module (memory (export "memory") 1) (func (export "_start")))')
    assert "no memory maximum" in reason(host, no_max)
    too_big = wat_module('(module (memory (export "memory") 1 8192) (func (export "_start")))')
    assert reason(host, too_big) == (
        "The module's memory maximum 512 MiB is above the platform cap 256 MiB."
    )
    assert host.inspect(too_big, memory_cap=512 * MiB).memory_max == 512 * MiB
    unknown = wat_module(
        '(module (import "env" "now" (func)) (memory (export "memory") 1 2)'
        ' (func (export "_start")))'
    )
    assert reason(host, unknown) == "The module has an unsupported import `env.now`."
    not_wasi = wat_module(
        '(module (import "wasi_snapshot_preview1" "sock_open" (func (param i32) (result i32)))'
        ' (memory (export "memory") 1 2) (func (export "_start")))'
    )
    assert "unsupported import `wasi_snapshot_preview1.sock_open`" in reason(host, not_wasi)
    wrong_type = wat_module(
        '(module (import "ccgsc" "progress" (func (param f32)))'
        ' (memory (export "memory") 1 2) (func (export "_start")))'
    )
    assert "`ccgsc.progress` has the wrong type" in reason(host, wrong_type)


# --- the reference kernels (kernels/build, when built) ------------------------------------------


def reference(name: str) -> bytes:
    path = KERNELS / f"{name}.wasm"
    if not path.exists():
        skip_unless_ci(f"{path} has not been built (make kernels)")
    return path.read_bytes()


def test_reference_primes(host: KernelHost) -> None:
    result = run_ok(host, reference("primes"), stdin=b"0 100")
    lines = result.stdout.decode().split()
    assert len(lines) == 25
    assert lines[:5] == ["2", "3", "5", "7", "11"] and lines[-1] == "97"


def test_reference_montecarlo_is_deterministic(host: KernelHost) -> None:
    wasm = reference("montecarlo")
    first = run_ok(host, wasm, stdin=b"12345 100000").stdout
    assert first
    assert run_ok(host, wasm, stdin=b"12345 100000").stdout == first
    assert run_ok(host, wasm, stdin=b"54321 100000").stdout != first


@pytest.mark.parametrize(
    ("name", "kind", "limits"),
    [
        ("loop", ErrorKind.TIMEOUT, Limits(timeout_s=0.2)),
        ("membomb", ErrorKind.OUT_OF_MEMORY, Limits(memory_bytes=16 * MiB)),
        ("flood", ErrorKind.OUTPUT_TOO_LARGE, Limits(output_bytes=1 * MiB)),
        ("trap", ErrorKind.TRAP, Limits()),
    ],
)
def test_reference_hostile_kernels_are_stopped(
    host: KernelHost, name: str, kind: ErrorKind, limits: Limits
) -> None:
    started = time.monotonic()
    result = host.run(reference(name), limits=limits)
    assert result.error is kind, result.message
    assert time.monotonic() - started < 5


def test_reference_exitcode_and_nomax(host: KernelHost) -> None:
    result = host.run(reference("exitcode"), stdin=b"7")
    assert (result.error, result.exit_code) == (ErrorKind.EXIT, 7)
    assert "no memory maximum" in reason(host, reference("nomax"))
