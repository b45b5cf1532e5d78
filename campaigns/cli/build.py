"""`ccgsc kernel build` and `ccgsc kernel new`: from a C, C++ or Rust source file to a kernel.

C and C++ go through the `ziglang` package (clang + wasi-libc), run with this Python, so no venv
needs to be active; `ccgsc.h` ships inside this package, so builds work from any directory.
Rust goes through a rustc that has the `wasm32-wasi` standard library (Debian: `rustc`,
`libstd-rust-dev-wasm32` and `lld`, all offline), or rustup's `wasm32-wasip1`.

No Django here: this module runs on a plain `pip install ccgsc`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from campaigns.cli import files

MEMORY_MAX_MIB = 64  # what the reference kernels declare; the platform caps at 256 MiB
STACK_SIZE = 65536
LANGS = {".c": "c", ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".rs": "rust"}
TEMPLATE_SUFFIX = {"c": ".c", "cpp": ".cpp", "rust": ".rs"}
RUST_PACKAGES = (
    "rustc, libstd-rust-dev-wasm32 and lld (apt-get install rustc libstd-rust-dev-wasm32 lld)"
)
# Rust's name for WASI preview 1: `wasm32-wasi` until 1.78 (Debian's), `wasm32-wasip1` since.
RUST_TARGETS = ("wasm32-wasip1", "wasm32-wasi")
RUSTC_CANDIDATES = ("/usr/bin/rustc",)  # Debian's, which the offline packages extend


class BuildError(Exception):
    """The build could not run or the compiler refused the source; the message says why."""


@dataclass(frozen=True)
class Built:
    output: Path
    lang: str
    command: list[str]


def data_dir() -> Path:
    """The package's data directory: ccgsc.h and the templates (a real directory: setuptools
    installs package data as plain files)."""
    return Path(str(resources.files("campaigns.cli") / "data"))


def header_dir() -> Path:
    return data_dir()


def lang_of(path: Path) -> str:
    lang = LANGS.get(path.suffix.lower())
    if lang is None:
        raise BuildError(
            f"{path.name}: cannot tell the language from {path.suffix or 'no extension'!r}; "
            "use .c, .cpp (.cc, .cxx) or .rs"
        )
    return lang


def zig_env() -> dict[str, str]:
    """zig's cache: $ZIG_GLOBAL_CACHE_DIR, else the user's cache directory. The local cache goes
    there too, or zig leaves a .zig-cache directory wherever the command was run."""
    env = dict(os.environ)
    cache = env.get("ZIG_GLOBAL_CACHE_DIR") or str(
        Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zig"
    )
    env["ZIG_GLOBAL_CACHE_DIR"] = cache
    env.setdefault("ZIG_LOCAL_CACHE_DIR", cache)
    return env


def zig_cache_cold() -> bool:
    """True before zig's first build here: it then compiles wasi-libc (and libc++ for C++)
    into its cache, which takes a minute or more once."""
    cache = Path(zig_env()["ZIG_GLOBAL_CACHE_DIR"])
    return not (cache / "o").is_dir()


def zig_command(lang: str, source: Path, output: Path, memory_mib: int) -> list[str]:
    try:
        import ziglang  # noqa: F401  (only to say clearly when it is missing)
    except ImportError:
        raise BuildError(
            f"C and C++ builds need the ziglang package: {sys.executable} -m pip install ziglang"
        ) from None
    flags = [
        "--target=wasm32-wasi",
        "-O2",
        "-s",
        "-ffp-contract=off",  # the same floating-point results in every host
        f"-Wl,-z,stack-size={STACK_SIZE}",
        f"-Wl,--max-memory={memory_mib * 1024 * 1024}",
        "-I",
        str(header_dir()),
    ]
    if lang == "cpp":
        flags.append("-fno-exceptions")  # wasm32-wasi libc++ has no exceptions
    driver = "c++" if lang == "cpp" else "cc"
    return [sys.executable, "-m", "ziglang", driver, *flags, "-o", str(output), str(source)]


def find_rustc() -> tuple[str, str]:
    """A rustc with a WASI preview 1 standard library, and that target's name. $CCGSC_RUSTC
    first, then Debian's /usr/bin/rustc, then the one on PATH."""
    candidates = [os.environ.get("CCGSC_RUSTC"), *RUSTC_CANDIDATES, shutil.which("rustc")]
    seen: set[str] = set()
    for rustc in candidates:
        if not rustc or rustc in seen or not Path(rustc).exists():
            continue
        seen.add(rustc)
        proc = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            continue
        rustlib = Path(proc.stdout.strip()) / "lib" / "rustlib"
        for target in RUST_TARGETS:
            if (rustlib / target / "lib").is_dir():
                return rustc, target
    raise BuildError(
        "Rust builds need a rustc with the wasm32-wasi standard library. On Debian/Ubuntu, "
        f"offline: install {RUST_PACKAGES}; with rustup: rustup target add wasm32-wasip1."
    )


def rust_command(source: Path, output: Path, memory_mib: int) -> list[str]:
    rustc, target = find_rustc()
    return [
        rustc,
        "--target",
        target,
        "--edition",
        "2021",
        "-O",
        "-C",
        "strip=symbols",
        "-C",
        f"link-arg=--max-memory={memory_mib * 1024 * 1024}",
        "-o",
        str(output),
        str(source),
    ]


def build(source: Path, output: Path | None = None, *, memory_mib: int = MEMORY_MAX_MIB) -> Built:
    """Compile `source` into a WASI command module with a declared memory maximum."""
    if not source.is_file():
        raise BuildError(f"{source}: no such file")
    if memory_mib < 1 or memory_mib > 4096:
        raise BuildError("--memory must be between 1 and 4096 MiB")
    lang = lang_of(source)
    output = output or source.with_suffix(".wasm")
    output.parent.mkdir(parents=True, exist_ok=True)
    # Beside the output, so the finished kernel moves in one step; a device or pipe
    # (-o /dev/null) is written into instead, from a temporary directory.
    spool = Path(tempfile.gettempdir()) if files.is_special(output) else output.parent
    tmp = spool / f".{output.name}.{os.getpid()}.tmp"
    if lang == "rust":
        command, env = rust_command(source, tmp, memory_mib), None
    else:
        command, env = zig_command(lang, source, tmp, memory_mib), zig_env()
    try:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        except OSError as exc:
            raise BuildError(f"cannot run {command[0]}: {exc}") from None
        if proc.returncode != 0 or not tmp.exists():
            if "linker" in proc.stderr and "not found" in proc.stderr and lang == "rust":
                raise BuildError(f"the Rust linker is missing: install {RUST_PACKAGES}")
            raise BuildError(
                f"{source.name}: the compiler failed (exit {proc.returncode})\n"
                f"{proc.stdout}{proc.stderr}".rstrip()
            )
        files.install(tmp, output)  # a failed build never leaves a half-written kernel
    finally:
        tmp.unlink(missing_ok=True)
    return Built(output=output, lang=lang, command=command)


def template(lang: str) -> str:
    name = "kernel" + TEMPLATE_SUFFIX[lang]
    return (data_dir() / "templates" / name).read_text()


def new(lang: str, path: Path | None, *, force: bool = False) -> Path:
    """Write a starting kernel for `lang` at `path` (default kernel.c/.cpp/.rs)."""
    target = path or Path("kernel" + TEMPLATE_SUFFIX[lang])
    if target.exists() and not force:
        raise BuildError(f"{target} exists; choose another name or pass --force")
    target.write_text(template(lang))
    return target
