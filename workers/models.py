"""Worker sessions: one connected browser tab or native worker process."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import Organization, User


class WorkerSession(models.Model):
    class Kind(models.TextChoices):
        BROWSER = "browser"
        NATIVE = "native"

    class Transport(models.TextChoices):
        WEBSOCKET = "ws", "WebSocket"
        HTTP = "http", "HTTP fallback"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    transport = models.CharField(
        max_length=4, choices=Transport.choices, default=Transport.WEBSOCKET
    )
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set when the worker authenticated with an organization's API token: it may then work on
    # that organization's unapproved campaigns too.
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    site_id = models.BigIntegerField(null=True, blank=True)
    slots = models.PositiveSmallIntegerField(default=1)
    # Browsers run JavaScript kernels too; native workers only WebAssembly.
    accepts_js = models.BooleanField(default=False)
    # Capabilities from its hello: its WebGPU adapter (protocol.GpuInfo as a map; null: it
    # runs no gpu kernels) and the memory it gives a kernel at most (null: not stated). The
    # scheduler sends gpu campaigns only to sessions with an adapter, and no campaign whose
    # kernel needs more memory (or larger GPU buffers) than offered.
    gpu = models.JSONField(null=True, blank=True)
    memory = models.PositiveBigIntegerField(null=True, blank=True)
    # A worker may ask to work for one campaign only (e.g. an owner testing a kernel).
    only_campaign_id = models.BigIntegerField(null=True, blank=True)
    agent = models.CharField(max_length=200, blank=True)
    # The protocol version its hello named (workers/protocol.py): the HTTP fallback decodes
    # each later request's messages in it.
    protocol_version = models.PositiveSmallIntegerField(default=1)
    # The channel-layer name of the WebSocket connection serving it (any server process):
    # pushes meant for this session alone (cancelled leases, campaign changes) go there.
    # Empty for the HTTP fallback, which gets no pushes.
    channel = models.CharField(max_length=100, blank=True)
    # The server process holding its WebSocket (operations.ProcessHeartbeat.key; not a foreign
    # key: a row may be gone or not written yet). The process vouches for all its sessions at
    # once (workers.liveness); empty for the HTTP fallback, which is seen at every request.
    # A database default too: a server of an earlier version (a rolling update) inserts
    # sessions without it.
    process = models.CharField(max_length=32, blank=True, default="", db_default="")
    # HTTP-fallback sessions present this secret (hashed here) with every request.
    secret_hash = models.CharField(max_length=64, blank=True)
    # Who is behind it (workers.identity): the client's network origin (an address prefix)
    # and a digest of its browser profile cookie; null when unknown (a test at the ASGI
    # boundary, a native worker has no profile). Replicas of a task go to distinct ones.
    origin = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 (NULL = unknown: equal to nothing in SQL)
    profile = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001 (as origin)
    # Lease discipline (workers.connection): how many leases the session may hold, earned by
    # results returned in time; its expired leases in a row; no work until benched_until.
    lease_allowance = models.PositiveIntegerField(default=0)
    leases_expired = models.PositiveIntegerField(default=0)
    benched_until = models.DateTimeField(null=True, blank=True)

    connected_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    disconnected_at = models.DateTimeField(null=True, blank=True)

    # Metrics, flushed by the connection every few seconds rather than per task.
    tasks_done = models.PositiveIntegerField(default=0)
    tasks_failed = models.PositiveIntegerField(default=0)
    busy_ms = models.PositiveBigIntegerField(default=0)
    # Panther's "downtime": time the session had free slots and no task to run.
    idle_ms = models.PositiveBigIntegerField(default=0)
    avg_task_ms = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["last_seen_at"],
                condition=models.Q(disconnected_at__isnull=True),
                name="session_connected",
            ),
            # Open sessions per server process (the sweeper closes a dead process's).
            models.Index(
                fields=["process"],
                condition=models.Q(disconnected_at__isnull=True),
                name="session_open_process",
            ),
            # Open sessions per network origin (the per-origin caps at hello).
            models.Index(
                fields=["origin"],
                condition=models.Q(disconnected_at__isnull=True),
                name="session_open_origin",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} session {self.pk}"

    @property
    def is_value_session(self) -> bool:
        """Panther's value session: it completed at least one task."""
        return self.tasks_done > 0
