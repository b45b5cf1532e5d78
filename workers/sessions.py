"""Opening and closing worker sessions (sync; called from the async transports in threads)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

import msgspec
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from accounts.models import ApiToken, Membership, User
from workers import liveness, protocol, scheduler
from workers.models import WorkerSession
from workers.protocol import ProtocolError

# The HTTP fallback holds a `want` that finds no work this long (workers/views.py). Its clients
# send something (a ping at least) at least every HTTP_HEARTBEAT_SECONDS, so a session silent
# for two long polls is gone (workers/sweeper.py closes it and frees its leases).
LONG_POLL_SECONDS = 10.0
HTTP_HEARTBEAT_SECONDS = 8


def session_open(
    hello: protocol.Hello,
    *,
    user: User | None,
    transport: str = WorkerSession.Transport.WEBSOCKET,
    origin: str | None = None,
    profile: str | None = None,
    channel: str = "",
) -> tuple[WorkerSession, str]:
    """Authenticate a hello and create its session. Returns the session and a secret the HTTP
    fallback presents with every later request (only its hash is stored). `origin` and
    `profile` come from workers.identity; a network origin already holding
    MAX_SESSIONS_PER_ORIGIN open sessions is refused, and the slots a session may claim
    shrink to what is left of MAX_SLOTS_PER_ORIGIN."""
    organization = None
    if hello.token:
        token = ApiToken.authenticate(hello.token)
        if token is None:
            raise ProtocolError("auth", "invalid or revoked API token")
        organization = token.organization
        if user is None and token.created_by_id is not None:
            user = token.created_by
    site_id = None
    if hello.site:
        site_id = _site_for_key(hello.site)
    slots = hello.slots
    if origin is not None:
        slots = _origin_room(origin, slots)
    secret = secrets.token_urlsafe(24)
    session = WorkerSession.objects.create(
        kind=hello.kind,
        transport=transport,
        user=user if user is not None and user.is_authenticated else None,
        organization=organization,
        site_id=site_id,
        slots=slots,
        origin=origin,
        profile=profile,
        lease_allowance=int(settings.CCGSC["LEASE_ALLOWANCE_START"]),
        accepts_js=hello.accepts_js,
        gpu=msgspec.to_builtins(hello.gpu) if hello.gpu is not None else None,
        memory=hello.memory,
        only_campaign_id=hello.campaign,
        agent=hello.agent or "",
        protocol_version=hello.v,
        secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
        channel=channel,
        # A WebSocket lives as long as this process, which vouches for it (workers.liveness).
        process=liveness.process_key() if transport == WorkerSession.Transport.WEBSOCKET else "",
    )
    return session, secret


def _origin_room(origin: str, slots: int) -> int:
    """The slots a new session from this origin may have, or ProtocolError("busy") when the
    origin has no room. One aggregate over the index of open sessions per origin; concurrent
    hellos may overshoot by a few (a soft cap: what stops collusion is the replica rule)."""
    cfg = settings.CCGSC
    max_sessions, max_slots = int(cfg["MAX_SESSIONS_PER_ORIGIN"]), int(cfg["MAX_SLOTS_PER_ORIGIN"])
    if not max_sessions and not max_slots:
        return slots
    used = WorkerSession.objects.filter(origin=origin, disconnected_at__isnull=True).aggregate(
        sessions=Count("pk"), slots=Sum("slots")
    )
    if max_sessions and used["sessions"] >= max_sessions:
        raise ProtocolError("busy", f"too many worker sessions from your network ({max_sessions})")
    if max_slots:
        room = max_slots - (used["slots"] or 0)
        if room <= 0:
            raise ProtocolError("busy", f"too many worker slots from your network ({max_slots})")
        slots = min(slots, room)
    return slots


def _site_for_key(key: str) -> int | None:
    from accounts import models as accounts_models

    site_model = getattr(accounts_models, "EmbedSite", None)
    if site_model is None:
        return None
    site = site_model.objects.filter(key=key, active=True).values_list("pk", flat=True).first()
    if site is None:
        raise ProtocolError("auth", "unknown or inactive embed site")
    return int(site)


def session_info(session: WorkerSession) -> scheduler.SessionInfo:
    member_of: frozenset[int] = frozenset()
    if session.kind == WorkerSession.Kind.BROWSER and session.user_id and not session.site_id:
        # A member's own browser on the contribute page (not a visitor of an embedding site)
        # also runs the organization's campaigns awaiting approval: owners try theirs there.
        member_of = frozenset(
            Membership.objects.filter(user_id=session.user_id).values_list(
                "organization_id", flat=True
            )
        )
    return scheduler.SessionInfo(
        id=session.pk,
        kind=session.kind,
        user_id=session.user_id,
        organization_id=session.organization_id,
        site_id=session.site_id,
        js=session.accepts_js,
        gpu=msgspec.convert(session.gpu, protocol.GpuInfo) if session.gpu else None,
        memory=session.memory,
        campaign_id=session.only_campaign_id,
        member_of=member_of,
        origin=session.origin,
        profile=session.profile,
        expired=session.leases_expired > 0 or session.benched_until is not None,
    )


def session_flush(session_id: int, stats: dict[str, Any], *, closing: bool = False) -> None:
    """Add the connection's counters accumulated since the last flush."""
    updates: dict[str, Any] = {
        "tasks_done": F("tasks_done") + stats.get("done", 0),
        "tasks_failed": F("tasks_failed") + stats.get("failed", 0),
        "busy_ms": F("busy_ms") + stats.get("busy_ms", 0),
        "idle_ms": F("idle_ms") + stats.get("idle_ms", 0),
        "last_seen_at": timezone.now(),
    }
    if stats.get("avg_task_ms") is not None:
        updates["avg_task_ms"] = stats["avg_task_ms"]
    if stats.get("lease_allowance") is not None:
        updates["lease_allowance"] = stats["lease_allowance"]
    if stats.get("returned_in_time"):
        updates["leases_expired"] = 0  # a result in time ends a run of expiries
    if closing:
        updates["disconnected_at"] = timezone.now()
    WorkerSession.objects.filter(pk=session_id).update(**updates)


def session_close(session_id: int, stats: dict[str, Any]) -> int:
    """The connection is gone: its leases go back to the queue at once, and the session is
    marked closed in the same transaction (nobody sees one without the other)."""
    with transaction.atomic():
        released = scheduler.release(session_id)
        session_flush(session_id, stats, closing=True)
    return released


def close_sessions(session_ids: list[int]) -> int:
    """session_close() of several sessions whose connections are gone with nothing to flush (a
    dead server process's, leaked ones): their leases go back to the queue and they are marked
    closed, in one transaction and three statements however many they are. Returns the
    leases released."""
    with transaction.atomic():
        released = scheduler.release_sessions(session_ids)
        now = timezone.now()
        WorkerSession.objects.filter(pk__in=session_ids, disconnected_at__isnull=True).update(
            last_seen_at=now, disconnected_at=now
        )
    return released


def session_discipline(session_id: int) -> tuple[int, datetime | None]:
    """(lease allowance, benched until) of a session, after the sweeper charged it."""
    row = (
        WorkerSession.objects.filter(pk=session_id)
        .values_list("lease_allowance", "benched_until")
        .first()
    )
    return row if row is not None else (1, None)


def session_for_secret(session_id: int, secret: str) -> WorkerSession | None:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return WorkerSession.objects.filter(
        pk=session_id, secret_hash=digest, disconnected_at__isnull=True
    ).first()
