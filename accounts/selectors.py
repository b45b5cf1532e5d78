"""Reads for the account and organization pages. Tenant scoping happens before these are
called: the organization passed in was fetched through accounts.tenancy."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Count, F, QuerySet

from accounts.models import ApiToken, EmbedSite, Membership, Organization, User


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


# What visitors of a site contributed is known above accounts (the points ledger in rewards,
# connected sessions in workers), and accounts imports neither. Those apps annotate the sites
# page's query instead, registered in their AppConfig.ready the way rewards plugs into the
# scheduler: each takes the sites and returns them annotated (as subqueries, so the page stays
# one query however many sites there are). rewards.selectors.with_site_activity is the one.
SiteAnnotator = Callable[[QuerySet[EmbedSite]], QuerySet[EmbedSite]]
site_activity_annotators: list[SiteAnnotator] = []


def organization_sites_with_activity(organization: Organization) -> QuerySet[EmbedSite]:
    """organization_sites, annotated by every registered site_activity_annotators entry."""
    sites = organization_sites(organization)
    for annotate in site_activity_annotators:
        sites = annotate(sites)
    return sites
