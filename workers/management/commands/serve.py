"""Serve the platform: daphne on a port, optionally with one native worker beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from django.core.management.base import BaseCommand

from workers.protocol import DAPHNE_KEEPALIVE_ARGS, MAX_WEBSOCKET_MESSAGE


class Command(BaseCommand):
    help = "Run the server (daphne) and, with --with-worker, one native worker process."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--with-worker", action="store_true")
        parser.add_argument("--worker-slots", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        # The platform's daphne (ccgsc/server.py), as processes.py and the Dockerfile start it.
        from ccgsc.server import CommandLineInterface

        host, port = options["host"], options["port"]
        worker: subprocess.Popen[bytes] | None = None
        if options["with_worker"]:
            cmd = [sys.executable, "-m", "workers.native", "--server", f"http://127.0.0.1:{port}"]
            if options["worker_slots"]:
                cmd += ["--slots", str(options["worker_slots"])]
            # The worker retries with backoff until the server below is listening.
            worker = subprocess.Popen(cmd)
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104
        self.stdout.write(self.style.SUCCESS(f"CCGSC is running at http://{shown}:{port}/"))
        try:
            CommandLineInterface().run(
                [
                    "-b",
                    host,
                    "-p",
                    str(port),
                    # No --proxy-headers: this server faces its clients directly, and daphne
                    # would take any client's own X-Forwarded-For as its address (and so its
                    # network origin, which keeps replicas apart). Behind a proxy, list it in
                    # TRUSTED_PROXY_ADDRESSES instead (workers/identity.py).
                    # Result batches may be as large as the protocol's frame limit; a larger one
                    # is read (up to twice that) to be answered with the too_large error.
                    "--websocket-max-message-size",
                    str(MAX_WEBSOCKET_MESSAGE),
                    "--websocket-max-frame-size",
                    str(MAX_WEBSOCKET_MESSAGE),
                    *DAPHNE_KEEPALIVE_ARGS,
                    "ccgsc.asgi:application",
                ]
            )
        finally:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
