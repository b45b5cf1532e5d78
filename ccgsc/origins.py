"""Which browser origins may use the platform's sockets and the protocol's HTTP fallback.

A browser sends `Origin` on every WebSocket handshake and cross-origin POST. Only the
platform's own pages (the contribute page, the owners' pages, the embed iframe, all served from
the platform's origin) may connect: a third-party page must not drive a visitor's signed-in
session. The match is exact on scheme, host and port (`http://localhost:9999` is another site
than `http://localhost:8000`, and `http://` another than `https://`), as the browser's
same-origin policy draws the line.

The platform's origins are the one the request itself was addressed to (its Host header, if
ALLOWED_HOSTS accepts it, with the scheme the connection or the trusted proxy says), SITE_URL's,
and every CSRF_TRUSTED_ORIGINS entry without a wildcard. Clients that are not browsers send no
Origin and are not refused here (their credentials are checked elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http.request import split_domain_port, validate_host

from accounts.models import normalize_origin


def _canonical(origin: str) -> str | None:
    try:
        return normalize_origin(origin)
    except ValidationError:
        return None


def configured_origins() -> set[str]:
    """SITE_URL's origin and the exact CSRF_TRUSTED_ORIGINS (wildcard entries are skipped: a
    socket's peer is never trusted by pattern)."""
    candidates = [settings.SITE_URL, *settings.CSRF_TRUSTED_ORIGINS]
    return {
        origin
        for value in candidates
        if value and "*" not in value
        for origin in [_canonical(value.rstrip("/"))]
        if origin is not None
    }


def platform_origins(host: str | None, *, secure: bool) -> set[str]:
    """The origins of the platform's own pages for a request addressed to `host`."""
    origins = configured_origins()
    if host:
        domain, _port = split_domain_port(host)
        if domain and validate_host(domain, settings.ALLOWED_HOSTS):
            own = _canonical(f"{'https' if secure else 'http'}://{host}")
            if own is not None:
                origins.add(own)
    return origins


def origin_allowed(origin: str | None, *, host: str | None, secure: bool) -> bool:
    """True for no Origin (not a browser) and for exactly one of the platform's origins."""
    if origin is None:
        return True
    canonical = _canonical(origin)
    return canonical is not None and canonical in platform_origins(host, secure=secure)


def _proxy_says_secure(headers: Mapping[str, str]) -> bool | None:
    """What SECURE_PROXY_SSL_HEADER says about the connection, or None if it is not set (the
    same trust Django gives the header for HTTP requests' `request.scheme`)."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy:
        return None
    name, value = proxy
    header = name.removeprefix("HTTP_").replace("_", "-").lower()
    seen = headers.get(header)
    if seen is None:
        return None
    return seen.split(",", 1)[0].strip() == value


def scope_origin_allowed(scope: Mapping[str, Any]) -> bool:
    """origin_allowed for a Channels WebSocket scope. Daphne's WebSocket scopes carry no
    scheme: a TLS proxy's X-Forwarded-Proto (when SECURE_PROXY_SSL_HEADER trusts it) or the
    scope's scheme (other servers) says whether the page was https."""
    raw: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
    secure = _proxy_says_secure(headers)
    if secure is None:
        secure = scope.get("scheme") in ("wss", "https")
    return origin_allowed(headers.get("origin"), host=headers.get("host"), secure=secure)
