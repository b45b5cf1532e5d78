"""Starting the platform as real processes: a daphne server and native workers beside it.

Used by the end-to-end tests (tests/live.py) and the benchmarks (bench/), which differ only in
the environment they give the processes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from workers.protocol import DAPHNE_KEEPALIVE_ARGS, MAX_WEBSOCKET_MESSAGE

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
    # The checkout whose code the server and its workers run (a benchmark's earlier commit).
    root: Path = ROOT

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
            cwd=self.root,
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


def start_platform(
    env: dict[str, str],
    *,
    timeout: float = 120.0,
    daphne_args: tuple[str, ...] = (),
    port: int | None = None,
    root: Path = ROOT,
) -> Platform:
    """The platform's daphne (ccgsc.server) on 127.0.0.1 (on `port`, or a free one), returned
    once /api/v1/status answers (`daphne_args`: more daphne options, e.g. --proxy-headers
    behind a proxy).

    `timeout` bounds a start that is merely slow (on a loaded machine importing Django and
    answering the first request can take tens of seconds); a daphne that exits fails at once."""
    port = port or free_port()
    # The platform's daphne (ccgsc/server.py); a commit from before it had daphne's own.
    server = "ccgsc.server" if (root / "ccgsc" / "server.py").exists() else "daphne"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            server,
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--websocket-max-message-size",
            str(MAX_WEBSOCKET_MESSAGE),
            "--websocket-max-frame-size",
            str(MAX_WEBSOCKET_MESSAGE),
            *DAPHNE_KEEPALIVE_ARGS,
            *daphne_args,
            "ccgsc.asgi:application",
        ],
        cwd=root,  # `root`: another checkout's code (a benchmark of an earlier commit)
        env=env,
        stdout=subprocess.DEVNULL,
    )
    platform = Platform(port=port, proc=proc, env=env, root=root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        try:
            # Once daphne listens, this waits for its answer (the first one is slow).
            status = f"{platform.url}/api/v1/status"
            with urllib.request.urlopen(status, timeout=max(1.0, deadline - time.monotonic())) as r:  # noqa: S310
                if r.status == 200:
                    return platform
        except OSError:
            # Not listening yet (connection refused): look again shortly.
            time.sleep(0.1)
    platform.stop()
    raise RuntimeError(f"daphne did not start within {timeout} s")


# --- nginx in front of several daphne processes --------------------------------------------------

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
# What deploy/nginx.conf says only for compose (Docker's DNS, the `web` service's replicas, port
# 80); start_proxy replaces exactly these lines and runs the rest of the file unchanged.
_COMPOSE_ONLY = {
    "resolver": re.compile(r"^resolver .*;$", re.MULTILINE),
    "upstream": re.compile(r"^    server web:8000 resolve;$", re.MULTILINE),
    "listen": re.compile(r"^    listen 80;$", re.MULTILINE),
}


def nginx_binary() -> str | None:
    """nginx on this machine (Debian's package installs /usr/sbin/nginx), or None."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def proxy_config(upstream_ports: list[int], port: int, run_dir: Path) -> str:
    """deploy/nginx.conf (the compose proxy's server block) as a whole nginx.conf for a process
    of our own: listening on 127.0.0.1:`port`, balancing over daphne processes on
    `upstream_ports`, with its pid file, logs and temporary files under `run_dir`."""
    site = NGINX_CONF.read_text()
    for name, pattern in _COMPOSE_ONLY.items():
        if len(pattern.findall(site)) != 1:
            raise RuntimeError(f"deploy/nginx.conf changed: its {name} line is not found once")
    site = _COMPOSE_ONLY["resolver"].sub("", site)
    # A process that stops answering is skipped for a second, then tried again.
    servers = "\n".join(
        f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;" for p in upstream_ports
    )
    site = _COMPOSE_ONLY["upstream"].sub(lambda _m: servers, site)
    site = _COMPOSE_ONLY["listen"].sub(f"    listen 127.0.0.1:{port};", site)
    temp = "\n".join(
        f"    {kind}_temp_path {run_dir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would switch to `nobody`, who cannot use run_dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {run_dir / 'nginx.pid'};\n"
        f"error_log {run_dir / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n"
    )


@dataclass
class Proxy:
    port: int
    proc: subprocess.Popen[bytes]
    run_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_proxy(upstream_ports: list[int], run_dir: Path, *, timeout: float = 30.0) -> Proxy:
    """nginx (deploy/nginx.conf) on a free port in front of the daphne processes on
    `upstream_ports`, returned once /api/v1/status answers through it."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    port = free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(proxy_config(upstream_ports, port, run_dir))
    proc = subprocess.Popen(
        [nginx, "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")],
        stdout=subprocess.DEVNULL,
    )
    proxy = Proxy(port=port, proc=proc, run_dir=run_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (run_dir / "error.log").read_text() if (run_dir / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {log[-2000:]}")
        try:
            with urllib.request.urlopen(f"{proxy.url}/api/v1/status", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return proxy
        except OSError:
            time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"nginx did not answer within {timeout} s")
