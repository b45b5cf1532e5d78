"""Users, organizations (the tenants), memberships, per-organization API tokens and the sites
that embed the contributor script."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from typing import Any, ClassVar
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.text import slugify

from accounts.tenancy import TenantQuerySet


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("an email address is required")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """A person: contributor, campaign owner, site owner or admin. Signs in with an email."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)
    display_name = models.CharField(max_length=80, blank=True)
    # Contributors may keep their name off public leaderboards.
    public_profile = models.BooleanField(default=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []
    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.public_name

    @property
    def public_name(self) -> str:
        """The one name a person goes by everywhere (the menu, organizations, leaderboards,
        profiles): the display name, or a neutral handle that never reveals the email."""
        return self.display_name or f"contributor {self.pk}"


class Organization(models.Model):
    """The tenant. Kernels, campaigns, embed sites and API tokens belong to exactly one."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(User, through="Membership", related_name="organizations")

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def unique_slug(name: str) -> str:
        base = slugify(name)[:50] or "org"
        slug, n = base, 1
        while Organization.objects.filter(slug=slug).exists():
            n += 1
            slug = f"{base}-{n}"
        return slug


class MembershipQuerySet(TenantQuerySet["Membership"]):
    tenant_path = "organization"


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


TOKEN_PREFIX = "ccgsc_"  # noqa: S105 (a public prefix that makes leaked tokens greppable)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(TenantQuerySet["ApiToken"]):
    tenant_path = "organization"


class ApiToken(models.Model):
    """A bearer token acting for one organization. Only its sha256 is stored; the token itself
    is shown once, when it is created."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=80)
    token_hash = models.CharField(max_length=64, unique=True)
    # The first characters, kept so people can tell their tokens apart in lists.
    hint = models.CharField(max_length=16)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(
        cls, *, organization: Organization, name: str, created_by: User | None
    ) -> tuple[ApiToken, str]:
        """Create a token; returns the row and the raw token, which is never stored."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            organization=organization,
            name=name,
            token_hash=hash_token(raw),
            hint=raw[: len(TOKEN_PREFIX) + 6],
            created_by=created_by,
        )
        return token, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiToken | None:
        if not raw.startswith(TOKEN_PREFIX):
            return None
        token = (
            cls.objects.select_related("organization", "created_by")
            .filter(token_hash=hash_token(raw), revoked_at__isnull=True)
            .first()
        )
        if token is not None and (
            token.last_used_at is None or (timezone.now() - token.last_used_at).total_seconds() > 60
        ):
            cls.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token


# --- embed sites ----------------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN_EXAMPLE = "https://blog.example.org"
# Values without "://": http or https with a slip in the separator ("https:/x", "https//x"),
# or another scheme ("javascript:alert(1)", "mailto:...") unless what follows the colon is a
# port ("localhost:3000" is a host without its scheme).
_WEB_SCHEME_SLIP = re.compile(r"(https?)(?::/?|//)([^/].*)", re.IGNORECASE | re.DOTALL)
_OTHER_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):(?![0-9]*(?:[/?#]|$))", re.IGNORECASE)


def normalize_origin(value: str) -> str:
    """The canonical form of a web origin, as browsers send it in the Origin header:
    `scheme://host[:port]`, lowercase, http or https only, IDN hosts in punycode, no default
    port, no path, no trailing slash. Raises ValidationError with a message meant for people."""
    raw = value.strip()
    if not raw:
        raise ValidationError("Enter the site's origin, for example https://example.com.")
    if "://" not in raw:
        raise _without_scheme(raw)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValidationError(
            f"“{raw}” is not a valid origin: check the host name and the port (1 to 65535)."
        ) from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise _not_an_origin(raw)
    if scheme not in _DEFAULT_PORTS:
        raise _only_web_schemes(scheme)
    if parts.username is not None or parts.password is not None:
        raise ValidationError("An origin has no user name or password: remove the part before @.")
    if parts.path not in ("", "/") or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ValidationError(
            "An origin is only the scheme, the host and an optional port: remove the path, "
            f"for example write {scheme}://{parts.netloc} instead of {raw}."
        )
    host = _normalize_host(parts.hostname or "")
    if port == 0:
        raise ValidationError(f"“{raw}” has port 0; a port is a number from 1 to 65535.")
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}"


def _not_an_origin(raw: str) -> ValidationError:
    return ValidationError(
        f"“{raw}” is not an origin. Enter one like {_ORIGIN_EXAMPLE}: the scheme and the host, "
        "with a port if the site uses one, and nothing after."
    )


def _only_web_schemes(scheme: str) -> ValidationError:
    return ValidationError(
        f"Only http:// and https:// sites can embed the script, not {scheme}: addresses. "
        f"Enter an origin like {_ORIGIN_EXAMPLE}."
    )


def _without_scheme(raw: str) -> ValidationError:
    """The error for a value without "://", suggesting the origin it probably means when there
    is one (the suggestion is itself a valid origin, never the input pasted after https://)."""
    slip = _WEB_SCHEME_SLIP.fullmatch(raw)
    if slip:
        scheme = slip.group(1).lower()
        try:
            suggestion = normalize_origin(f"{scheme}://{slip.group(2)}")
        except ValidationError:
            return _not_an_origin(raw)
        return ValidationError(f"Write “://” after {scheme}, for example {suggestion}.")
    other = _OTHER_SCHEME.match(raw)
    if other:
        return _only_web_schemes(other.group(1).lower())
    try:
        suggestion = normalize_origin("https://" + re.split(r"[/?#]", raw.lstrip("/"))[0])
    except ValidationError:
        return _not_an_origin(raw)
    return ValidationError(
        f"“{raw}” has no scheme. Write the full origin with http:// or https://, "
        f"for example {suggestion}."
    )


def _normalize_host(host: str) -> str:
    if not host:
        raise ValidationError("The origin has no host name, for example https://example.com.")
    if ":" in host:  # urlsplit strips the brackets of an IPv6 literal
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValidationError(f"“{host}” is not a valid IPv6 address.") from None
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValidationError(f"“{host}” is not a valid host name.") from None
    if len(ascii_host) > 253 or not all(_HOST_LABEL.match(lb) for lb in ascii_host.split(".")):
        raise ValidationError(
            f"“{host}” is not a valid host name (letters, digits, hyphens and dots; no wildcards)."
        )
    return ascii_host


def validate_origin(value: str) -> None:
    """Model-field validator: the value must already be in canonical form."""
    if normalize_origin(value) != value:
        raise ValidationError(f"Write the origin as {normalize_origin(value)}.")


def new_site_key() -> str:
    return secrets.token_urlsafe(12)


class EmbedSiteQuerySet(TenantQuerySet["EmbedSite"]):
    tenant_path = "organization"

    def active_for(self, key: str, origin: str) -> EmbedSite | None:
        """The active site with this public key if `origin` (a browser's Origin header) is the
        one registered for it; None otherwise, including for malformed or "null" origins."""
        if not key or len(key) > 64:
            return None
        try:
            canonical = normalize_origin(origin)
        except ValidationError:
            return None
        return (
            self.filter(key=key, origin=canonical, active=True)
            .select_related("organization")
            .first()
        )


class EmbedSite(models.Model):
    """A third-party website allowed to embed the contributor script for an organization.

    The key is public (it appears in the page's script tag); what it grants is checked against
    the browser's Origin header, so a copied tag does nothing on another site."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="embed_sites"
    )
    name = models.CharField(max_length=80)
    origin = models.CharField(max_length=270, validators=[validate_origin])
    key = models.CharField(max_length=32, unique=True, default=new_site_key, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    active = models.BooleanField(default=True)

    objects = EmbedSiteQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "origin"], name="one_embed_site_per_origin"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.origin})"

    def script_tag(self, base_url: str) -> str:
        """The one line a site owner pastes into their pages; `base_url` is the platform's
        public URL without a trailing slash."""
        return f'<script src="{base_url}/embed.js" data-site="{self.key}" async></script>'
