"""Build the reference kernels: kernels/src/<name>.c|.rs -> kernels/build/<name>.wasm.

Usage (from the repository root, with the project venv):
    .venv/bin/python kernels/build.py            # build every kernel
    .venv/bin/python kernels/build.py primes     # build only the named kernels
    .venv/bin/python kernels/build.py --check    # rebuild in a temporary directory and
                                                 # fail if a committed binary differs

Every .c file in kernels/src/ is one kernel. The toolchain is the `ziglang` PyPI package
(clang + wasi-libc for wasm32-wasi). Every .rs file is one Rust kernel, built the way a Rust
author builds one by default (Debian's `rustc`, `libstd-rust-dev-wasm32` and `lld`; `rustc
--target wasm32-wasi`): its memory declares no maximum, which the platform sets at upload. When
that toolchain is not installed the Rust kernels are skipped (their committed .wasm stays). Builds are deterministic: same sources and zig version,
same bytes. After building, each module is checked against the kernel contract (exports
`_start` and `memory`, declares a memory maximum, imports only WASI preview 1 and the
`ccgsc` host functions with the right signatures). Any failure exits non-zero.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNELS_DIR = Path(__file__).resolve().parent
REPO = KERNELS_DIR.parent
SRC = KERNELS_DIR / "src"
OUT = KERNELS_DIR / "build"

MAX_MEMORY = 64 * 1024 * 1024  # declared maximum of every reference kernel
PLATFORM_MEMORY_CAP = 256 * 1024 * 1024
STACK_SIZE = 65536

CFLAGS = [
    "--target=wasm32-wasi",
    "-O2",
    "-s",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ffp-contract=off",  # bit-identical floating point, whatever the optimiser does
    f"-Wl,-z,stack-size={STACK_SIZE}",
]

# Rust kernels: an optimised build with symbols stripped (the default output carries 5 MB of
# libstd debug information), otherwise rustc's defaults, memory limits included.
RUSTFLAGS = ["--target", "wasm32-wasi", "--edition", "2021", "-O", "-C", "strip=symbols"]

# Allowed host imports: module "ccgsc", name -> (params, results) as wasm type names.
CCGSC_IMPORTS = {"progress": (["f64"], []), "checkpoint": (["i32", "i32"], ["i32"])}


@dataclass(frozen=True)
class Kernel:
    name: str
    source: str  # file name in kernels/src/
    max_memory: bool = True  # declare a memory maximum (uploads without one get the cap)

    @property
    def rust(self) -> bool:
        return self.source.endswith(".rs")


# Kernels that are not simply src/<name>.c -> build/<name>.wasm.
EXTRA = [
    # echo without a memory maximum: the upload check must reject it.
    Kernel("nomax", "echo.c", max_memory=False),
]


def all_kernels() -> list[Kernel]:
    kernels = [Kernel(p.stem, p.name) for p in sorted(SRC.glob("*.c"))]
    kernels += [Kernel(p.stem, p.name, max_memory=False) for p in sorted(SRC.glob("*.rs"))]
    kernels += EXTRA
    names = [k.name for k in kernels]
    if len(set(names)) != len(names):
        raise SystemExit(f"build.py: duplicate kernel names in {names}")
    return sorted(kernels, key=lambda k: k.name)


def zig_env() -> dict[str, str]:
    env = dict(os.environ)
    cache = env.get("ZIG_GLOBAL_CACHE_DIR") or str(REPO / "var" / "zig-cache")
    env["ZIG_GLOBAL_CACHE_DIR"] = cache
    # Without this zig cc drops a .zig-cache directory in the working directory.
    env.setdefault("ZIG_LOCAL_CACHE_DIR", cache)
    return env


def rustc() -> str | None:
    """Debian's rustc with the wasm32-wasi standard library, or None. $RUSTC wins; else
    /usr/bin/rustc before PATH (a rustup rustc first on PATH may lack the target)."""
    for candidate in (os.environ.get("RUSTC"), "/usr/bin/rustc", shutil.which("rustc")):
        if not candidate or not Path(candidate).exists():
            continue
        proc = subprocess.run(
            [candidate, "--print", "sysroot"], capture_output=True, text=True, check=False
        )
        sysroot = Path(proc.stdout.strip())
        if proc.returncode == 0 and (sysroot / "lib/rustlib/wasm32-wasi").is_dir():
            return candidate
    return None


def compile_kernel(kernel: Kernel, out_dir: Path) -> Path:
    """Compile one kernel into out_dir atomically; raise RuntimeError with the compiler's
    output."""
    target = out_dir / f"{kernel.name}.wasm"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{kernel.name}.", suffix=".wasm", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    # Relative paths and a fixed working directory keep the output independent of checkout path.
    if kernel.rust:
        cmd = [rustc() or "rustc", *RUSTFLAGS, "-o", str(tmp), f"src/{kernel.source}"]
    else:
        flags = list(CFLAGS)
        if kernel.max_memory:
            flags.append(f"-Wl,--max-memory={MAX_MEMORY}")
        cmd = [sys.executable, "-m", "ziglang", "cc", *flags, "-o", str(tmp)]
        cmd.append(f"src/{kernel.source}")
    try:
        proc = subprocess.run(
            cmd, cwd=KERNELS_DIR, env=zig_env(), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or proc.stderr.strip():
            raise RuntimeError(
                f"{kernel.name}: compiler failed (exit {proc.returncode})\n"
                f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_contract(kernel: Kernel, path: Path) -> None:
    """Raise RuntimeError unless the module follows the kernel contract."""
    import wasmtime  # the project dependency; imported late so --help works without it

    module = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    problems = []
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("_start"), wasmtime.FuncType):
        problems.append("does not export function _start")
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        problems.append("does not export memory")
    else:
        maximum = memory.limits.max  # in 64 KiB pages, None when undeclared
        if kernel.max_memory and (maximum is None or maximum * 65536 > PLATFORM_MEMORY_CAP):
            problems.append(f"memory maximum {maximum} pages is missing or above the cap")
        if not kernel.max_memory and maximum is not None:
            problems.append(f"declares a memory maximum ({maximum} pages) but must not")
    for imp in module.imports:
        if imp.module == "wasi_snapshot_preview1":
            continue
        sig = CCGSC_IMPORTS.get(imp.name or "") if imp.module == "ccgsc" else None
        ty = imp.type
        if (
            sig is None
            or not isinstance(ty, wasmtime.FuncType)
            or ([str(t) for t in ty.params], [str(t) for t in ty.results]) != sig
        ):
            problems.append(f"unexpected import {imp.module}.{imp.name}: {ty}")
    if problems:
        raise RuntimeError(f"{kernel.name}: " + "; ".join(problems))


def zig_version() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"],
        env=zig_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"build.py: `python -m ziglang version` failed:\n{proc.stderr}")
    return proc.stdout.strip()


def build(kernels: list[Kernel], out_dir: Path) -> list[tuple[Kernel, Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"compiling {len(kernels)} kernels with zig {zig_version()} cc into {out_dir}:"
        f" {' '.join(k.name for k in kernels)}",
        flush=True,
    )
    # zig caches wasi-libc once (about 30 s on a cold cache), then each kernel takes well
    # under a second; compile in parallel, report in a fixed order.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = [(k, pool.submit(compile_kernel, k, out_dir)) for k in kernels]
        results = []
        failed = False
        for kernel, future in futures:
            try:
                path = future.result()
                check_contract(kernel, path)
            except RuntimeError as exc:
                print(f"FAILED {exc}", file=sys.stderr)
                failed = True
                continue
            results.append((kernel, path))
    if failed:
        raise SystemExit("build.py: some kernels failed to build")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="kernels to build (default: all)")
    parser.add_argument(
        "--check", action="store_true", help="verify kernels/build/*.wasm are up to date"
    )
    args = parser.parse_args(argv)

    kernels = all_kernels()
    if not args.names and rustc() is None:
        skipped = [k.name for k in kernels if k.rust]
        if skipped:
            print(
                f"skipping the Rust kernels {', '.join(skipped)}: no rustc with the wasm32-wasi "
                "target (apt-get install rustc libstd-rust-dev-wasm32 lld)",
                file=sys.stderr,
            )
        kernels = [k for k in kernels if not k.rust]
    if args.names:
        known = {k.name: k for k in kernels}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"unknown kernels: {', '.join(unknown)} (known: {', '.join(known)})")
        kernels = [known[n] for n in args.names]
    try:
        import ziglang  # noqa: F401
    except ImportError:
        raise SystemExit(
            "build.py: the ziglang package is missing; run `make venv` (or use .venv/bin/python)"
        ) from None

    if args.check:
        with tempfile.TemporaryDirectory(prefix="ccgsc-kernels-") as tmp:
            stale = []
            for _kernel, path in build(kernels, Path(tmp)):
                committed = OUT / path.name
                ok = committed.is_file() and committed.read_bytes() == path.read_bytes()
                print(f"{'ok   ' if ok else 'STALE'} build/{path.name}")
                if not ok:
                    stale.append(path.name)
        if stale:
            print(f"stale: {', '.join(stale)}; run `make kernels`", file=sys.stderr)
            return 1
        return 0

    total = 0
    for kernel, path in build(kernels, OUT):
        size = path.stat().st_size
        total += size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        memo = "" if kernel.max_memory else "  (no memory maximum)"
        print(
            f"built build/{path.name:<20} {size:>7} bytes  sha256:{digest}"
            f"  <- src/{kernel.source}{memo}"
        )
    print(f"{len(kernels)} kernels, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
