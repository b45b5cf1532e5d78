"""Starting the platform as real processes: a daphne server and native workers beside it.

Used by the end-to-end tests (tests/live.py) and the benchmarks (bench/), which differ only in
the environment they give the processes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from workers.protocol import MAX_WEBSOCKET_MESSAGE

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Platform:
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker(self, *args: str, slots: int = 2) -> subprocess.Popen[bytes]:
        """Start a native worker process against this server."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.native",
                "--server",
                self.url,
                "--slots",
                str(slots),
                "--quiet",
                *args,
            ],
            cwd=ROOT,
            env=self.env,
        )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.workers, self.proc]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.proc]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def start_platform(env: dict[str, str], *, timeout: float = 30.0) -> Platform:
    """A daphne server on a free 127.0.0.1 port, returned once /api/v1/status answers."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--websocket-max-message-size",
            str(MAX_WEBSOCKET_MESSAGE),
            "--websocket-max-frame-size",
            str(MAX_WEBSOCKET_MESSAGE),
            "ccgsc.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    platform = Platform(port=port, proc=proc, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{platform.url}/api/v1/status", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return platform
        except OSError:
            time.sleep(0.1)
    platform.stop()
    raise RuntimeError(f"daphne did not start within {timeout} s")
