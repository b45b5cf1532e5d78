"""Who is behind a worker session, as far as the server can tell: the client's address and its
network origin, and the browser profile (a long-lived platform cookie).

Replicas of one task go only to sessions that differ in all of these and in the user
(workers.scheduler), so one person with many sockets, tabs or accounts on one network cannot
agree with themselves. See docs/security.md for what this does and does not stop.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

PROFILE_COOKIE = "ccgsc_profile"
PROFILE_MAX_AGE = 2 * 365 * 24 * 3600

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def _trusted_proxies(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _parse(address: str | None) -> IPAddress | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_trusted_proxy(ip: IPAddress) -> bool:
    proxies = _trusted_proxies(tuple(settings.TRUSTED_PROXY_ADDRESSES))
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: Iterable[str] = ()) -> str | None:
    """The client's address: the socket's peer, unless the peer is a trusted proxy; then the
    rightmost X-Forwarded-For address that is not a trusted proxy itself (addresses to its left
    were written by the client and prove nothing). None when unknown."""
    ip = _parse(peer)
    if ip is None or not _is_trusted_proxy(ip):
        return str(ip) if ip is not None else None
    hops = [h for header in forwarded_for for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_ip = _parse(hop)
        if hop_ip is None:
            return None  # a garbled chain: trust none of it rather than the proxy's address
        if not _is_trusted_proxy(hop_ip):
            return str(hop_ip)
    return str(ip)


def network_origin(address: str | None) -> str | None:
    """The network an address belongs to, by the configured prefix lengths (/24 and /48 by
    default): sessions from one origin count as one volunteer for replication."""
    ip = _parse(address)
    if ip is None:
        return None
    cfg = settings.CCGSC
    if ip.is_loopback and cfg["ORIGIN_IGNORES_LOOPBACK"]:
        # A trial on one machine (make run): the owner's browser and the native worker beside
        # the server are told apart by account and profile only. Never behind a proxy on the
        # same host without TRUSTED_PROXY_ADDRESSES: every visitor would look like loopback.
        return None
    prefix = cfg["ORIGIN_PREFIX_V4"] if ip.version == 4 else cfg["ORIGIN_PREFIX_V6"]
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def profile_key(cookie: str | None) -> str | None:
    """What is stored of a profile cookie: a digest (the cookie itself stays in the browser)."""
    if not cookie or len(cookie) > 128:
        return None
    return hashlib.sha256(cookie.encode()).hexdigest()[:32]


def scope_identity(scope: dict[str, Any]) -> tuple[str | None, str | None]:
    """(network origin, profile key) of a WebSocket connection's ASGI scope."""
    client = scope.get("client")
    peer = client[0] if client else None
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() == b"x-forwarded-for"
    ]
    cookies = scope.get("cookies") or {}
    return network_origin(client_address(peer, forwarded)), profile_key(cookies.get(PROFILE_COOKIE))


def request_identity(request: HttpRequest) -> tuple[str | None, str | None]:
    """(network origin, profile key) of an HTTP-fallback request."""
    forwarded = request.headers.get("X-Forwarded-For")
    address = client_address(request.META.get("REMOTE_ADDR"), [forwarded] if forwarded else [])
    return network_origin(address), profile_key(request.COOKIES.get(PROFILE_COOKIE))


def ensure_profile_cookie(request: HttpRequest, response: HttpResponse, *, framed: bool) -> None:
    """Give this browser a profile cookie if it has none (the contribute page and the embed
    frame: the pages whose harness opens worker sessions). In the embed frame the cookie is
    third-party, so SameSite=None (and Secure, which browsers require with it) when served
    over HTTPS."""
    if profile_key(request.COOKIES.get(PROFILE_COOKIE)) is not None:
        return
    secure = request.is_secure()
    response.set_cookie(
        PROFILE_COOKIE,
        secrets.token_urlsafe(24),
        max_age=PROFILE_MAX_AGE,
        httponly=True,
        secure=secure,
        samesite="None" if framed and secure else "Lax",
    )
