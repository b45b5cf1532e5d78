"""Serve the platform: daphne on a port, optionally with one native worker beside it (and, when
jobs go to Celery through REDIS_URL, one Celery worker, without which no job would run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from workers.protocol import DAPHNE_KEEPALIVE_ARGS, MAX_WEBSOCKET_MESSAGE


class Command(BaseCommand):
    help = (
        "Run the server (daphne) and, with --with-worker, one native worker process (and a "
        "Celery worker when REDIS_URL sends jobs to Celery)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--with-worker", action="store_true")
        parser.add_argument("--worker-slots", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        # The platform's daphne (ccgsc/server.py), as processes.py and the Dockerfile start it.
        from ccgsc.server import CommandLineInterface

        host, port = options["host"], options["port"]
        children: list[subprocess.Popen[bytes]] = []
        if settings.USE_CELERY_BROKER and options["with_worker"]:
            # REDIS_URL set (and not JOBS_INLINE): jobs (task generation, exports) are sent to
            # Celery, so a local trial needs a Celery worker or its campaigns never generate.
            celery = [sys.executable, "-m", "celery", "-A", "ccgsc", "worker"]
            children.append(subprocess.Popen([*celery, "-l", "warning", "--concurrency", "1"]))
            self.stdout.write(
                "REDIS_URL is set: jobs go to Celery; started a Celery worker beside the server "
                "(JOBS_INLINE=true runs them in the server instead)."
            )
        elif settings.USE_CELERY_BROKER:
            self.stderr.write(
                self.style.WARNING(
                    "REDIS_URL is set: jobs (task generation, exports) go to Celery, and none "
                    "runs until a worker does: start `celery -A ccgsc worker` beside this server, "
                    "or set JOBS_INLINE=true to run them in the server."
                )
            )
        if options["with_worker"]:
            cmd = [sys.executable, "-m", "workers.native", "--server", f"http://127.0.0.1:{port}"]
            if options["worker_slots"]:
                cmd += ["--slots", str(options["worker_slots"])]
            # The worker retries with backoff until the server below is listening.
            children.append(subprocess.Popen(cmd))
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
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
