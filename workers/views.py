"""HTTP endpoints of the worker side: content-addressed blobs, the HTTP fallback of the
protocol, and the public status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from campaigns.models import Blob, Campaign, Result
from ccgsc.api import api_methods
from ccgsc.origins import origin_allowed
from workers import dispatch, identity, protocol, sessions
from workers.connection import HTTP_BUSY_RECHECK_SECONDS, WorkerConnection, db
from workers.models import WorkerSession
from workers.protocol import ProtocolError
from workers.sweeper import ensure_sweeper, last_sweep

CONTENT_TYPES = {
    "wasm": "application/wasm",
    "js": "text/javascript",
    # gpu kernels: WGSL source (the media type registered for WGSL).
    "wgsl": "text/wgsl; charset=utf-8",
    "": "application/octet-stream",
}
LONG_POLL_SECONDS = sessions.LONG_POLL_SECONDS
MSGPACK = "application/msgpack"


@require_GET
def blob(request: HttpRequest, sha256: str, ext: str = "") -> HttpResponse:
    """Kernels and static data by hash. Immutable: a hash names one content forever."""
    if request.headers.get("If-None-Match") == f'"{sha256}"':
        response = HttpResponse(status=304)
    else:
        data = Blob.objects.filter(sha256=sha256).values_list("data", flat=True).first()
        if data is None:
            return JsonResponse(
                {"error": {"code": "not_found", "message": "no such blob"}}, status=404
            )
        response = HttpResponse(bytes(data), content_type=CONTENT_TYPES.get(ext, CONTENT_TYPES[""]))
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["ETag"] = f'"{sha256}"'
    # Workers of embedded pages fetch from the platform's origin inside the iframe; native
    # workers ignore CORS. Public content-addressed bytes are safe to share.
    response["Access-Control-Allow-Origin"] = "*"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


def _msgpack_response(messages: list[protocol.ServerMessage], status: int = 200) -> HttpResponse:
    return HttpResponse(
        protocol.encode(protocol.Reply(messages=messages)), content_type=MSGPACK, status=status
    )


def _has_tasks(messages: list[protocol.ServerMessage]) -> bool:
    return any(isinstance(m, protocol.Tasks) for m in messages)


def _too_large(message: str) -> HttpResponse:
    return _msgpack_response([protocol.Error(code="too_large", message=message, fatal=True)], 413)


@csrf_exempt
@api_methods("POST")
async def work(request: HttpRequest) -> HttpResponse:
    """The protocol over HTTP for networks that block WebSockets: POST a msgpack map
    {session, secret, messages: [...]} and get {messages: [...]} back. The first request carries
    hello and no session. A `want` that finds no work waits up to 10 s for some (long poll)."""
    if not origin_allowed(
        request.headers.get("Origin"), host=request.headers.get("Host"), secure=request.is_secure()
    ):
        return _msgpack_response(
            [protocol.Error(code="origin", message="origin refused", fatal=True)], 403
        )
    ensure_sweeper()
    out: list[protocol.ServerMessage] = []

    async def send(message: protocol.ServerMessage) -> None:
        out.append(message)

    # A body over the frame limit is refused with the protocol's too_large error and 413,
    # before it is read when its length is declared.
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > protocol.MAX_FRAME:
        return _too_large(f"a body of {declared} bytes exceeds {protocol.MAX_FRAME}")
    try:
        body = protocol.decode_envelope(request.body)
    except RequestDataTooBig:
        return _too_large(f"the body exceeds {protocol.MAX_FRAME} bytes")
    except ProtocolError as exc:
        return _msgpack_response(
            [protocol.Error(code=exc.code, message=exc.message, fatal=True)],
            413 if exc.code == "too_large" else 400,
        )
    user = await request.auser()
    origin, profile = identity.request_identity(request)
    conn = WorkerConnection(
        send, user=user, transport=WorkerSession.Transport.HTTP, origin=origin, profile=profile
    )
    if body.session is not None:
        session = await db(sessions.session_for_secret)(body.session, body.secret or "")
        if session is None:
            return _msgpack_response(
                [
                    protocol.Error(
                        code="session",
                        message="unknown or closed session; send hello again",
                        fatal=True,
                    )
                ],
                404,
            )
        await conn.restore(session)
    wanted_work = False
    for raw in body.messages:
        try:
            # Decoded one by one, in the session's version (known after restore or hello).
            message = conn.decode(raw)
            wanted_work = wanted_work or isinstance(message, protocol.Want | protocol.Result)
            await conn.handle(message)
        except ProtocolError as exc:
            if await conn.protocol_error(exc):
                break
    if wanted_work and conn.wanted > 0 and not conn.closed and not _has_tasks(out):
        await _long_poll(conn, out)
        if _has_tasks(out):
            out[:] = [m for m in out if not isinstance(m, protocol.Idle)]
    if conn.info is not None and not conn.closed:
        await conn.flush()
    return _msgpack_response(out)


async def _long_poll(conn: WorkerConnection, out: list[protocol.ServerMessage]) -> None:
    """Hold the request until tasks are sent or LONG_POLL_SECONDS pass. An empty-handed
    session waits in the process's dispatcher like an idle WebSocket (no query of its own); one
    that still holds leases looks again every HTTP_BUSY_RECHECK_SECONDS, because results sent
    in other requests (maybe to another process) may have freed room."""
    waiter = dispatch.dispatcher()
    deadline = time.monotonic() + LONG_POLL_SECONDS
    try:
        while not conn.closed and not _has_tasks(out):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waiter.wait_for_work(conn, conn.seen_nudges)
            pause = left if not conn.in_hand else min(left, HTTP_BUSY_RECHECK_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.delivered.wait(), pause)
            if conn.in_hand and not conn.delivered.is_set():
                waiter.stop_waiting(conn)
                await conn.reload_leases()
                await conn.on_work_available()
    finally:
        waiter.stop_waiting(conn)


@csrf_exempt  # read-only and public: a POST learns it is the wrong method (405), not CSRF
@api_methods("GET")
def status(request: HttpRequest) -> JsonResponse:
    """Public health and throughput, cached for a second."""
    data = cache.get("ccgsc:status")
    if data is None:
        now = timezone.now()
        workers = WorkerSession.objects.filter(disconnected_at__isnull=True).aggregate(
            browser=Count("pk", filter=Q(kind=WorkerSession.Kind.BROWSER)),
            native=Count("pk", filter=Q(kind=WorkerSession.Kind.NATIVE)),
            slots=Sum("slots"),
        )
        last_minute = Result.objects.filter(
            returned_at__gte=now - timedelta(seconds=60), state=Result.State.RETURNED
        ).count()
        campaigns = Campaign.objects.aggregate(
            running=Count("pk", filter=Q(state=Campaign.State.RUNNING)),
            done=Sum("tasks_done"),
        )
        data = {
            "workers": {
                "browser": workers["browser"],
                "native": workers["native"],
                "total": workers["browser"] + workers["native"],
                "slots": workers["slots"] or 0,
            },
            "tasks_done": campaigns["done"] or 0,
            "tasks_per_second": round(last_minute / 60.0, 2),
            "campaigns_running": campaigns["running"],
            "time": now.isoformat(),
            # The deployment's one lease sweeper: when it last ran, and by which process.
            "sweeper": last_sweep(),
        }
        cache.set("ccgsc:status", data, 1)
    response = JsonResponse(data)
    response["Cache-Control"] = "no-cache"
    response["Access-Control-Allow-Origin"] = "*"
    return response
