"""The one way in to organization data.

Every owner-side read of tenant data (web views, the REST API, consumers, the CLI's endpoints)
goes through `Actor` and `TenantQuerySet.for_actor`. An actor is a signed-in user, who sees the
organizations they are a member of, or an API token, which sees exactly its own organization.
`get_for_actor` answers 404 both for rows that do not exist and for rows of another
organization, so nobody can probe for other tenants' IDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models
from django.http import Http404

from accounts.models import ApiToken, Membership, Organization, User

if TYPE_CHECKING:
    from django.http import HttpRequest


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user (through their memberships) or an organization's API token."""

    user: User | None = None
    token: ApiToken | None = None

    @classmethod
    def from_request(cls, request: HttpRequest | Any) -> Actor:
        auth = getattr(request, "auth", None)
        if isinstance(auth, ApiToken):
            return cls(user=None, token=auth)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls(user=user)
        return cls()

    def organizations(self) -> models.QuerySet[Organization]:
        if self.token is not None:
            return Organization.objects.filter(pk=self.token.organization_id)
        if self.user is not None:
            return Organization.objects.filter(memberships__user=self.user)
        return Organization.objects.none()

    def organization_ids(self) -> models.QuerySet[Organization, int]:
        return self.organizations().values_list("pk", flat=True)

    def is_owner_of(self, organization: Organization) -> bool:
        """Owners manage members and tokens; a token counts as the organization itself."""
        if self.token is not None:
            return self.token.organization_id == organization.pk
        if self.user is None:
            return False
        return Membership.objects.filter(
            user=self.user, organization=organization, role=Membership.Role.OWNER
        ).exists()


M = TypeVar("M", bound=models.Model)


class TenantQuerySet(models.QuerySet[M]):
    """QuerySet of a model that belongs to an organization through `tenant_path`."""

    tenant_path = "organization"

    def for_actor(self, actor: Actor) -> TenantQuerySet[M]:
        return self.filter(**{f"{self.tenant_path}__in": actor.organization_ids()})

    def for_member(self, user: User) -> TenantQuerySet[M]:
        return self.for_actor(Actor(user=user))


def get_for_actor(queryset: TenantQuerySet[M], actor: Actor, **lookup: Any) -> M:
    """The row matching `lookup` if the actor may see it; Http404 otherwise (missing and
    forbidden look the same)."""
    try:
        return queryset.for_actor(actor).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError):
        raise Http404("not found") from None


def get_organization(actor: Actor, slug: str) -> Organization:
    try:
        return actor.organizations().get(slug=slug)
    except Organization.DoesNotExist:
        raise Http404("not found") from None


def tenant_queryset(path: str) -> type[TenantQuerySet[Any]]:
    """A TenantQuerySet subclass whose rows reach their organization through `path`."""
    return type(f"TenantQuerySet_{path.replace('__', '_')}", (TenantQuerySet,), {"tenant_path": path})
