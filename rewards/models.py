"""Points, trust and teams.

- LedgerEntry: the append-only points ledger. A validated result earns one entry of kind
  `result`; the database refuses a second one for the same result (unique (result_id, kind)),
  so no race, retry or redelivered job can pay a result twice.
- Total: running sums of the ledger per user, team, site and campaign, bumped in the same
  transaction as the entries they sum (leaderboards never aggregate the ledger).
- Reliability: a user's record of checked results, on BOINC's adaptive replication model
  (rewards/trust.py): the run of consecutive valid results, the totals, and whether the user
  is refused work.
- Team, TeamMembership: contributors group into teams, one team at a time.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from campaigns.models import Campaign


class Team(models.Model):
    name = models.CharField(max_length=80)
    slug = models.SlugField(max_length=60, unique=True)
    description = models.TextField(blank=True, max_length=2000)
    founder = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A team can keep itself off the public team leaderboard (its page stays reachable).
    listed = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="team_name_unique_ci")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("rewards:team", args=[self.slug])


class TeamMembership(models.Model):
    """A user's team: at most one at a time (the user is the primary key)."""

    user = models.OneToOneField(
        User, primary_key=True, on_delete=models.CASCADE, related_name="team_membership"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["team", "joined_at"], name="team_members")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class LedgerEntry(models.Model):
    """One grant of points. Never updated or deleted by the platform; corrections are new
    entries of kind `adjustment`.

    result_id is a plain integer, not a foreign key: results are deleted with their campaign
    (or when a generator reruns), the points earned for them are not, and the uniqueness of
    (result_id, kind) must outlive the row. The team is the user's team when the points were
    granted, so team totals are what members earned while they were members.
    """

    class Kind(models.TextChoices):
        RESULT = "result", "Validated result"
        ADJUSTMENT = "adjustment", "Adjustment"

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.RESULT)
    result_id = models.BigIntegerField(null=True, blank=True)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    site_id = models.BigIntegerField(null=True, blank=True)
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    points = models.IntegerField()
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(fields=["result_id", "kind"], name="ledger_once_per_result"),
            models.CheckConstraint(
                condition=Q(kind="adjustment") | Q(result_id__isnull=False),
                name="ledger_result_entries_name_a_result",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="ledger_user_time"),
            models.Index(fields=["team", "created_at"], name="ledger_team_time"),
            models.Index(fields=["campaign", "user"], name="ledger_campaign_user"),
        ]

    def __str__(self) -> str:
        return f"{self.points:+d} ({self.kind} {self.result_id or ''})"


class Total(models.Model):
    """The ledger summed per (scope, key): `points` and the number of `results` validated.
    Maintained only by rewards.ledger, in the transaction that writes the entries."""

    class Scope(models.TextChoices):
        USER = "user"
        TEAM = "team"
        SITE = "site"
        CAMPAIGN = "campaign"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    key = models.BigIntegerField()
    points = models.BigIntegerField(default=0)
    results = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="total_per_key")]
        indexes = [models.Index(fields=["scope", "-points", "key"], name="total_ranking")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}: {self.points}"


class Reliability(models.Model):
    """What the platform knows of a user's results, for adaptive replication (rewards.trust).

    Only checked results count: ones validated by a quorum or a verifier. A result accepted
    alone because its user was trusted proves nothing and leaves the record unchanged; an
    invalid result, an error or a timeout on a campaign that checks results resets the run."""

    user = models.OneToOneField(
        User, primary_key=True, on_delete=models.CASCADE, related_name="reliability"
    )
    consecutive_valid = models.PositiveIntegerField(default=0)
    valid_total = models.PositiveIntegerField(default=0)
    invalid_total = models.PositiveIntegerField(default=0)
    error_total = models.PositiveIntegerField(default=0)
    # Set automatically when the invalid results pile up (rewards.trust.REFUSE_*); a refused
    # user's workers get no tasks. Platform admins clear it in the admin.
    refused = models.BooleanField(default=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "reliability records"
        indexes = [models.Index(fields=["user"], condition=Q(refused=True), name="refused_users")]

    def __str__(self) -> str:
        return f"{self.user}: run {self.consecutive_valid}"

    @property
    def spot_check_probability(self) -> float:
        from rewards.trust import spot_check_probability

        return spot_check_probability(self.consecutive_valid)

    @property
    def trusted(self) -> bool:
        from rewards.trust import is_trusted

        return is_trusted(self.consecutive_valid)

    @property
    def invalid_rate(self) -> float:
        checked = self.valid_total + self.invalid_total
        return self.invalid_total / checked if checked else 0.0


class KernelTrust(models.Model):
    """A user's run of consecutive checked valid results on one kernel (BOINC keeps this per
    host and app version): adaptive replication trusts a user for that kernel only. Earned
    only by agreement with other independent volunteers, never on the user's own
    organization's campaigns (rewards.trust)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    kernel = models.ForeignKey("campaigns.Kernel", on_delete=models.CASCADE, related_name="+")
    consecutive_valid = models.PositiveIntegerField(default=0)
    valid_total = models.PositiveIntegerField(default=0)
    invalid_total = models.PositiveIntegerField(default=0)
    error_total = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kernel"], name="kernel_trust_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user} on kernel {self.kernel_id}: run {self.consecutive_valid}"
