"""The tenancy chokepoint, line by line: who an Actor is, which organizations it sees, how
TenantQuerySet filters, and that get_for_actor cannot be used to probe other tenants' rows."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404
from django.test import RequestFactory
from rest_framework.exceptions import AuthenticationFailed

from accounts.api_auth import OrganizationTokenAuthentication
from accounts.models import ApiToken, EmbedSite, Membership, Organization, User, hash_token
from accounts.tenancy import (
    Actor,
    TenantQuerySet,
    get_for_actor,
    get_organization,
    get_organization_as_owner,
    tenant_queryset,
)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The people fixture hashes three passwords per test; the production hasher's deliberate
    # slowness (~0.5 s each here) would dominate the suite. Autouse fixtures run first.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def slugs(queryset) -> set[str]:
    return set(queryset.values_list("slug", flat=True))


@pytest.fixture
def sites(people) -> tuple[EmbedSite, EmbedSite]:
    alpha = EmbedSite.objects.create(organization=people.org, name="A", origin="https://a.test")
    beta = EmbedSite.objects.create(
        organization=people.other_org, name="B", origin="https://b.test"
    )
    return alpha, beta


# --- Actor --------------------------------------------------------------------------------------


def test_user_actor_sees_only_organizations_they_belong_to(people):
    assert slugs(Actor(user=people.owner).organizations()) == {"alpha"}
    assert slugs(Actor(user=people.teammate).organizations()) == {"alpha"}
    assert slugs(Actor(user=people.outsider).organizations()) == {"beta"}


def test_user_in_two_organizations_sees_both_and_no_duplicates(people):
    Membership.objects.create(user=people.teammate, organization=people.other_org)
    orgs = Actor(user=people.teammate).organizations()
    assert sorted(orgs.values_list("slug", flat=True)) == ["alpha", "beta"]


def test_user_without_membership_sees_nothing(people):
    loner = User.objects.create_user("loner@x.test", "pw-loner-123")
    assert slugs(Actor(user=loner).organizations()) == set()


def test_token_actor_sees_exactly_its_organization(people):
    # The token's creator belongs to both organizations; the token still acts for one only.
    Membership.objects.create(user=people.owner, organization=people.other_org)
    token, _ = ApiToken.issue(organization=people.org, name="ci", created_by=people.owner)
    assert slugs(Actor(token=token).organizations()) == {"alpha"}


def test_anonymous_actor_sees_nothing(people):
    assert slugs(Actor().organizations()) == set()
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    actor = Actor.from_request(request)
    assert actor == Actor()
    assert slugs(actor.organizations()) == set()


def test_from_request_prefers_the_api_token_over_the_user(people):
    token, _ = ApiToken.issue(organization=people.other_org, name="t", created_by=None)
    request = RequestFactory().get("/")
    request.user = people.owner
    # DRF sets .auth on its Request; a plain request stands in for it here.
    request.auth = token  # type: ignore[attr-defined]
    actor = Actor.from_request(request)
    assert actor.token == token
    assert actor.user is None
    assert slugs(actor.organizations()) == {"beta"}


def test_from_request_with_a_signed_in_user(people):
    request = RequestFactory().get("/")
    request.user = people.teammate
    assert Actor.from_request(request) == Actor(user=people.teammate)


def test_is_owner_of(people):
    token, _ = ApiToken.issue(organization=people.org, name="t", created_by=people.owner)
    assert Actor(user=people.owner).is_owner_of(people.org)
    assert not Actor(user=people.teammate).is_owner_of(people.org)
    assert not Actor(user=people.outsider).is_owner_of(people.org)
    assert not Actor().is_owner_of(people.org)
    assert Actor(token=token).is_owner_of(people.org)
    assert not Actor(token=token).is_owner_of(people.other_org)


# --- TenantQuerySet -----------------------------------------------------------------------------


def test_for_actor_filters_rows_to_the_actors_organizations(people, sites):
    alpha_site, beta_site = sites
    assert list(EmbedSite.objects.for_actor(Actor(user=people.owner))) == [alpha_site]
    assert list(EmbedSite.objects.for_actor(Actor(user=people.teammate))) == [alpha_site]
    assert list(EmbedSite.objects.for_actor(Actor(user=people.outsider))) == [beta_site]
    assert list(EmbedSite.objects.for_actor(Actor())) == []


def test_for_actor_with_a_token(people, sites):
    token, _ = ApiToken.issue(organization=people.other_org, name="t", created_by=None)
    assert list(EmbedSite.objects.for_actor(Actor(token=token))) == [sites[1]]


def test_for_member_is_for_actor_of_that_user(people, sites):
    assert list(EmbedSite.objects.for_member(people.outsider)) == [sites[1]]


def test_memberships_and_tokens_are_tenant_scoped_too(people):
    ApiToken.issue(organization=people.org, name="a", created_by=None)
    ApiToken.issue(organization=people.other_org, name="b", created_by=None)
    outsider = Actor(user=people.outsider)
    assert set(ApiToken.objects.for_actor(outsider).values_list("name", flat=True)) == {"b"}
    assert set(Membership.objects.for_actor(outsider).values_list("user__email", flat=True)) == {
        "out@beta.test"
    }


def test_tenant_queryset_builds_a_queryset_with_the_given_path(people, sites):
    qs_class = tenant_queryset("organization")
    assert issubclass(qs_class, TenantQuerySet)
    assert qs_class.tenant_path == "organization"
    rows = qs_class(model=EmbedSite).for_actor(Actor(user=people.owner))
    assert list(rows) == [sites[0]]


# --- get_for_actor and get_organization -------------------------------------------------------


def test_get_for_actor_returns_the_actors_row(people, sites):
    assert (
        get_for_actor(EmbedSite.objects.all(), Actor(user=people.owner), pk=sites[0].pk)
        == (sites[0])
    )


def test_get_for_actor_404s_for_another_organizations_row_and_a_missing_one_alike(people, sites):
    actor = Actor(user=people.owner)
    with pytest.raises(Http404) as other:
        get_for_actor(EmbedSite.objects.all(), actor, pk=sites[1].pk)
    with pytest.raises(Http404) as missing:
        get_for_actor(EmbedSite.objects.all(), actor, pk=sites[1].pk + 1000)
    assert str(other.value) == str(missing.value)


def test_get_for_actor_404s_for_a_malformed_id_and_for_anonymous(people, sites):
    with pytest.raises(Http404):
        get_for_actor(EmbedSite.objects.all(), Actor(user=people.owner), pk="not-a-number")
    with pytest.raises(Http404):
        get_for_actor(EmbedSite.objects.all(), Actor(), pk=sites[0].pk)


def test_get_organization(people):
    assert get_organization(Actor(user=people.teammate), "alpha") == people.org
    with pytest.raises(Http404):
        get_organization(Actor(user=people.outsider), "alpha")
    with pytest.raises(Http404):
        get_organization(Actor(user=people.owner), "no-such-org")
    with pytest.raises(Http404):
        get_organization(Actor(), "alpha")


def test_get_organization_for_a_token_is_its_own_only(people):
    token, _ = ApiToken.issue(organization=people.org, name="t", created_by=None)
    assert get_organization(Actor(token=token), "alpha") == people.org
    with pytest.raises(Http404):
        get_organization(Actor(token=token), "beta")


def test_get_organization_as_owner(people):
    assert get_organization_as_owner(Actor(user=people.owner), "alpha") == people.org
    with pytest.raises(PermissionDenied):
        get_organization_as_owner(Actor(user=people.teammate), "alpha")
    with pytest.raises(Http404):
        get_organization_as_owner(Actor(user=people.outsider), "alpha")


# --- API tokens ---------------------------------------------------------------------------------


def test_token_is_stored_hashed_only(people):
    token, raw = ApiToken.issue(organization=people.org, name="ci", created_by=people.owner)
    assert raw.startswith("ccgsc_")
    assert len(raw) > 40
    token.refresh_from_db()
    assert token.token_hash == hash_token(raw)
    assert raw.startswith(token.hint)
    assert len(token.hint) < len(raw) // 2
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 (our table name)
        stored = [str(value) for row in cursor.fetchall() for value in row]
    assert token.token_hash in stored
    assert not any(raw in value for value in stored)


def test_authenticate_accepts_the_raw_token_and_records_use(people):
    token, raw = ApiToken.issue(organization=people.org, name="ci", created_by=None)
    assert token.last_used_at is None
    assert ApiToken.authenticate(raw) == token
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # one character off
        lambda raw: raw.removeprefix("ccgsc_"),  # no prefix
        lambda raw: hash_token(raw),  # the stored hash is not a credential
        lambda raw: "",
    ],
)
def test_authenticate_rejects_wrong_tokens(people, mangle):
    _, raw = ApiToken.issue(organization=people.org, name="ci", created_by=None)
    assert ApiToken.authenticate(mangle(raw)) is None


def test_authenticate_rejects_revoked_tokens(people):
    from accounts.services import token_revoke

    token, raw = ApiToken.issue(organization=people.org, name="ci", created_by=None)
    token_revoke(token=token)
    assert ApiToken.authenticate(raw) is None


def test_api_authentication_refuses_a_revoked_token_and_scopes_a_valid_one(people):
    from accounts.services import token_revoke

    token, raw = ApiToken.issue(organization=people.org, name="ci", created_by=people.owner)
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert OrganizationTokenAuthentication().authenticate(request) == (people.owner, token)
    token_revoke(token=token)
    with pytest.raises(AuthenticationFailed):
        OrganizationTokenAuthentication().authenticate(request)


def test_organization_deletion_takes_its_tokens_with_it(people):
    _, raw = ApiToken.issue(organization=people.other_org, name="ci", created_by=None)
    Organization.objects.filter(pk=people.other_org.pk).delete()
    assert ApiToken.authenticate(raw) is None


def test_visible_to_adds_public_rows_to_an_actors_own(people, make_campaign, sites):
    """`visible_to` is what public pages read: public rows (an approved campaign that has run)
    for everyone, an organization's other rows only for its members; a model without a notion
    of public rows (embed sites) shows outsiders nothing."""
    from campaigns.models import Campaign

    public = make_campaign(["a"])
    draft = make_campaign(["b"], start=False)  # approved, but never started
    unapproved = make_campaign(["c"], approved=False)
    theirs = make_campaign(["d"], approved=False, org=people.other_org)

    def seen(actor: Actor) -> set[int]:
        return set(Campaign.objects.visible_to(actor).values_list("pk", flat=True))

    assert seen(Actor()) == {public.pk}
    assert seen(Actor(user=people.outsider)) == {public.pk, theirs.pk}
    assert seen(Actor(user=people.teammate)) == {public.pk, draft.pk, unapproved.pk}
    assert set(EmbedSite.objects.visible_to(Actor())) == set()
    assert set(EmbedSite.objects.visible_to(Actor(user=people.owner))) == {sites[0]}
