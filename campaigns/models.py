"""Kernels, campaigns, tasks and results: the work an organization brings to the pool.

A Task is one unit of work (its input bytes). A Result is one *replica* of a task, on BOINC's
model: it is created `unsent` when the task needs another answer, leased to one worker session,
and filled with that worker's output. With the default policy (quorum 1) a task has one Result;
replication creates more. Keeping leases on Result rows means leasing is one UPDATE of rows
found through a partial index of unsent replicas, and late or duplicate answers are recognised
by the row's state alone.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, User
from accounts.tenancy import TenantQuerySet


class KernelQuerySet(TenantQuerySet["Kernel"]):
    tenant_path = "organization"


class CampaignQuerySet(TenantQuerySet["Campaign"]):
    tenant_path = "organization"

    def public(self) -> CampaignQuerySet:
        """Campaigns a platform admin approved that have run: their names are public (the
        landing page lists them). Drafts and unapproved ones are their organization's."""
        return self.filter(approved=True, state__in=Campaign.PUBLIC_STATES)


class TaskQuerySet(TenantQuerySet["Task"]):
    tenant_path = "campaign__organization"


class ResultQuerySet(TenantQuerySet["Result"]):
    tenant_path = "campaign__organization"


class Blob(models.Model):
    """Immutable content-addressed bytes (kernel modules, static data), served by hash with
    immutable caching. Shared between organizations: the hash reveals nothing the owner of the
    bytes does not already know, and rows that reference a blob carry the tenancy."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    data = models.BinaryField()
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size} bytes)"


class Kernel(models.Model):
    """An immutable program owned by an organization; its bytes are the blob named by sha256."""

    class Kind(models.TextChoices):
        WASM = "wasm", "WebAssembly (WASI)"
        JS = "js", "JavaScript (browsers only)"
        GPU = "gpu", "WebGPU compute (WGSL)"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="kernels")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=4, choices=Kind.choices, default=Kind.WASM)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="+")
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.PositiveBigIntegerField()
    memory_max = models.PositiveBigIntegerField(null=True, blank=True)
    # Provenance: the sha256 of the module as uploaded, when the platform rewrote it (it
    # declared no memory maximum and got the platform's cap); empty when stored as uploaded.
    original_sha256 = models.CharField(max_length=64, blank=True, default="")
    imports = models.JSONField(default=list, blank=True)
    # Kind gpu: the manifest (kernelhost.gpu.GpuManifest, defaults filled in) validated with
    # the WGSL at upload; workers receive it in the campaign descriptor. Null for other kinds.
    manifest = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = KernelQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "sha256"], name="kernel_once_per_org")
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sha256[:12]})"


class Campaign(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class InputSource(models.TextChoices):
        GENERATOR = "generator", "Generator kernel"
        FILE = "file", "Uploaded task file"
        API = "api", "Tasks added through the API"

    class InputState(models.TextChoices):
        NONE = "none", "No input yet"
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="campaigns"
    )
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    # RESTRICT, not PROTECT: a kernel in use cannot be deleted on its own, but deleting the
    # organization deletes its campaigns and kernels together.
    kernel = models.ForeignKey(Kernel, on_delete=models.RESTRICT, related_name="campaigns")
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    static_data = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    input_source = models.CharField(
        max_length=10, choices=InputSource.choices, default=InputSource.API
    )
    generator = models.ForeignKey(
        Kernel, null=True, blank=True, on_delete=models.RESTRICT, related_name="+"
    )
    generator_args = models.JSONField(default=list, blank=True)
    input_state = models.CharField(
        max_length=10, choices=InputState.choices, default=InputState.NONE
    )

    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT)
    # Why the campaign failed (generator crash, reducer error...), shown to the owner.
    error = models.TextField(blank=True)

    # Scheduling policy: share of the volunteer pool relative to other running campaigns.
    priority = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    task_timeout = models.PositiveIntegerField(
        default=300,
        help_text="seconds a worker may hold a task before it is reassigned",
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 3600)],
    )
    max_attempts = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    points_per_task = models.PositiveIntegerField(default=10)

    # Replication on BOINC's model (validation lives in rewards/).
    min_quorum = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    target_replicas = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    max_error_replicas = models.PositiveSmallIntegerField(default=5)
    max_total_replicas = models.PositiveSmallIntegerField(default=10)
    verifier = models.ForeignKey(
        Kernel, null=True, blank=True, on_delete=models.RESTRICT, related_name="+"
    )
    reducer = models.ForeignKey(
        Kernel, null=True, blank=True, on_delete=models.RESTRICT, related_name="+"
    )
    # BOINC's adaptive replication, an explicit choice: a trusted volunteer's result may stand
    # alone (spot-checked now and then). Off: every task gets its quorum of independent
    # agreeing results.
    adaptive_replication = models.BooleanField(
        default=False,
        help_text="accept a trusted volunteer's result alone, with random spot checks",
    )
    # A quorum must include a signed-in volunteer: anonymous sessions alone never decide a task.
    quorum_needs_account = models.BooleanField(
        default=False, help_text="every quorum includes at least one signed-in volunteer"
    )

    # Synchronous runs (POST /api/v1/run, campaigns/runs.py): the campaign holding one
    # organization's runs of one kernel. Its replicas are leased before any batch campaign's
    # (workers/scheduler.py), and it never completes: it stays running for the next call.
    interactive = models.BooleanField(
        default=False, help_text="holds synchronous runs: leased first, never completes"
    )

    #: States in which an approved campaign is public (see CampaignQuerySet.public).
    PUBLIC_STATES = (State.RUNNING, State.PAUSED, State.COMPLETED)

    # Anonymous and embedded volunteers only get campaigns a platform admin approved; the
    # organization's own authenticated workers need no approval.
    approved = models.BooleanField(default=False)

    # The reducer's output: the campaign's final answer, folded from its results.
    reduced_output = models.BinaryField(null=True, blank=True)
    reduced_at = models.DateTimeField(null=True, blank=True)

    # Counters maintained by the services that change task states, so progress pages never
    # count a million rows. `tasks_total` counts tasks, not replicas.
    tasks_total = models.PositiveBigIntegerField(default=0)
    tasks_done = models.PositiveBigIntegerField(default=0)
    tasks_failed = models.PositiveBigIntegerField(default=0)

    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = CampaignQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(target_replicas__gte=models.F("min_quorum")),
                name="replicas_reach_quorum",
            ),
            models.CheckConstraint(
                condition=Q(max_total_replicas__gte=models.F("target_replicas")),
                name="total_replicas_cover_target",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tasks_remaining(self) -> int:
        return max(0, self.tasks_total - self.tasks_done - self.tasks_failed)

    @property
    def progress(self) -> float:
        """Fraction of tasks finished (done or failed), 0..1."""
        if not self.tasks_total:
            return 0.0
        return (self.tasks_done + self.tasks_failed) / self.tasks_total

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.COMPLETED, self.State.CANCELLED, self.State.FAILED)


class Task(models.Model):
    """One unit of work. `state` is PENDING until the task is decided: DONE (a canonical result
    was chosen) or FAILED (too many errors, or replicas that never agreed). Whether a pending
    task is currently leased is visible on its Result rows."""

    class State(models.IntegerChoices):
        PENDING = 0
        DONE = 1
        FAILED = 2

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="tasks")
    seq = models.PositiveBigIntegerField(help_text="position within the campaign, from 0")
    input = models.BinaryField()
    args = models.JSONField(null=True, blank=True)
    env = models.JSONField(null=True, blank=True)
    state = models.PositiveSmallIntegerField(choices=State.choices, default=State.PENDING)
    # Last checkpoint a worker saved; handed to the next attempt so it resumes.
    checkpoint = models.BinaryField(null=True, blank=True)
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    canonical_result = models.ForeignKey(
        "Result", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_count = models.PositiveSmallIntegerField(default=0)
    # Why the task failed, when it did (the individual errors stay on its Result rows).
    failure = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "seq"], name="task_seq_unique"),
        ]
        indexes = [models.Index(fields=["campaign", "state"], name="task_campaign_state")]

    def __str__(self) -> str:
        return f"task {self.campaign_id}/{self.seq}"


class Result(models.Model):
    """One replica of a task: leased to one worker session, then that worker's answer.

    Life cycle: UNSENT → LEASED → RETURNED (with an outcome) — or LEASED → UNSENT again when the
    session disconnects or gives the lease back (not the task's fault), LEASED → TIMED_OUT
    when its deadline passes, and UNSENT/LEASED → CANCELLED when the task is decided elsewhere or
    its campaign is cancelled. Exactly-once: a result is written only by an UPDATE that
    requires state LEASED *and* the leasing session, so a duplicate or late answer matches no row.
    """

    class State(models.IntegerChoices):
        UNSENT = 0
        LEASED = 1
        RETURNED = 2
        TIMED_OUT = 3
        CANCELLED = 4

    class Outcome(models.IntegerChoices):
        NONE = 0
        SUCCESS = 1
        ERROR = 2  # the kernel failed: non-zero exit, trap, limit
        TIMEOUT = 3  # wall-time limit on the worker, or the lease deadline passed

    class Validation(models.IntegerChoices):
        PENDING = 0
        VALID = 1
        INVALID = 2
        INCONCLUSIVE = 3

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="results")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="results")
    state = models.PositiveSmallIntegerField(choices=State.choices, default=State.UNSENT)

    # The lease. session_id names a workers.WorkerSession (no FK: campaigns does not import
    # workers); user is kept so replicas of one task go to distinct users.
    session_id = models.BigIntegerField(null=True, blank=True)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    site_id = models.BigIntegerField(null=True, blank=True)
    # The leasing session's network origin and browser profile (workers.identity), kept like
    # the user so replicas of one task go to independent volunteers.
    origin = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 (NULL = unknown: equal to nothing in SQL)
    profile = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001 (as origin)
    leased_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)

    # The answer.
    outcome = models.PositiveSmallIntegerField(choices=Outcome.choices, default=Outcome.NONE)
    output = models.BinaryField(null=True, blank=True)
    output_sha256 = models.CharField(max_length=64, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error_kind = models.CharField(max_length=20, blank=True)
    stderr_tail = models.TextField(blank=True)
    runtime_ms = models.PositiveIntegerField(null=True, blank=True)
    returned_at = models.DateTimeField(null=True, blank=True)

    class Basis(models.IntegerChoices):
        """Why a result was accepted (shown on the owner's validation page)."""

        NONE = 0, "not decided"
        SINGLE = 1, "no replication"
        QUORUM = 2, "agreed with independent volunteers"
        TRUSTED = 3, "trusted, not spot-checked"
        CANONICAL = 4, "agreed with the canonical result"
        VERIFIER = 5, "accepted by the verifier"

    validation = models.PositiveSmallIntegerField(
        choices=Validation.choices, default=Validation.PENDING
    )
    # db_default: replicas are inserted by raw SQL in several places (set-based).
    basis = models.PositiveSmallIntegerField(
        choices=Basis.choices, default=Basis.NONE, db_default=Basis.NONE
    )
    # With basis QUORUM: how many other independent volunteers agreed with this result.
    agreed_with = models.PositiveSmallIntegerField(null=True, blank=True)

    objects = ResultQuerySet.as_manager()

    class Meta:
        indexes = [
            # The scheduler's queue: unsent replicas of a campaign in order. Partial, so it
            # stays as small as the backlog however many results a campaign has returned.
            models.Index(
                fields=["campaign", "id"], condition=Q(state=0), name="result_unsent_queue"
            ),
            models.Index(fields=["session_id"], condition=Q(state=1), name="result_leased_by"),
            # Replicas a session let expire: every lease statement excludes their tasks for
            # that session (NOT EXISTS … state = timed out AND session_id = …). Without it
            # the check read the whole (task, state) index, per lease, as results grew.
            models.Index(fields=["session_id"], condition=Q(state=3), name="result_timed_out_by"),
            models.Index(fields=["deadline"], condition=Q(state=1), name="result_lease_deadline"),
            # A network origin's leases of a campaign (the scheduler's per-origin fair share).
            models.Index(
                fields=["campaign", "origin"], condition=Q(state=1), name="result_leased_origin"
            ),
            models.Index(fields=["task", "state"], name="result_task_state"),
            # Throughput over the last minute (status page) is a range scan of this index.
            models.Index(fields=["returned_at"], name="result_returned_at"),
            # Results awaiting validation (quorum not reached, verifier pending): few at any
            # time, so the periodic catch-up (rewards.validation.stuck_tasks) never scans all.
            models.Index(
                fields=["task"],
                condition=Q(state=2, validation=0),
                name="result_awaiting_validation",
            ),
        ]

    def __str__(self) -> str:
        return f"result {self.pk} of task {self.task_id}"
