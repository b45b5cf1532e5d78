"""The one way in to organization data.

Every owner-side read of tenant data (web views, the REST API, consumers, the CLI's endpoints)
goes through `Actor` and `TenantQuerySet.for_actor`. An actor is a signed-in user, who sees the
organizations they are a member of, or an API token, which sees exactly its own organization.
`get_for_actor` answers 404 both for rows that do not exist and for rows of another
organization, so nobody can probe for other tenants' IDs.

A model joins the scheme with a TenantQuerySet subclass naming the path to its organization:

    class CampaignQuerySet(TenantQuerySet["Campaign"]):
        tenant_path = "organization"

    objects = CampaignQuerySet.as_manager()

(`tenant_queryset(path)` builds the same class at run time, but mypy's Django plugin cannot see
through it and reports "Could not resolve manager type"; the explicit subclass type-checks.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.http import Http404

# accounts.models imports this module (its models use TenantQuerySet), so the models are read
# from the module when called rather than bound while both modules are still loading.
from accounts import models as account_models

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import ApiToken, Organization, User


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user (through their memberships) or an organization's API token."""

    user: User | None = None
    token: ApiToken | None = None

    @classmethod
    def from_request(cls, request: HttpRequest | Any) -> Actor:
        auth = getattr(request, "auth", None)
        if isinstance(auth, account_models.ApiToken):
            return cls(user=None, token=auth)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls(user=user)
        return cls()

    def organizations(self) -> models.QuerySet[Organization]:
        if self.token is not None:
            return account_models.Organization.objects.filter(pk=self.token.organization_id)
        if self.user is not None:
            return account_models.Organization.objects.filter(memberships__user=self.user)
        return account_models.Organization.objects.none()

    def organization_ids(self) -> models.QuerySet[Organization, int]:
        return self.organizations().values_list("pk", flat=True)

    def is_owner_of(self, organization: Organization) -> bool:
        """Owners manage members and tokens; a token counts as the organization itself."""
        if self.token is not None:
            return self.token.organization_id == organization.pk
        if self.user is None:
            return False
        return account_models.Membership.objects.filter(
            user=self.user, organization=organization, role=account_models.Membership.Role.OWNER
        ).exists()


M = TypeVar("M", bound=models.Model)


class TenantQuerySet(models.QuerySet[M]):
    """QuerySet of a model that belongs to an organization through `tenant_path`."""

    tenant_path = "organization"

    def for_actor(self, actor: Actor) -> TenantQuerySet[M]:
        return self.filter(**{f"{self.tenant_path}__in": actor.organization_ids()})

    def for_member(self, user: User) -> TenantQuerySet[M]:
        return self.for_actor(Actor(user=user))

    def public(self) -> TenantQuerySet[M]:
        """Rows anyone may see, members or not (an anonymous visitor too). None by default: a
        model whose rows can be public (an approved, running campaign) overrides this."""
        return self.none()

    def visible_to(self, actor: Actor) -> TenantQuerySet[M]:
        """What a public page may show `actor`: the public rows, and its own organizations'
        rows whatever their state. Pages seen by people outside the organization (profiles,
        leaderboards) read through this, never through the unfiltered manager."""
        return self.public() | self.for_actor(actor)


def get_for_actor(queryset: TenantQuerySet[M], actor: Actor, **lookup: Any) -> M:
    """The row matching `lookup` if the actor may see it; Http404 otherwise (missing and
    forbidden look the same)."""
    try:
        return queryset.for_actor(actor).get(**lookup)
    except (ObjectDoesNotExist, ValueError):
        raise Http404("not found") from None


def get_organization(actor: Actor, slug: str) -> Organization:
    try:
        return actor.organizations().get(slug=slug)
    except account_models.Organization.DoesNotExist:
        raise Http404("not found") from None


def get_organization_as_owner(actor: Actor, slug: str) -> Organization:
    """The organization for an owner-only action: Http404 for non-members (exactly as
    `get_organization`, so outsiders learn nothing), PermissionDenied (403) for members who are
    not owners."""
    organization = get_organization(actor, slug)
    if not actor.is_owner_of(organization):
        raise PermissionDenied("only the organization's owners may do this")
    return organization


def tenant_queryset(path: str) -> type[TenantQuerySet[Any]]:
    """A TenantQuerySet subclass whose rows reach their organization through `path`."""
    return type(
        f"TenantQuerySet_{path.replace('__', '_')}", (TenantQuerySet,), {"tenant_path": path}
    )
