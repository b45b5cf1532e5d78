"""Several daphne processes on one PostgreSQL and one Redis behave as one server.

Real processes: two daphne servers against the test database, nginx in front of them with the
compose proxy's configuration (deploy/nginx.conf), native workers and a plain protocol client
(docs/protocol.md) connected to each. Needs PostgreSQL and Redis (the in-memory channel layer
and SQLite are one process by design); CI sets both, and installs nginx (.ci/run).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from accounts import services as account_services
from campaigns.models import Campaign, Result, Task
from campaigns.services import campaign_start, kernel_upload
from ccgsc.processes import Platform, Proxy, free_port, nginx_binary, start_proxy
from tests.conftest import kernel_bytes
from tests.live import ROOT, start_server, subprocess_env
from tests.skips import skip_unless_ci
from tests.test_e2e import assert_each_task_done_exactly_once, completed
from tests.waiting import wait_for
from workers import liveness, scheduler
from workers.models import WorkerSession

pytestmark = [pytest.mark.live, pytest.mark.xdist_group("cluster")]

# compose.yaml runs daphne with these options behind nginx, and background jobs (here: the
# campaign's reducer) in Celery worker processes, not in the web processes.
DAPHNE_BEHIND_PROXY = ("--proxy-headers",)
JOBS_IN_CELERY = {"JOBS_INLINE": "false"}
SLOW = 60.0  # bound on any one wait (a loaded two-core machine runs two servers here)
# The kill test's task timeout: its leases' deadline (twice this) is far beyond the time a
# killed process's leases take to come back (workers.liveness.PROCESS_DEAD and a sweep).
LEASE_TASK_TIMEOUT = 60


@pytest.fixture
def cluster_services(transactional_db: None) -> None:
    """Skips in the embedded mode only; under CI (which sets both) it must run."""
    missing = [
        name
        for name, there in (
            ("DATABASE_URL (PostgreSQL)", connection.vendor == "postgresql"),
            ("REDIS_URL", bool(settings.REDIS_URL)),
        )
        if not there
    ]
    if missing:
        skip_unless_ci(f"several server processes need {' and '.join(missing)}: embedded mode")


@dataclass
class Cluster:
    run_dir: Path
    servers: list[Platform] = field(default_factory=list)
    proxy: Proxy | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    celery: subprocess.Popen[bytes] | None = None

    def server(self, port: int | None = None) -> Platform:
        platform = start_server(
            daphne_args=DAPHNE_BEHIND_PROXY, port=port, timeout=2 * SLOW, **JOBS_IN_CELERY
        )
        self.servers.append(platform)
        return platform

    def start_celery(self) -> None:
        """A Celery worker (compose.yaml's `celery` service) for the servers' jobs."""
        self.celery = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "ccgsc", "worker", "--concurrency=1"),
                *("--loglevel=WARNING", "--without-heartbeat", "--without-gossip"),
                "--without-mingle",
            ],
            cwd=ROOT,
            env=subprocess_env(**JOBS_IN_CELERY),
        )

    def start_proxy(self, ports: list[int]) -> Proxy:
        """nginx in front of the daphne processes on these ports (started or to be)."""
        if nginx_binary() is None:
            skip_unless_ci("nginx is not installed (Debian package nginx; .ci/run installs it)")
        self.proxy = start_proxy(ports, self.run_dir / "nginx")
        return self.proxy

    def worker(self, *servers: str, slots: int = 2) -> subprocess.Popen[bytes]:
        """A native worker given these server URLs (it moves to the next when one fails)."""
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "workers.native", "--server", ",".join(servers)),
                *("--slots", str(slots), "--quiet"),
            ],
            cwd=ROOT,
            env=self.servers[0].env,
        )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.proxy is not None:
            self.proxy.stop()
        if self.celery is not None:
            self.celery.terminate()
            try:
                self.celery.wait(20)
            except subprocess.TimeoutExpired:
                self.celery.kill()
                self.celery.wait(5)
        for server in self.servers:
            server.stop()


@pytest.fixture
def cluster(cluster_services: None, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(run_dir=tmp_path)
    try:
        yield c
    finally:
        c.stop()


class ProtocolClient:
    """The plain protocol of docs/protocol.md over a WebSocket, one message at a time: enough to
    hold leases and see what the server sends."""

    def __init__(self, base_url: str) -> None:
        self.ws: ClientConnection = ws_connect(
            base_url.replace("http", "ws", 1) + "/ws/work/", open_timeout=SLOW
        )
        self.send({"t": "hello", "v": 1, "kind": "native", "slots": 2, "agent": "cluster-test"})
        welcome = self.expect("welcome")
        self.session = int(welcome["session"])

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(msgpack.packb(message))

    def expect(self, kind: str) -> dict[str, Any]:
        """The next message of this kind (others, e.g. `idle`, are skipped); bounded."""
        deadline = time.monotonic() + SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} within {SLOW} s")
            try:
                frame = self.ws.recv(timeout=left)
            except TimeoutError:
                raise AssertionError(f"no {kind!r} within {SLOW} s") from None
            message: dict[str, Any] = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            if message["t"] == kind:
                return message
            if message["t"] == "error":
                raise AssertionError(f"server error: {message}")

    def take(self, n: int) -> list[int]:
        """Ask for n tasks and keep them (never answered): the leases stay with this session."""
        self.send({"t": "want", "n": n})
        return [int(t["lease"]) for t in self.expect("tasks")["tasks"]]

    def close(self) -> None:
        self.ws.close()


def api_post(base_url: str, path: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base_url}/api/v1{path}",
        method="POST",
        data=b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=SLOW) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def leased(campaign: Campaign) -> int:
    return Result.objects.filter(campaign=campaign, state=Result.State.LEASED).count()


def test_pause_on_one_process_cancels_leases_held_on_the_other(cluster, people, make_campaign):
    a, b = cluster.server(), cluster.server()
    campaign = make_campaign([f"t{i}" for i in range(20)], kernel="echo")
    _row, token = account_services.token_issue(
        organization=people.org, name="cluster", created_by=people.owner
    )
    on_b = ProtocolClient(b.url)
    on_a = ProtocolClient(a.url)
    try:
        held_b = on_b.take(2)
        held_a = on_a.take(2)
        assert held_b and held_a
        assert leased(campaign) == len(held_a) + len(held_b)

        # The pause goes through process A's API; process B's session is told.
        assert api_post(a.url, f"/campaigns/{campaign.pk}/pause", token)["state"] == "paused"
        cancel_b = on_b.expect("cancel")
        cancel_a = on_a.expect("cancel")
        assert sorted(cancel_b["leases"]) == sorted(held_b)
        assert sorted(cancel_a["leases"]) == sorted(held_a)
        assert "paused" in cancel_b["reason"]
        assert leased(campaign) == 0
    finally:
        on_a.close()
        on_b.close()


def open_sessions() -> list[int]:
    return list(
        WorkerSession.objects.filter(disconnected_at__isnull=True).values_list("pk", flat=True)
    )


def test_killing_a_server_process_mid_campaign_loses_nothing(cluster, people, make_campaign):
    # ~50 ms a task. A killed process cannot close its sessions: process B's sweeper (the
    # sweeper lock dies with A's database connection) closes them once A has not vouched for
    # them for liveness.PROCESS_DEAD, which puts their leases back in the queue long before
    # their deadline (2 x the task timeout); their workers meanwhile reconnect.
    iterations, n = 3_000_000, 400
    reducer = kernel_upload(
        organization=people.org, name="reduce", data=kernel_bytes("montecarlo_reduce")
    )
    campaign = make_campaign(
        [f"{i + 1} {iterations}" for i in range(n)],
        kernel="montecarlo",
        start=False,
        task_timeout=LEASE_TASK_TIMEOUT,
        max_attempts=6,
        reducer=reducer,
    )
    cluster.start_celery()
    b_port = free_port()
    a = cluster.server()
    proxy = cluster.start_proxy([a.port, b_port])
    b_url = f"http://127.0.0.1:{b_port}"
    # Process B does not run yet: nginx, and the worker given both processes, find A.
    cluster.worker(a.url, b_url)
    cluster.worker(proxy.url)
    cluster.worker(proxy.url)
    wait_for(
        lambda: len(open_sessions()) == 3, timeout=SLOW, what="three workers connected to process A"
    )
    on_a = open_sessions()
    b = cluster.server(port=b_port)
    cluster.worker(b.url)
    wait_for(
        lambda: len(open_sessions()) == 4,
        timeout=SLOW,
        what="a fourth worker connected to process B",
    )
    (on_b,) = set(open_sessions()) - set(on_a)

    campaign_start(campaign=campaign)

    def working_on_both() -> bool:
        busy = set(
            Result.objects.filter(
                campaign=campaign, state__in=[Result.State.LEASED, Result.State.RETURNED]
            ).values_list("session_id", flat=True)
        )
        return on_b in busy and bool(
            Result.objects.filter(
                campaign=campaign, state=Result.State.LEASED, session_id__in=on_a
            ).exists()
        )

    wait_for(
        working_on_both, timeout=SLOW, what="workers on both processes to hold or return tasks"
    )
    held_on_a = list(
        Result.objects.filter(
            campaign=campaign, state=Result.State.LEASED, session_id__in=on_a
        ).values_list("pk", flat=True)
    )
    killed_at = timezone.now()
    killed_clock = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    campaign.refresh_from_db()
    assert campaign.tasks_done < campaign.tasks_total, "the campaign ended before the kill"

    # The killed process's leases are back (requeued, maybe leased again or answered by then)
    # within PROCESS_DEAD and a sweep or two, far from their deadline.
    wait_for(
        lambda: (
            not Result.objects.filter(
                pk__in=held_on_a, state=Result.State.LEASED, session_id__in=on_a
            ).exists()
        ),
        timeout=SLOW,
        interval=0.2,
        what="process A's leases to come back",
    )
    back_after = time.monotonic() - killed_clock
    assert back_after < liveness.PROCESS_DEAD.total_seconds() + 25 < 2 * LEASE_TASK_TIMEOUT
    assert not WorkerSession.objects.filter(pk__in=on_a, disconnected_at__isnull=True).exists()
    # Released, not expired: no attempt was charged to anyone.
    assert not Result.objects.filter(campaign=campaign, error_kind=scheduler.LEASE_EXPIRED).exists()

    wait_for(lambda: completed(campaign), timeout=180, what="the campaign to complete on process B")
    assert_each_task_done_exactly_once(campaign)
    assert Task.objects.filter(campaign=campaign, state=Task.State.FAILED).count() == 0
    # Every worker survived the loss of its server and carries on in a new session on B.
    assert [w.poll() for w in cluster.workers] == [None] * 4
    assert WorkerSession.objects.filter(connected_at__gt=killed_at).count() >= len(on_a)

    # The Celery worker folded the results (pi estimate, points inside, points in all).
    def reduced() -> bool:
        campaign.refresh_from_db()
        return campaign.reduced_at is not None

    wait_for(reduced, timeout=SLOW, what="the reducer's job to run in the Celery worker")
    assert campaign.reduced_output is not None and campaign.error == ""
    assert bytes(campaign.reduced_output).split()[2] == str(n * iterations).encode()
