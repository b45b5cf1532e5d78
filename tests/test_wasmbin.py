"""Accepting any WASI preview 1 command module (issue 12): the memory-section rewriter
(kernelhost/wasmbin.py), KernelHost.admit, and the upload service storing the rewritten module
with the original hash as provenance. Threads are refused at upload with that reason.

The Rust kernel kernels/build/sieve_rs.wasm is rustc's default wasm32-wasi output (no memory
maximum), committed built so these tests need no Rust toolchain.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import wasmtime

from kernelhost import ErrorKind, KernelHost, KernelRejected, Limits, wasmbin
from kernelhost.contract import WASM_PAGE, MiB

KERNELS = Path(__file__).resolve().parent.parent / "kernels" / "build"
SIEVE_RS = KERNELS / "sieve_rs.wasm"
# Primes <= 10,000,000: the sieve needs 10 MB of memory.
SIEVE_N, SIEVE_COUNT = b"10000000", b"664579\n"


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def command(memory: str) -> bytes:
    return wat(f'(module (memory (export "memory") {memory}) (func (export "_start")))')


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> KernelHost:
    return KernelHost(cache_dir=tmp_path_factory.mktemp("wasmbin"))


def memory_limits(wasm: bytes) -> tuple[int, int | None]:
    """(min, max) pages of the exported memory as wasmtime reads them."""
    module = wasmtime.Module(wasmtime.Engine(), wasm)
    memory = next(e.type for e in module.exports if e.name == "memory")
    assert isinstance(memory, wasmtime.MemoryType)
    return memory.limits.min, memory.limits.max


# --- LEB128 and the reader -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\0"), (127, b"\x7f"), (128, b"\x80\x01"), (4096, b"\x80\x20"), (65536, b"\x80\x80\x04")],
)
def test_uleb_round_trips(value: int, encoded: bytes) -> None:
    assert wasmbin.encode_uleb(value) == encoded
    reader = wasmbin._Reader(encoded, 0, len(encoded))
    assert reader.uleb() == value and reader.pos == len(encoded)


def test_uleb_rejects_overlong_and_oversized_numbers() -> None:
    with pytest.raises(wasmbin.WasmFormatError, match="too long"):
        wasmbin._Reader(b"\x80\x80\x80\x80\x80\x00", 0, 6).uleb()
    with pytest.raises(wasmbin.WasmFormatError, match="too large"):
        wasmbin._Reader(b"\xff\xff\xff\xff\x1f", 0, 5).uleb()  # 35 bits in a u32
    with pytest.raises(wasmbin.WasmFormatError, match="end of data"):
        wasmbin._Reader(b"\x80", 0, 1).uleb()


def test_sections_reject_bad_framing() -> None:
    with pytest.raises(wasmbin.WasmFormatError, match="header"):
        wasmbin.sections(b"\0asm\x02\0\0\0")
    with pytest.raises(wasmbin.WasmFormatError, match="past the end"):
        wasmbin.sections(wasmbin.WASM_HEADER + b"\x01\x10\x00")


def test_memories_in_index_order_with_imported_ones_first() -> None:
    wasm = wat(
        '(module (import "a-long-module-name" "mem" (memory 2 3)) (memory 1)'
        ' (func (export "_start")))'
    )
    found = wasmbin.memories(wasm)
    assert [(m.imported, m.min_pages, m.max_pages) for m in found] == [
        (True, 2, 3),
        (False, 1, None),
    ]


# --- the rewrite ---------------------------------------------------------------------------------


def test_set_memory_max_changes_only_the_memory_section() -> None:
    # A big initial memory (multi-byte LEB) and a custom section after the code, as debug
    # information is: everything but the memory section must come out byte for byte.
    custom = b"\x05debug" + bytes(range(40))
    original = command("300") + b"\x00" + wasmbin.encode_uleb(len(custom)) + custom
    rewritten = wasmbin.set_memory_max(original, 4096)
    assert memory_limits(rewritten) == (300, 4096)
    before = {s.id: original[s.body : s.end] for s in wasmbin.sections(original)}
    after = {s.id: rewritten[s.body : s.end] for s in wasmbin.sections(rewritten)}
    assert before.keys() == after.keys()
    for section_id in before:
        if section_id != wasmbin.MEMORY_SECTION:
            assert after[section_id] == before[section_id], section_id
    assert after[wasmbin.MEMORY_SECTION] == b"\x01\x01\xac\x02\x80\x20"


def test_set_memory_max_leaves_declared_maxima_and_refuses_impossible_caps() -> None:
    declared = command("1 2")
    assert wasmbin.set_memory_max(declared, 4096) is declared
    no_memory = wat('(module (func (export "_start")))')
    assert wasmbin.set_memory_max(no_memory, 4096) is no_memory
    with pytest.raises(ValueError, match="minimum of 300 pages is above 256"):
        wasmbin.set_memory_max(command("300"), 256)


def test_find_threads_names_what_it_found() -> None:
    assert wasmbin.find_threads(command("1 2")) is None
    assert wasmbin.find_threads(command("1 2 shared")) == "a shared memory"
    spawn = wat(
        '(module (import "wasi" "thread-spawn" (func (param i32) (result i32)))'
        ' (memory (export "memory") 1 2) (func (export "_start")))'
    )
    assert wasmbin.find_threads(spawn) == "the `wasi.thread-spawn` import"
    start = wat(
        '(module (memory (export "memory") 1 2) (func (export "_start"))'
        ' (func (export "wasi_thread_start") (param i32 i32)))'
    )
    assert wasmbin.find_threads(start) == "the `wasi_thread_start` export"


# --- KernelHost.admit -----------------------------------------------------------------------------


def test_admit_writes_the_cap_into_a_module_without_a_maximum(host: KernelHost) -> None:
    wasm = command("2")
    admitted = host.admit(wasm, memory_cap=32 * MiB)
    assert admitted.rewritten
    assert admitted.original_sha256 == hashlib.sha256(wasm).hexdigest()
    assert admitted.info.sha256 == hashlib.sha256(admitted.wasm).hexdigest()
    assert admitted.info.memory_max == 32 * MiB
    assert memory_limits(admitted.wasm) == (2, 32 * MiB // WASM_PAGE)
    # Admitting the rewritten bytes again changes nothing: same hash, same kernel.
    again = host.admit(admitted.wasm, memory_cap=32 * MiB)
    assert not again.rewritten and again.wasm == admitted.wasm


def test_admit_keeps_a_declared_maximum_and_still_checks_it(host: KernelHost) -> None:
    declared = command("1 16")
    admitted = host.admit(declared, memory_cap=32 * MiB)
    assert not admitted.rewritten and admitted.wasm == declared
    with pytest.raises(KernelRejected, match=r"maximum 1 MiB is above the platform cap 0\.50 MiB"):
        host.admit(declared, memory_cap=MiB // 2)


@pytest.mark.parametrize(
    ("wasm", "reason"),
    [
        (command("1 2 shared"), "uses threads (a shared memory), and threads are not supported"),
        (
            wat(
                '(module (import "wasi" "thread-spawn" (func (param i32) (result i32)))'
                ' (memory (export "memory") 1) (func (export "_start")))'
            ),
            "uses threads (the `wasi.thread-spawn` import), and threads are not supported",
        ),
        (command("600"), "initial memory 37.50 MiB is above the platform cap 32 MiB"),
        (b"\0asm\x01\0\0\0\x05\x7f", "does not compile"),
        (b"MZ not wasm", "not a WebAssembly binary"),
    ],
)
def test_admit_says_which_check_failed(host: KernelHost, wasm: bytes, reason: str) -> None:
    with pytest.raises(KernelRejected) as err:
        host.admit(wasm, memory_cap=32 * MiB)
    assert reason in err.value.reason


def test_running_still_requires_a_maximum(host: KernelHost) -> None:
    # The host runs what the platform stored (with a maximum); raw bytes without one are
    # refused at compile time with a hint that an upload sets the cap.
    result = host.run(command("1"))
    assert result.error is ErrorKind.INVALID and "no memory maximum" in result.message


# --- the Rust kernel (rustc's default output) -----------------------------------------------------


def test_the_rust_kernel_is_rustcs_default_output_without_a_maximum() -> None:
    wasm = SIEVE_RS.read_bytes()
    assert memory_limits(wasm)[1] is None
    assert b"rustc" in wasm  # the producers section names the compiler


def test_the_rust_kernel_runs_under_the_cap_written_at_admission(host: KernelHost) -> None:
    wasm = SIEVE_RS.read_bytes()
    roomy = host.admit(wasm, memory_cap=32 * MiB)
    assert roomy.rewritten and roomy.info.memory_max == 32 * MiB
    result = host.run(roomy.wasm, stdin=SIEVE_N)
    assert result.ok and result.stdout == SIEVE_COUNT, result.message
    assert (
        host.run(roomy.wasm, stdin=b"20", args=["list"]).stdout == b"2\n3\n5\n7\n11\n13\n17\n19\n"
    )
    # Under an 8 MiB cap the same input cannot get its 10 MB, whatever the run's own limit.
    tight = host.admit(wasm, memory_cap=8 * MiB)
    failed = host.run(tight.wasm, stdin=SIEVE_N, limits=Limits(memory_bytes=256 * MiB))
    assert failed.error is ErrorKind.TRAP
    assert b"memory allocation of 10000001 bytes failed" in failed.stderr_tail
    assert failed.memory_bytes <= 8 * MiB
