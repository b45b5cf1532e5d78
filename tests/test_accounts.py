"""Accounts through the real pages: allauth sign-up, sign-in, sign-out and password reset,
account settings and deletion, and every organization page for the owner, the teammate, the
outsider and an anonymous visitor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core import mail
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from accounts import services
from accounts.models import ApiToken, EmbedSite, Membership, Organization, User, normalize_origin
from rewards import selectors as rewards_selectors

LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The people fixture hashes three passwords per test; the production hasher's deliberate
    # slowness (~0.5 s each here) would dominate the suite. Autouse fixtures run first.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # allauth keeps its rate-limit counters in the cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


def signed_in(client, user):
    client.force_login(user)
    return client


def session_user_id(client) -> str | None:
    return client.session.get("_auth_user_id")


# --- allauth flows ------------------------------------------------------------------------------


def test_sign_up_through_the_allauth_form_creates_and_signs_in_the_user(client, db):
    response = client.post(
        "/accounts/signup/",
        {
            "email": "New@Example.test",
            "password1": "a-long-passphrase-1",
            "password2": "a-long-passphrase-1",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(email__iexact="new@example.test")
    assert user.check_password("a-long-passphrase-1")
    assert session_user_id(client) == str(user.pk)


def test_sign_up_rejects_mismatched_passwords(client, db):
    response = client.post(
        "/accounts/signup/",
        {"email": "x@example.test", "password1": "a-long-passphrase-1", "password2": "other-2"},
    )
    assert response.status_code == 200
    assert not User.objects.filter(email="x@example.test").exists()
    assert session_user_id(client) is None


def test_allauth_pages_use_the_site_layout(client, db):
    for url in ("/accounts/signup/", LOGIN, "/accounts/password/reset/"):
        body = client.get(url).content.decode()
        assert "css/ccgsc.css" in body, url
        assert 'class="auth-card"' in body, url
        assert 'class="btn btn-primary' in body, url
        assert "/contribute/" in body, url


def test_allauth_account_pages_link_back_to_settings(client, people):
    signed_in(client, people.owner)
    for url in ("/accounts/email/", "/accounts/password/change/", "/accounts/logout/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "← Account settings" in response.content.decode(), url


def test_log_in_and_out(client, people):
    response = client.post(LOGIN, {"login": "owner@alpha.test", "password": "pw-owner-123"})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert session_user_id(client) == str(people.owner.pk)

    # Signing out needs a POST (a GET only shows the confirmation page).
    assert client.get("/accounts/logout/").status_code == 200
    assert session_user_id(client) == str(people.owner.pk)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert session_user_id(client) is None


def test_log_in_with_a_wrong_password_fails(client, people):
    response = client.post(LOGIN, {"login": "owner@alpha.test", "password": "wrong-password"})
    assert response.status_code == 200
    assert session_user_id(client) is None
    assert "not correct" in response.content.decode()


def test_password_reset_sends_an_email_with_a_reset_link(client, people):
    response = client.post("/accounts/password/reset/", {"email": "mate@alpha.test"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["mate@alpha.test"]
    assert "/accounts/password/reset/key/" in mail.outbox[0].body


def test_navigation_depends_on_being_signed_in(client, people):
    anonymous = client.get(LOGIN).content.decode()
    assert 'href="/dashboard/"' not in anonymous
    assert 'href="/accounts/signup/"' in anonymous
    signed = signed_in(client, people.owner).get("/account/").content.decode()
    assert 'href="/dashboard/"' in signed
    assert 'action="/accounts/logout/"' in signed


@pytest.mark.parametrize("signed", [False, True])
def test_every_page_links_the_api_docs_and_an_icon(client, people, signed):
    if signed:
        signed_in(client, people.owner)
    page = client.get("/leaderboard/").content.decode()
    assert 'href="/api/v1/docs/"' in page
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200


def test_favicon_ico_leads_to_the_svg_icon(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == "/static/favicon.svg"
    path = finders.find("favicon.svg")
    assert path is not None
    svg = Path(path).read_text()
    assert svg.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg


# --- account settings and deletion --------------------------------------------------------------


def test_profile_settings_save_and_show_a_message(client, people):
    signed_in(client, people.teammate)
    response = client.post("/account/", {"display_name": "  Mate  "}, follow=True)
    people.teammate.refresh_from_db()
    assert people.teammate.display_name == "Mate"
    assert people.teammate.public_profile is False  # an unchecked box is "off"
    assert "Your profile was saved." in response.content.decode()
    page = client.get("/account/").content.decode()
    assert "/accounts/email/" in page
    assert "/accounts/password/change/" in page
    assert "/account/delete/" in page


def test_display_name_help_says_what_an_empty_name_shows(client, people):
    people.teammate.display_name = ""
    people.teammate.save()
    page = signed_in(client, people.teammate).get("/account/").content.decode()
    # What the leaderboards, team pages and profile show for an empty display name.
    shown = rewards_selectors.display_name(people.teammate)
    assert shown == f"contributor {people.teammate.pk}"
    assert f"“{shown}”" in page
    # One identity: the menu and the organizations use the same name (User.__str__).
    assert str(people.teammate) == shown
    assert f">{shown}</a>" in page


def test_profile_help_text_matches_what_a_private_profile_does(client, people):
    page = signed_in(client, people.teammate).get("/account/").content.decode()
    assert "“anonymous”" not in page
    assert "left off leaderboards" in page


@pytest.mark.parametrize("url", ["/account/", "/account/delete/", "/dashboard/"])
def test_account_pages_need_a_signed_in_user(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)


def test_account_deletion_needs_the_password(client, people):
    signed_in(client, people.outsider)
    response = client.post("/account/delete/", {"password": "wrong"})
    assert response.status_code == 200
    assert "That password is not correct." in response.content.decode()
    assert User.objects.filter(pk=people.outsider.pk).exists()


def test_account_deletion_removes_the_user_and_their_sole_member_organization(client, people):
    signed_in(client, people.outsider)
    assert "Beta Corp" in client.get("/account/delete/").content.decode()
    response = client.post("/account/delete/", {"password": "pw-out-123"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=people.outsider.pk).exists()
    assert not Organization.objects.filter(slug="beta").exists()
    assert Organization.objects.filter(slug="alpha").exists()
    assert session_user_id(client) is None
    # The next page (any page with the site layout) says so.
    assert "Your account has been deleted." in client.get(LOGIN).content.decode()


def test_account_deletion_with_campaign_data_is_all_or_nothing(client, people, make_campaign):
    # Other apps' rows hang off the organization (some through protected foreign keys): the
    # deletion either removes everything or nothing, and never ends in a server error.
    make_campaign([1, 2], org=people.other_org)
    signed_in(client, people.outsider)
    response = client.post("/account/delete/", {"password": "pw-out-123"})
    assert response.status_code in (200, 302)
    user_left = User.objects.filter(pk=people.outsider.pk).exists()
    assert user_left == Organization.objects.filter(slug="beta").exists()
    if user_left:
        assert "Nothing was deleted." in response.content.decode()


def test_account_deletion_is_refused_for_the_sole_owner_of_a_team(client, people):
    signed_in(client, people.owner)
    page = client.get("/account/delete/").content.decode()
    assert "cannot be deleted yet" in page
    response = client.post("/account/delete/", {"password": "pw-owner-123"})
    assert response.status_code == 200
    assert "only owner of Alpha Lab" in response.content.decode()
    assert User.objects.filter(pk=people.owner.pk).exists()
    assert Organization.objects.filter(slug="alpha").exists()
    assert session_user_id(client) == str(people.owner.pk)


def test_a_member_or_a_co_owner_can_delete_their_account(client, people):
    signed_in(client, people.teammate)
    client.post("/account/delete/", {"password": "pw-mate-123"})
    assert not User.objects.filter(pk=people.teammate.pk).exists()
    assert list(people.org.memberships.values_list("user__email", flat=True)) == [
        "owner@alpha.test"
    ]

    # With a second owner, the first may leave; the organization stays.
    second = User.objects.create_user("second@alpha.test", "pw-second-123")
    Membership.objects.create(user=second, organization=people.org, role=Membership.Role.OWNER)
    signed_in(client, people.owner)
    client.post("/account/delete/", {"password": "pw-owner-123"})
    assert not User.objects.filter(pk=people.owner.pk).exists()
    assert Organization.objects.filter(slug="alpha").exists()


# --- dashboard ----------------------------------------------------------------------------------


def test_dashboard_lists_only_my_organizations(client, people):
    page = signed_in(client, people.teammate).get("/dashboard/").content.decode()
    assert "Alpha Lab" in page
    assert "Beta Corp" not in page
    page = signed_in(client, people.outsider).get("/dashboard/").content.decode()
    assert "Beta Corp" in page
    assert "Alpha Lab" not in page


def test_create_organization_makes_the_creator_its_owner(client, people):
    signed_in(client, people.teammate)
    response = client.post("/dashboard/", {"name": "Alpha"})
    org = Organization.objects.get(name="Alpha")
    assert org.slug == "alpha-2"  # "alpha" is taken
    assert response["Location"] == "/orgs/alpha-2/"
    membership = Membership.objects.get(organization=org)
    assert (membership.user, membership.role) == (people.teammate, Membership.Role.OWNER)


def test_create_organization_needs_a_name(client, people):
    signed_in(client, people.teammate)
    response = client.post("/dashboard/", {"name": "   "})
    assert response.status_code == 200
    assert Organization.objects.count() == 2


# --- organization pages: who sees what ----------------------------------------------------------

ORG_PAGES = ["/orgs/alpha/", "/orgs/alpha/members/", "/orgs/alpha/tokens/", "/orgs/alpha/sites/"]


@pytest.mark.parametrize("url", ORG_PAGES)
def test_org_pages_for_owner_teammate_outsider_and_anonymous(client, people, url):
    assert client.get(url).status_code == 302
    assert client.get(url)["Location"].startswith(LOGIN)
    owner_page = signed_in(client, people.owner).get(url)
    assert owner_page.status_code == 200
    assert "Alpha Lab" in owner_page.content.decode()
    assert signed_in(client, people.teammate).get(url).status_code == 200
    outsider_page = signed_in(client, people.outsider).get(url)
    assert outsider_page.status_code == 404
    assert "Alpha Lab" not in outsider_page.content.decode()


def test_missing_and_forbidden_organizations_look_the_same(client, people):
    signed_in(client, people.outsider)
    forbidden = client.get("/orgs/alpha/members/")
    missing = client.get("/orgs/nope/members/")
    assert forbidden.status_code == missing.status_code == 404
    # Byte for byte the same page, but for the CSRF token of the sign-out form (random per page).
    token = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]+"')
    assert token.sub(b"", forbidden.content) == token.sub(b"", missing.content)
    assert b"Page not found" in forbidden.content


# --- members ------------------------------------------------------------------------------------


def test_owner_adds_an_existing_user_by_email(client, people):
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/members/", {"email": "OUT@beta.test", "role": "member"})
    assert response.status_code == 302
    assert Membership.objects.filter(user=people.outsider, organization=people.org).exists()
    assert signed_in(client, people.outsider).get("/orgs/alpha/").status_code == 200


def test_adding_an_existing_member_shows_why(client, people):
    signed_in(client, people.owner)
    again = client.post("/orgs/alpha/members/", {"email": "mate@alpha.test", "role": "member"})
    assert "already a member" in again.content.decode()
    assert people.org.memberships.count() == 2


def test_owner_invites_someone_without_an_account_by_email(client, people, mailoutbox):
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/members/", {"email": "ghost@x.test", "role": "member"})
    assert response.status_code == 302
    invited = User.objects.get(email="ghost@x.test")
    assert not invited.has_usable_password()
    assert Membership.objects.filter(user=invited, organization=people.org).exists()
    (message,) = mailoutbox
    assert message.to == ["ghost@x.test"] and "Alpha Lab" in message.subject
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+)", message.body)
    assert link is not None, message.body
    page = client.get(response.url).content.decode()
    assert "Invited ghost@x.test as member" in page

    # The link lets them choose a password and sign in; then they see the organization.
    anonymous = Client()
    form = anonymous.get(link.group(1), follow=True)
    assert form.status_code == 200
    chosen = anonymous.post(
        form.redirect_chain[-1][0] if form.redirect_chain else link.group(1),
        {"password1": "a-new-pass-9876", "password2": "a-new-pass-9876"},
    )
    assert chosen.status_code == 302
    invited.refresh_from_db()
    assert invited.check_password("a-new-pass-9876")
    assert anonymous.login(email="ghost@x.test", password="a-new-pass-9876")
    assert anonymous.get("/orgs/alpha/").status_code == 200


def test_only_owners_add_members(client, people):
    data = {"email": "out@beta.test", "role": "owner"}
    assert signed_in(client, people.teammate).post("/orgs/alpha/members/", data).status_code == 403
    assert signed_in(client, people.outsider).post("/orgs/alpha/members/", data).status_code == 404
    assert not Membership.objects.filter(user=people.outsider, organization=people.org).exists()


def test_members_see_the_list_read_only(client, people):
    page = signed_in(client, people.teammate).get("/orgs/alpha/members/").content.decode()
    assert "owner@alpha.test" in page
    assert "Add a member" not in page
    owner_page = signed_in(client, people.owner).get("/orgs/alpha/members/").content.decode()
    assert "Add a member" in owner_page


def _membership(people, user):
    return Membership.objects.get(user=user, organization=people.org)


def test_owner_changes_a_role(client, people):
    mate = _membership(people, people.teammate)
    signed_in(client, people.owner).post(f"/orgs/alpha/members/{mate.pk}/role/", {"role": "owner"})
    mate.refresh_from_db()
    assert mate.role == Membership.Role.OWNER


def test_only_owners_change_roles(client, people):
    mine = _membership(people, people.teammate)
    url = f"/orgs/alpha/members/{mine.pk}/role/"
    assert signed_in(client, people.teammate).post(url, {"role": "owner"}).status_code == 403
    assert signed_in(client, people.outsider).post(url, {"role": "owner"}).status_code == 404
    mine.refresh_from_db()
    assert mine.role == Membership.Role.MEMBER


def test_the_last_owner_cannot_be_demoted_or_removed(client, people):
    owner = _membership(people, people.owner)
    signed_in(client, people.owner)
    demote = client.post(f"/orgs/alpha/members/{owner.pk}/role/", {"role": "member"}, follow=True)
    assert "only owner of Alpha Lab" in demote.content.decode()
    remove = client.post(f"/orgs/alpha/members/{owner.pk}/remove/", follow=True)
    assert "cannot be removed" in remove.content.decode()
    owner.refresh_from_db()
    assert owner.role == Membership.Role.OWNER


def test_one_of_two_owners_can_step_down(people):
    mate = _membership(people, people.teammate)
    services.membership_set_role(membership=mate, role=Membership.Role.OWNER)
    services.membership_remove(membership=_membership(people, people.owner))
    assert list(people.org.memberships.values_list("role", flat=True)) == ["owner"]
    with pytest.raises(ValidationError):
        services.membership_remove(membership=mate)


def test_owner_removes_a_member(client, people):
    mate = _membership(people, people.teammate)
    response = signed_in(client, people.owner).post(f"/orgs/alpha/members/{mate.pk}/remove/")
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=mate.pk).exists()
    assert signed_in(client, people.teammate).get("/orgs/alpha/").status_code == 404


def test_a_member_cannot_remove_others_but_can_leave(client, people):
    owner = _membership(people, people.owner)
    signed_in(client, people.teammate)
    assert client.post(f"/orgs/alpha/members/{owner.pk}/remove/").status_code == 403
    assert Membership.objects.filter(pk=owner.pk).exists()
    mine = _membership(people, people.teammate)
    assert client.post(f"/orgs/alpha/members/{mine.pk}/remove/")["Location"] == "/dashboard/"
    assert not Membership.objects.filter(pk=mine.pk).exists()


def test_a_membership_of_another_organization_is_not_found(client, people):
    beta_owner = Membership.objects.get(organization=people.other_org)
    signed_in(client, people.owner)
    assert client.post(f"/orgs/alpha/members/{beta_owner.pk}/remove/").status_code == 404
    assert client.post(f"/orgs/beta/members/{beta_owner.pk}/remove/").status_code == 404
    assert Membership.objects.filter(pk=beta_owner.pk).exists()


# --- API tokens ---------------------------------------------------------------------------------

RAW_TOKEN = re.compile(r"ccgsc_[A-Za-z0-9_\-]{20,}")


def test_token_is_shown_once(client, people):
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/tokens/", {"name": "lab server"})
    # POST/redirect/GET: the answer to the POST is a redirect, so a reload cannot re-submit.
    assert response.status_code == 302
    assert response["Location"] == "/orgs/alpha/tokens/"
    assert RAW_TOKEN.search(response.content.decode()) is None
    shown = client.get("/orgs/alpha/tokens/")
    assert shown.status_code == 200
    assert "no-store" in shown["Cache-Control"]
    body = shown.content.decode()
    assert "Copy it now." in body
    match = RAW_TOKEN.search(body)
    assert match is not None
    raw = match.group(0)
    token = ApiToken.authenticate(raw)
    assert token is not None
    assert (token.name, token.organization, token.created_by) == (
        "lab server",
        people.org,
        people.owner,
    )
    # Once shown, the secret is gone from the session as well as from every page.
    assert raw not in str(dict(client.session))

    later = client.get("/orgs/alpha/tokens/").content.decode()
    assert "lab server" in later
    assert token.hint in later
    assert raw not in later
    assert RAW_TOKEN.search(later) is None
    assert raw not in client.get("/orgs/alpha/tokens/").content.decode()


def test_reloading_after_creating_a_token_creates_no_second_token(client, people):
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/tokens/", {"name": "lab server"}, follow=True)
    assert response.redirect_chain == [("/orgs/alpha/tokens/", 302)]
    assert RAW_TOKEN.search(response.content.decode()) is not None
    # A reload of the page the browser shows now is a GET of the token page.
    reloaded = client.get(response.request["PATH_INFO"])
    assert reloaded.status_code == 200
    assert RAW_TOKEN.search(reloaded.content.decode()) is None
    assert ApiToken.objects.filter(organization=people.org).count() == 1


def test_a_new_token_is_shown_only_in_its_own_organization(client, people):
    Membership.objects.create(
        user=people.owner, organization=people.other_org, role=Membership.Role.OWNER
    )
    signed_in(client, people.owner)
    client.post("/orgs/alpha/tokens/", {"name": "lab server"})
    # Another organization's token page neither shows nor consumes it.
    assert RAW_TOKEN.search(client.get("/orgs/beta/tokens/").content.decode()) is None
    assert RAW_TOKEN.search(client.get("/orgs/alpha/tokens/").content.decode()) is not None


def test_a_token_revoked_before_it_is_shown_is_not_shown(client, people):
    signed_in(client, people.owner)
    client.post("/orgs/alpha/tokens/", {"name": "lab server"})
    ApiToken.objects.update(revoked_at=timezone.now())
    page = client.get("/orgs/alpha/tokens/").content.decode()
    assert RAW_TOKEN.search(page) is None
    assert "revoked" in page


def test_token_pages_link_the_api_docs(client, people):
    signed_in(client, people.owner)
    assert 'href="/api/v1/docs/"' in client.get("/orgs/alpha/tokens/").content.decode()
    page = client.post("/orgs/alpha/tokens/", {"name": "x"}, follow=True).content.decode()
    assert RAW_TOKEN.search(page) is not None
    assert 'href="/api/v1/docs/"' in page


def test_only_owners_create_tokens(client, people):
    assert (
        signed_in(client, people.teammate).post("/orgs/alpha/tokens/", {"name": "x"}).status_code
        == 403
    )
    assert (
        signed_in(client, people.outsider).post("/orgs/alpha/tokens/", {"name": "x"}).status_code
        == 404
    )
    assert not ApiToken.objects.exists()


def test_token_list_shows_members_no_create_form(client, people):
    ApiToken.issue(organization=people.org, name="ci", created_by=people.owner)
    page = signed_in(client, people.teammate).get("/orgs/alpha/tokens/").content.decode()
    assert "ci" in page
    assert "Create token" not in page
    assert "Revoke" not in page


def test_owner_revokes_a_token(client, people):
    token, raw = ApiToken.issue(organization=people.org, name="ci", created_by=None)
    url = f"/orgs/alpha/tokens/{token.pk}/revoke/"
    assert signed_in(client, people.teammate).post(url).status_code == 403
    assert signed_in(client, people.outsider).post(url).status_code == 404
    assert ApiToken.authenticate(raw) == token
    assert signed_in(client, people.owner).post(url).status_code == 302
    assert ApiToken.authenticate(raw) is None
    assert "revoked" in client.get("/orgs/alpha/tokens/").content.decode()


def test_a_token_of_another_organization_is_not_found(client, people):
    token, raw = ApiToken.issue(organization=people.other_org, name="b", created_by=None)
    assert (
        signed_in(client, people.owner).post(f"/orgs/alpha/tokens/{token.pk}/revoke/").status_code
        == 404
    )
    assert ApiToken.authenticate(raw) == token


# --- embed sites --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://example.com", "https://example.com"),
        ("HTTPS://Example.COM/", "https://example.com"),
        ("  https://example.com:443 ", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://sub.example.co.uk:8443", "https://sub.example.co.uk:8443"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_normalize_origin(given, canonical):
    assert normalize_origin(given) == canonical


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("example.com", "has no scheme"),
        ("", "Enter the site's origin"),
        ("ftp://example.com", "Only http:// and https://"),
        ("https://example.com/blog", "remove the path"),
        ("https://example.com?x=1", "remove the path"),
        ("https://example.com#top", "remove the path"),
        ("https://user:pw@example.com", "no user name or password"),
        ("https://*.example.com", "not a valid host name"),
        ("https://exa mple.com", "not a valid host name"),
        ("https://example.com:99999", "port"),
        ("https://example.com:0", "port 0"),
        ("https://", "no host name"),
    ],
)
def test_normalize_origin_refuses_with_a_plain_message(given, message):
    with pytest.raises(ValidationError) as error:
        normalize_origin(given)
    assert message in " ".join(error.value.messages)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        # Not an origin at all: no made-up suggestion such as "https://not a url".
        (
            "not a url",
            "“not a url” is not an origin. Enter one like https://blog.example.org: the scheme"
            " and the host, with a port if the site uses one, and nothing after.",
        ),
        # Another scheme is named as such, not reported as "no scheme".
        (
            "javascript:alert(1)",
            "Only http:// and https:// sites can embed the script, not javascript: addresses."
            " Enter an origin like https://blog.example.org.",
        ),
        ("mailto:me@example.com", "not mailto: addresses"),
        ("ftp://example.com", "not ftp: addresses"),
        ("://example.com", "is not an origin"),
        # A slip in the separator, and bare hosts: the suggestion is a valid origin.
        ("https:/example.com", "Write “://” after https, for example https://example.com."),
        ("http//Example.com", "Write “://” after http, for example http://example.com."),
        (
            "localhost:3000",
            "“localhost:3000” has no scheme. Write the full origin with http:// or https://,"
            " for example https://localhost:3000.",
        ),
        ("Blog.Example.org/about", "for example https://blog.example.org."),
    ],
)
def test_a_malformed_origin_gets_an_accurate_message(given, message):
    with pytest.raises(ValidationError) as error:
        normalize_origin(given)
    (text,) = error.value.messages
    assert message in text
    if "for example" in text:
        suggestion = text.rsplit("for example ", 1)[1].removesuffix(".")
        assert normalize_origin(suggestion) == suggestion


def test_owner_registers_a_site_and_gets_its_tag(client, people):
    signed_in(client, people.owner)
    response = client.post(
        "/orgs/alpha/sites/", {"name": "Blog", "origin": "HTTPS://Blog.Example.com/"}
    )
    assert response.status_code == 302
    site = EmbedSite.objects.get(organization=people.org)
    assert (site.name, site.origin, site.active) == ("Blog", "https://blog.example.com", True)
    assert len(site.key) >= 16
    page = client.get("/orgs/alpha/sites/").content.decode()
    tag = f'<script src="http://testserver/embed.js" data-site="{site.key}" async></script>'
    assert escape(tag) in page
    assert (
        signed_in(client, people.teammate)
        .get("/orgs/alpha/sites/")
        .content.decode()
        .count(escape(tag))
        == 1
    )


def test_the_tag_uses_site_url_when_set(client, people, settings):
    settings.SITE_URL = "https://ccgsc.example.org"
    site = services.site_register(organization=people.org, name="B", origin="https://b.test")
    page = signed_in(client, people.owner).get("/orgs/alpha/sites/").content.decode()
    assert escape(f'src="https://ccgsc.example.org/embed.js" data-site="{site.key}"') in page


def test_an_origin_without_scheme_is_refused_plainly(client, people):
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/sites/", {"name": "Blog", "origin": "example.com"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "has no scheme" in body
    assert "https://example.com" in body
    assert not EmbedSite.objects.exists()


def test_a_javascript_url_is_refused_as_another_scheme(client, people):
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/sites/", {"name": "x", "origin": "javascript:alert(1)"})
    body = response.content.decode()
    assert "Only http:// and https:// sites can embed the script, not javascript:" in body
    assert "no scheme" not in body
    assert not EmbedSite.objects.exists()


def test_an_origin_is_registered_once_per_organization(client, people):
    services.site_register(organization=people.org, name="A", origin="https://a.test")
    signed_in(client, people.owner)
    response = client.post("/orgs/alpha/sites/", {"name": "A again", "origin": "https://A.test/"})
    assert "already registered" in response.content.decode()
    assert EmbedSite.objects.count() == 1
    # Another organization may register the same origin (with its own key).
    other = services.site_register(organization=people.other_org, name="A", origin="https://a.test")
    assert other.key != EmbedSite.objects.get(organization=people.org).key


def test_only_owners_register_and_pause_sites(client, people):
    data = {"name": "X", "origin": "https://x.test"}
    assert signed_in(client, people.teammate).post("/orgs/alpha/sites/", data).status_code == 403
    assert signed_in(client, people.outsider).post("/orgs/alpha/sites/", data).status_code == 404
    assert not EmbedSite.objects.exists()
    site = services.site_register(organization=people.org, name="A", origin="https://a.test")
    url = f"/orgs/alpha/sites/{site.pk}/active/"
    assert signed_in(client, people.teammate).post(url, {"active": "0"}).status_code == 403
    assert signed_in(client, people.outsider).post(url, {"active": "0"}).status_code == 404
    site.refresh_from_db()
    assert site.active


def test_pausing_a_site_refuses_its_visitors(client, people):
    site = services.site_register(organization=people.org, name="A", origin="https://a.test")
    assert EmbedSite.objects.active_for(site.key, "https://a.test") == site
    signed_in(client, people.owner)
    client.post(f"/orgs/alpha/sites/{site.pk}/active/", {"active": "0"})
    assert EmbedSite.objects.active_for(site.key, "https://a.test") is None
    client.post(f"/orgs/alpha/sites/{site.pk}/active/", {"active": "1"})
    assert EmbedSite.objects.active_for(site.key, "https://a.test") == site


def test_active_for_matches_key_and_origin(people):
    site = services.site_register(organization=people.org, name="A", origin="https://a.test")
    assert EmbedSite.objects.active_for(site.key, "https://A.test:443") == site
    assert EmbedSite.objects.active_for(site.key, "https://evil.test") is None
    assert EmbedSite.objects.active_for(site.key, "http://a.test") is None
    assert EmbedSite.objects.active_for(site.key, "null") is None
    assert EmbedSite.objects.active_for("wrong-key", "https://a.test") is None
    assert EmbedSite.objects.active_for("", "https://a.test") is None


# --- admin --------------------------------------------------------------------------------------


def test_admin_pages_work_without_usernames(client, people):
    admin = User.objects.create_superuser("admin@x.test", "pw-admin-123")
    signed_in(client, admin)
    ApiToken.issue(organization=people.org, name="ci", created_by=people.owner)
    services.site_register(organization=people.org, name="A", origin="https://a.test")
    for url in (
        "/admin/accounts/user/",
        f"/admin/accounts/user/{people.owner.pk}/change/",
        "/admin/accounts/user/add/",
        "/admin/accounts/organization/",
        f"/admin/accounts/organization/{people.org.pk}/change/",
        "/admin/accounts/apitoken/",
        "/admin/accounts/embedsite/",
    ):
        assert client.get(url).status_code == 200, url
    assert client.get("/admin/accounts/apitoken/add/").status_code == 403

    response = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "made@x.test",
            "usable_password": "true",
            "password1": "a-long-passphrase-1",
            "password2": "a-long-passphrase-1",
        },
    )
    assert response.status_code == 302
    assert User.objects.get(email="made@x.test").check_password("a-long-passphrase-1")
