"""`ccgsc-worker` / `python -m workers.native`: the native worker's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .client import CACHE_MAX, Options, Worker

log = logging.getLogger("ccgsc.worker")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size(text: str) -> int:
    """A size such as 2G, 500M or 1073741824 (bytes); at least 64M, so a kernel fits."""
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in _UNITS else ""
    try:
        value = int(float(number[: len(number) - len(unit)]) * _UNITS[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 500M)") from None
    if value < 64 * 1024**2:
        raise argparse.ArgumentTypeError("must be at least 64M")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccgsc-worker",
        description=(
            "Join a CCGSC server's compute pool: run its campaigns' WebAssembly kernels "
            "in wasmtime, one task per slot, and its gpu kernels through wgpu where there is a "
            "GPU (--gpu). Ctrl-C finishes running tasks and exits "
            "(press it again to exit at once)."
        ),
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("CCGSC_SERVER", "http://127.0.0.1:8000"),
        help="server root URL, or several comma-separated (the processes of one deployment "
        "without a load balancer: the worker moves to the next when a connection is lost) "
        "(default: $CCGSC_SERVER or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CCGSC_TOKEN") or None,
        help="organization API token: also run the organization's unapproved campaigns "
        "(default: $CCGSC_TOKEN; prefer the variable, arguments are visible to other users)",
    )
    parser.add_argument(
        "--slots",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="tasks run in parallel (default: the number of CPUs, %(default)s here)",
    )
    parser.add_argument("--campaign", type=_positive_int, help="only run this campaign's tasks")
    parser.add_argument(
        "--http", action="store_true", help="use the HTTP fallback instead of the WebSocket"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where kernels, static data and compiled modules are cached (default: ~/.cache/ccgsc)",
    )
    parser.add_argument(
        "--cache-max",
        type=_size,
        default=CACHE_MAX,
        metavar="SIZE",
        help="the most disk the cache may take, e.g. 500M or 10G; the least recently used "
        "kernels and data go first (default: 2G)",
    )
    parser.add_argument(
        "--max-tasks", type=_positive_int, help="exit after sending this many results"
    )
    parser.add_argument(
        "--exit-when-idle",
        type=_non_negative_float,
        metavar="SECONDS",
        help="exit after having no task in hand for this long",
    )
    parser.add_argument(
        "--grace",
        type=_non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="on shutdown, how long running tasks may finish (default: %(default)s)",
    )
    parser.add_argument(
        "--gpu",
        choices=["auto", "software", "off"],
        default=os.environ.get("CCGSC_GPU", "auto"),
        help="gpu kernels (WGSL, needs `pip install 'ccgsc[gpu]'`): auto runs them on a real "
        "GPU when there is one; software also on a software adapter (Mesa's lavapipe: the CPU "
        "emulating a GPU, slow) when there is none; off never (default: $CCGSC_GPU or auto)",
    )
    parser.add_argument(
        "--memory",
        type=_size,
        metavar="SIZE",
        help="the most memory a kernel may have, e.g. 1G: the server sends no campaign whose "
        "kernel declares more (default: not stated)",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: libraries too)"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"ccgsc-worker {__version__}")
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level if verbose > 1 else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Our own lines at the chosen level; libraries (websockets, httpx) only when asked twice.
    logging.getLogger("ccgsc.worker").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the worker, return the exit status:
    0 after a clean stop, 2 for usage errors or a server that refuses us for good
    (bad token, protocol version), 130/143 after a second SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    options = Options(
        server=args.server,
        token=args.token,
        slots=args.slots,
        campaign=args.campaign,
        http_only=args.http,
        cache_dir=args.cache_dir,
        cache_max=args.cache_max,
        max_tasks=args.max_tasks,
        exit_when_idle=args.exit_when_idle,
        grace=args.grace,
        gpu=args.gpu,
        memory=args.memory,
    )
    try:
        worker = Worker(options)
        code = asyncio.run(worker.run())
    except (ValueError, PermissionError) as exc:  # a bad URL, an unusable cache directory
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler was installed
        return 130
    if worker.threads_busy():
        # A kernel that did not stop: the interpreter would wait for its thread forever.
        log.warning("a kernel is still running; exiting without waiting for it")
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
