"""Reads for the account and organization pages. Tenant scoping happens before these are
called: the organization passed in was fetched through accounts.tenancy."""

from __future__ import annotations

from django.db.models import Count, F, QuerySet

from accounts.models import ApiToken, EmbedSite, Membership, Organization, User
from ccgsc import hooks


def memberships_for_user(user: User) -> QuerySet[Membership]:
    """The user's memberships with their organizations and each organization's member count."""
    return (
        Membership.objects.filter(user=user)
        .select_related("organization")
        .annotate(member_count=Count("organization__memberships"))
        .order_by("organization__name", "organization__pk")
    )


def organization_members(organization: Organization) -> QuerySet[Membership]:
    """Owners first, then members, each by email address."""
    return (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("-role", "user__email")  # "owner" sorts after "member"; descending puts it first
    )


def organization_tokens(organization: Organization) -> QuerySet[ApiToken]:
    """Active tokens first (newest first), then revoked ones."""
    return (
        ApiToken.objects.filter(organization=organization)
        .select_related("created_by")
        # Explicit NULLS FIRST: SQLite and PostgreSQL disagree on where NULLs sort by default.
        .order_by(F("revoked_at").asc(nulls_first=True), "-created_at", "-pk")
    )


def organization_sites(organization: Organization) -> QuerySet[EmbedSite]:
    return EmbedSite.objects.filter(organization=organization).order_by("name", "pk")


def organization_sites_with_activity(organization: Organization) -> QuerySet[EmbedSite]:
    """organization_sites, annotated with what their visitors contributed. That is known above
    accounts (the points ledger in rewards, connected sessions in workers), and accounts
    imports neither: those apps annotate the query through ccgsc.hooks' site_annotators
    point (rewards.selectors.with_site_activity), as subqueries, so the page stays one query
    however many sites there are."""
    return hooks.annotate_sites(organization_sites(organization))
