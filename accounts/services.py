"""Writes to accounts, organizations, memberships, API tokens and embed sites.

Every function is keyword-only and atomic, and refuses a change that would break an invariant
with a ValidationError whose message is written for the person who asked. Views, the admin and
the API call these; none of them writes these models directly. Callers have already checked who
may act (see accounts.tenancy); these functions check what may be done.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Model, ProtectedError, Q, RestrictedError
from django.utils import timezone

from accounts.models import (
    ApiToken,
    EmbedSite,
    Membership,
    Organization,
    User,
    normalize_origin,
)

Role = Membership.Role


# --- users --------------------------------------------------------------------------------------


def user_update_profile(*, user: User, display_name: str, public_profile: bool) -> User:
    user.display_name = display_name.strip()
    user.public_profile = public_profile
    user.save(update_fields=["display_name", "public_profile"])
    return user


def user_deletion_blockers(*, user: User) -> list[Organization]:
    """Organizations that would be left without an owner: the user is their only owner and
    someone else is still a member. Deleting the account is refused while any exist."""
    owned = Membership.objects.filter(user=user, role=Role.OWNER).values("organization_id")
    return list(
        Organization.objects.filter(pk__in=owned)
        .annotate(
            owner_count=Count("memberships", filter=Q(memberships__role=Role.OWNER)),
            member_count=Count("memberships"),
        )
        .filter(owner_count=1, member_count__gt=1)
        .order_by("name")
    )


def _solo_organizations(user: User) -> list[Organization]:
    """Organizations whose only member is `user`."""
    joined = Membership.objects.filter(user=user).values("organization_id")
    return list(
        Organization.objects.filter(pk__in=joined)
        .annotate(member_count=Count("memberships"))
        .filter(member_count=1)
        .order_by("name")
    )


@transaction.atomic
def user_delete(*, user: User) -> list[str]:
    """Delete the account and every organization of which it is the only member (with their
    kernels, campaigns, tokens and sites). Returns the names of the deleted organizations.

    Refused while the user is the only owner of an organization that has other members: they
    must hand ownership to someone or remove the members first."""
    # Lock the user's memberships so a teammate added concurrently is either seen here or
    # added after the organization is gone (FOR UPDATE is a no-op on SQLite, whose IMMEDIATE
    # transactions already serialize writers).
    list(Membership.objects.select_for_update().filter(user=user))
    blockers = user_deletion_blockers(user=user)
    if blockers:
        names = ", ".join(org.name for org in blockers)
        raise ValidationError(
            f"You are the only owner of {names}, which has other members. Make another member "
            "an owner (or remove the members) before deleting your account."
        )
    solo = _solo_organizations(user)
    try:
        Organization.objects.filter(pk__in=[org.pk for org in solo]).delete()
        user.delete()
    except (ProtectedError, RestrictedError) as exc:
        # Another app protects some of the rows (on_delete=PROTECT); the transaction rolls
        # back, so nothing is half-deleted, and the person is told what stands in the way.
        blocking = sorted({str(obj._meta.verbose_name_plural) for obj in _blocking_objects(exc)})
        raise ValidationError(
            "Your account could not be deleted because some of its data must be removed "
            f"first: {', '.join(blocking) or 'protected records'}. Nothing was deleted."
        ) from None
    return [org.name for org in solo]


def _blocking_objects(exc: ProtectedError | RestrictedError) -> set[Model]:
    if isinstance(exc, ProtectedError):
        return set(exc.protected_objects)
    return set(exc.restricted_objects)


# --- organizations and memberships --------------------------------------------------------------


@transaction.atomic
def organization_create(*, name: str, owner: User) -> Organization:
    name = name.strip()
    if not name:
        raise ValidationError("Give the organization a name.")
    organization = Organization.objects.create(name=name, slug=Organization.unique_slug(name))
    Membership.objects.create(user=owner, organization=organization, role=Role.OWNER)
    return organization


@transaction.atomic
def membership_add(
    *, organization: Organization, email: str, role: str = Role.MEMBER
) -> Membership:
    """Add an existing user, found by email address (case-insensitively), to the organization."""
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    email = email.strip()
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        raise ValidationError(
            f"Nobody has signed up with {email}. Ask them to create an account first."
        )
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise ValidationError(f"{email} is already a member of {organization.name}.")
    try:
        with transaction.atomic():
            return Membership.objects.create(organization=organization, user=user, role=role)
    except IntegrityError:  # added concurrently by another owner
        raise ValidationError(f"{email} is already a member of {organization.name}.") from None


def membership_invite(
    *, organization: Organization, email: str, role: str, invited_by: User, base_url: str
) -> Membership:
    """Add a person who has no account yet: an account is made for the address (no password,
    nothing else about them) and they get an email with a link to choose a password, valid for
    PASSWORD_RESET_TIMEOUT (after that, "forgot password" with the same address works). An
    address that has an account is simply added (membership_add)."""
    from allauth.account.forms import default_token_generator
    from allauth.account.utils import user_pk_to_url_str
    from django.core.mail import send_mail
    from django.urls import reverse

    email = email.strip()
    if User.objects.filter(email__iexact=email).exists():
        return membership_add(organization=organization, email=email, role=role)
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    with transaction.atomic():
        try:
            user = User.objects.create_user(email=email, password=None)
        except IntegrityError:  # signed up this very moment
            raise ValidationError(f"{email} just signed up: add them again.") from None
        membership = Membership.objects.create(organization=organization, user=user, role=role)
    link = base_url.rstrip("/") + reverse(
        "account_reset_password_from_key",
        kwargs={
            "uidb36": user_pk_to_url_str(user),
            "key": default_token_generator.make_token(user),
        },
    )
    send_mail(
        f"[CCGSC] {invited_by} invited you to {organization.name}",
        f"{invited_by} ({invited_by.email}) added you to the organization {organization.name} on "
        f"CCGSC, the volunteer computing platform at {base_url}, as "
        f"{membership.get_role_display().lower()}.\n\n"
        f"Choose a password to sign in:\n{link}\n\n"
        "The link works for a few days; after that, use “Forgot password?” on the sign-in page "
        "with this address. If you do not know them, ignore this mail: nothing happens until "
        "you choose a password.\n",
        None,
        [email],
    )
    return membership


def _lock_owners(organization: Organization) -> list[Membership]:
    # Two owners demoting or removing each other at once must not both succeed and leave the
    # organization ownerless: lock the owner rows before counting them.
    return list(
        Membership.objects.select_for_update().filter(organization=organization, role=Role.OWNER)
    )


@transaction.atomic
def membership_set_role(*, membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    if membership.role == role:
        return membership
    owners = _lock_owners(membership.organization)
    if role != Role.OWNER and [m.pk for m in owners] == [membership.pk]:
        raise ValidationError(
            f"{membership.user.email} is the only owner of {membership.organization.name}. "
            "Make someone else an owner first."
        )
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    owners = _lock_owners(membership.organization)
    if [m.pk for m in owners] == [membership.pk]:
        raise ValidationError(
            f"{membership.user.email} is the only owner of {membership.organization.name} and "
            "cannot be removed. Make someone else an owner first."
        )
    membership.delete()


# --- API tokens ---------------------------------------------------------------------------------


@transaction.atomic
def token_issue(
    *, organization: Organization, name: str, created_by: User | None
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the raw token. Only the token's hash is stored, so
    the caller shows the raw token once and can never show it again."""
    name = name.strip()
    if not name:
        raise ValidationError("Give the token a name, for example the machine or script using it.")
    return ApiToken.issue(organization=organization, name=name, created_by=created_by)


@transaction.atomic
def token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke the token at once; revoking twice keeps the first revocation time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token


# --- embed sites --------------------------------------------------------------------------------


@transaction.atomic
def site_register(*, organization: Organization, name: str, origin: str) -> EmbedSite:
    """Register a site that may embed the contributor script; `origin` is normalized (see
    accounts.models.normalize_origin) and must be new to the organization."""
    name = name.strip()
    if not name:
        raise ValidationError("Give the site a name.")
    canonical = normalize_origin(origin)
    if EmbedSite.objects.filter(organization=organization, origin=canonical).exists():
        raise ValidationError(f"{canonical} is already registered for {organization.name}.")
    try:
        with transaction.atomic():
            return EmbedSite.objects.create(organization=organization, name=name, origin=canonical)
    except IntegrityError:  # registered concurrently
        raise ValidationError(
            f"{canonical} is already registered for {organization.name}."
        ) from None


@transaction.atomic
def site_delete(*, site: EmbedSite) -> None:
    """Delete an embed site nobody has computed through yet. A site with contributions (or
    visitors computing now) is refused: its history belongs to the site leaderboard, and
    pausing it (site_set_active) stops new work just as well."""
    from accounts.selectors import organization_sites_with_activity

    annotated = organization_sites_with_activity(site.organization).filter(pk=site.pk).first()
    if annotated is None:
        return
    used = any(
        getattr(annotated, field, None)
        for field in ("contributed_results", "contributed_points", "computing_now")
    )
    if used:
        raise ValidationError(
            f"{site.origin} has visitors' contributions on record (or visitors computing now), "
            "so it cannot be deleted: pause it instead, and its tag stops offering work."
        )
    site.delete()


@transaction.atomic
def site_set_active(*, site: EmbedSite, active: bool) -> EmbedSite:
    """Pause or resume a site: an inactive site's visitors are refused a connection, and its
    history (what its visitors contributed) is kept."""
    site.active = active
    site.save(update_fields=["active"])
    return site
