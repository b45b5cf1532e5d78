"""Writes for teams: keyword-only, atomic. Points are written only by rewards.ledger."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from rewards.models import Team, TeamMembership

RESERVED_SLUGS = {"new", "leave"}  # paths under /teams/


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "team"
    slug, n = base, 1
    while slug in RESERVED_SLUGS or Team.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def team_create(*, founder: User, name: str, description: str = "", listed: bool = True) -> Team:
    """Create a team and move its founder into it (a contributor is in one team at a time)."""
    name = " ".join(name.split())
    if not name:
        raise ValidationError("Give the team a name.")
    if len(name) > 80:
        raise ValidationError("A team name has at most 80 characters.")
    if Team.objects.filter(name__iexact=name).exists():
        raise ValidationError(f"There is already a team called “{name}”.")
    try:
        with transaction.atomic():
            team = Team.objects.create(
                name=name,
                slug=_unique_slug(name),
                description=description.strip()[:2000],
                founder=founder,
                listed=listed,
            )
            _set_team(founder, team)
    except IntegrityError:
        # Two people creating the same name at once: the database's unique index decides.
        raise ValidationError(f"There is already a team called “{name}”.") from None
    return team


def team_join(*, user: User, team: Team) -> TeamMembership:
    """Join a team, leaving the current one. Points already earned stay with the team they
    were earned for; points from now on count for the new team."""
    with transaction.atomic():
        return _set_team(user, team)


def team_leave(*, user: User) -> bool:
    """Leave the current team; False when the user was in none."""
    deleted, _ = TeamMembership.objects.filter(user=user).delete()
    return bool(deleted)


def team_update(*, team: Team, description: str, listed: bool) -> Team:
    team.description = description.strip()[:2000]
    team.listed = listed
    team.save(update_fields=["description", "listed"])
    return team


def _set_team(user: User, team: Team) -> TeamMembership:
    membership, _ = TeamMembership.objects.update_or_create(
        user=user, defaults={"team": team, "joined_at": timezone.now()}
    )
    return membership
