"""Account settings, the dashboard and the organization pages (members, API tokens, sites).

Views are thin: every organization comes from accounts.tenancy (404 for outsiders, 403 for
members attempting an owner-only action), input is validated by accounts.forms, and every
write is one call into accounts.services.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import mailbox, selectors, services
from accounts.forms import (
    AccountDeleteForm,
    MemberAddForm,
    MemberRoleForm,
    OrganizationCreateForm,
    ProfileForm,
    SiteRegisterForm,
    TokenCreateForm,
)
from accounts.models import ApiToken, EmbedSite, Membership, Organization, User
from accounts.tenancy import Actor, get_for_actor, get_organization, get_organization_as_owner
from ccgsc import hooks


def _user(request: HttpRequest) -> User:
    # login_required guarantees an authenticated accounts.User.
    assert isinstance(request.user, User)
    return request.user


def _error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _org_page(
    request: HttpRequest, template: str, org: Organization, tab: str, **context: Any
) -> HttpResponse:
    actor = Actor.from_request(request)
    return render(
        request,
        template,
        {"org": org, "tab": tab, "is_owner": actor.is_owner_of(org), **context},
    )


# --- the signed-in user -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def account_settings(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if request.method == "POST":
        form = ProfileForm(request.POST, user=user)
        if form.is_valid():
            services.user_update_profile(
                user=user,
                display_name=form.cleaned_data["display_name"],
                public_profile=form.cleaned_data["public_profile"],
            )
            messages.success(request, "Your profile was saved.")
            return redirect("accounts:settings")
    else:
        form = ProfileForm(
            initial={"display_name": user.display_name, "public_profile": user.public_profile},
            user=user,
        )
    return render(request, "accounts/settings.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def account_delete(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    blockers = services.user_deletion_blockers(user=user)
    form = AccountDeleteForm(request.POST if request.method == "POST" else None, user=user)
    if request.method == "POST" and form.is_valid():
        try:
            deleted_orgs = services.user_delete(user=user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            logout(request)
            text = "Your account has been deleted."
            if deleted_orgs:
                text += " So were the organizations only you belonged to: " + ", ".join(
                    deleted_orgs
                )
                text += "."
            messages.success(request, text)
            return redirect("/")
    solo = [
        m.organization
        for m in selectors.memberships_for_user(user)
        if getattr(m, "member_count", 0) == 1
    ]
    return render(
        request,
        "accounts/delete.html",
        {"form": form, "blockers": blockers, "solo_orgs": solo},
    )


@login_required
@require_http_methods(["GET", "POST"])
def dashboard(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = OrganizationCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            org = services.organization_create(name=form.cleaned_data["name"], owner=user)
        except ValidationError as exc:
            form.add_error("name", exc)
        else:
            messages.success(request, f"Created {org.name}. You are its owner.")
            return redirect("accounts:org_home", slug=org.slug)
    return render(
        request,
        "accounts/dashboard.html",
        {"memberships": selectors.memberships_for_user(user), "form": form},
    )


# --- organizations ------------------------------------------------------------------------------


@login_required
@require_GET
def org_home(request: HttpRequest, slug: str) -> HttpResponse:
    org = get_organization(Actor.from_request(request), slug)
    return _org_page(
        request,
        "accounts/org_home.html",
        org,
        "home",
        member_count=org.memberships.count(),
        site_count=org.embed_sites.count(),
    )


@login_required
@require_http_methods(["GET", "POST"])
def org_members(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    if request.method == "POST":
        org = get_organization_as_owner(actor, slug)
        form = MemberAddForm(request.POST)
        if form.is_valid():
            try:
                membership = services.membership_invite(
                    organization=org,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=_user(request),
                    base_url=_platform_url(request),
                )
            except ValidationError as exc:
                form.add_error("email", exc)
            else:
                role = membership.get_role_display().lower()
                if membership.user.has_usable_password():
                    text = f"Added {membership.user.email} as {role}."
                else:
                    text = (
                        f"Invited {membership.user.email} as {role}: they got an email with a "
                        "link to choose a password."
                    )
                messages.success(request, text)
                return redirect("accounts:org_members", slug=org.slug)
    else:
        org = get_organization(actor, slug)
        form = MemberAddForm()
    return _org_page(
        request,
        "accounts/org_members.html",
        org,
        "members",
        memberships=selectors.organization_members(org),
        form=form,
        roles=Membership.Role.choices,
    )


@login_required
@require_POST
def org_member_role(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org = get_organization_as_owner(actor, slug)
    membership = get_for_actor(
        Membership.objects.filter(organization=org).select_related("user", "organization"),
        actor,
        pk=membership_id,
    )
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role: owner or member.")
    else:
        try:
            services.membership_set_role(membership=membership, role=form.cleaned_data["role"])
        except ValidationError as exc:
            messages.error(request, _error_text(exc))
        else:
            messages.success(
                request,
                f"{membership.user.email} is now {membership.get_role_display().lower()}.",
            )
    return redirect("accounts:org_members", slug=org.slug)


@login_required
@require_POST
def org_member_remove(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    """Owners remove anyone; any member may remove themselves (leave)."""
    actor = Actor.from_request(request)
    org = get_organization(actor, slug)
    membership = get_for_actor(
        Membership.objects.filter(organization=org).select_related("user", "organization"),
        actor,
        pk=membership_id,
    )
    leaving = membership.user_id == _user(request).pk
    if not leaving and not actor.is_owner_of(org):
        raise PermissionDenied("only the organization's owners may remove members")
    try:
        services.membership_remove(membership=membership)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect("accounts:org_members", slug=org.slug)
    if leaving:
        messages.success(request, f"You left {org.name}.")
        return redirect("accounts:dashboard")
    messages.success(request, f"Removed {membership.user.email} from {org.name}.")
    return redirect("accounts:org_members", slug=org.slug)


# The one-time secret of a token just created, between the POST that issues it and the GET that
# shows it (POST/redirect/GET, so reloading the page cannot issue a second token).
JUST_CREATED_SESSION_KEY = "accounts:new_api_token"


@never_cache  # the GET after a creation carries a raw token: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def org_tokens(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    if request.method == "POST":
        org = get_organization_as_owner(actor, slug)
        form = TokenCreateForm(request.POST)
        if form.is_valid():
            try:
                token, raw = services.token_issue(
                    organization=org, name=form.cleaned_data["name"], created_by=_user(request)
                )
            except ValidationError as exc:
                form.add_error("name", exc)
            else:
                # Only a hash is stored with the token. The raw secret waits in the session just
                # until the redirected GET below pops it: shown once, then gone from the server.
                request.session[JUST_CREATED_SESSION_KEY] = {
                    "org": org.pk,
                    "token": token.pk,
                    "raw": raw,
                }
                return redirect("accounts:org_tokens", slug=org.slug)
    else:
        org = get_organization(actor, slug)
        form = TokenCreateForm()
        created = request.session.get(JUST_CREATED_SESSION_KEY)
        if isinstance(created, dict) and created.get("org") == org.pk:
            del request.session[JUST_CREATED_SESSION_KEY]
            # Not if it was revoked in between: a dead secret is not worth showing.
            new_token = ApiToken.objects.filter(
                organization=org, pk=int(created["token"]), revoked_at__isnull=True
            ).first()
            if new_token is not None:
                return _org_page(
                    request,
                    "accounts/org_token_created.html",
                    org,
                    "tokens",
                    token=new_token,
                    raw_token=str(created["raw"]),
                )
    return _org_page(
        request,
        "accounts/org_tokens.html",
        org,
        "tokens",
        tokens=selectors.organization_tokens(org),
        form=form,
    )


@login_required
@require_POST
def org_token_revoke(request: HttpRequest, slug: str, token_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org = get_organization_as_owner(actor, slug)
    token = get_for_actor(ApiToken.objects.filter(organization=org), actor, pk=token_id)
    services.token_revoke(token=token)
    messages.success(request, f"Revoked the token “{token.name}”. It stops working now.")
    return redirect("accounts:org_tokens", slug=org.slug)


def _platform_url(request: HttpRequest) -> str:
    return settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")


@login_required
@require_http_methods(["GET", "POST"])
def org_sites(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    if request.method == "POST":
        org = get_organization_as_owner(actor, slug)
        form = SiteRegisterForm(request.POST)
        if form.is_valid():
            try:
                site = services.site_register(
                    organization=org,
                    name=form.cleaned_data["name"],
                    origin=form.cleaned_data["origin"],
                )
            except ValidationError as exc:
                form.add_error("origin", exc)
            else:
                messages.success(
                    request, f"Registered {site.origin}. Paste its tag into the site's pages."
                )
                return redirect("accounts:org_sites", slug=org.slug)
    else:
        org = get_organization(actor, slug)
        form = SiteRegisterForm()
    base_url = _platform_url(request)
    sites = [
        (site, site.script_tag(base_url))
        for site in selectors.organization_sites_with_activity(org)
    ]
    return _org_page(
        request,
        "accounts/org_sites.html",
        org,
        "sites",
        sites=sites,
        form=form,
        activity=bool(hooks.registry.site_annotators),
    )


@login_required
@require_POST
def org_site_delete(request: HttpRequest, slug: str, site_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org = get_organization_as_owner(actor, slug)
    site = get_for_actor(EmbedSite.objects.filter(organization=org), actor, pk=site_id)
    try:
        services.site_delete(site=site)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Deleted {site.origin}: its tag no longer loads anything.")
    return redirect("accounts:org_sites", slug=org.slug)


@login_required
@require_POST
def org_site_active(request: HttpRequest, slug: str, site_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org = get_organization_as_owner(actor, slug)
    site = get_for_actor(EmbedSite.objects.filter(organization=org), actor, pk=site_id)
    # The desired state is explicit, so a double-submitted form does not flip it back.
    services.site_set_active(site=site, active=request.POST.get("active") == "1")
    state = "resumed: its visitors can contribute again" if site.active else "paused"
    messages.success(request, f"{site.origin} is {state}.")
    return redirect("accounts:org_sites", slug=org.slug)


@require_GET
@never_cache
def dev_mailbox(request: HttpRequest) -> HttpResponse:
    """The embedded mode's mailbox (accounts.mailbox says who may read it)."""
    if not mailbox.may_read(request):
        raise Http404("no mailbox")
    return render(
        request,
        "accounts/mailbox.html",
        {"mails": mailbox.newest(), "folder": mailbox.mailbox_dir()},
    )
