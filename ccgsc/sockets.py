"""What every WebSocket consumer of the platform shares."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from autobahn.exception import Disconnected

log = logging.getLogger(__name__)


class QuietWhenClosed:
    """A Channels consumer mixin: a send to a socket that is already closing is dropped
    quietly. The peer may hang up (or we may have closed it) while a handler is still
    finishing or a group event arrives; daphne then raises autobahn's Disconnected ("Attempt to
    send on a closed protocol") into the consumer, which ended the consumer with a logged
    traceback. The message had nowhere to go, and disconnect() cleans up as for any close.
    Wrapping the ASGI send callable covers every way out (send, send_json, close)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_unless_closed(message: dict[str, Any]) -> None:
            try:
                await send(message)
            except Disconnected:
                log.debug("dropped a %s for a closed socket", message.get("type"))

        await super().__call__(scope, receive, send_unless_closed)  # type: ignore[misc]


#: Where the server (ccgsc/server.py) puts a WebSocket connection's Shortcut: the scope's ASGI
#: extensions.
SHORTCUT = "ccgsc.shortcut"
_NONE: Mapping[bytes, bytes] = {}


class Shortcut:
    """Frames a WebSocket connection's server protocol answers itself, without waking the
    application (ccgsc/server.py; the worker endpoint arms it with protocol.PING_ANSWERS once a
    session is open). An exact frame of `answers` is answered with its bytes only while no
    earlier frame is `pending` in the application, so answers keep the order of the frames:
    the protocol counts each frame it hands on, the consumer calls done() when it has handled
    one. Unarmed (the default), every frame goes to the application as in daphne.

    Armed with a `beat` (ping, pong), the server's keepalive sends a silent connection that
    ping (a frame the application can see, unlike a WebSocket ping) where it would send a
    WebSocket ping, and takes the exact pong frame as its answer, which never reaches the
    application (it answers nothing, so it has no order to keep)."""

    __slots__ = ("answers", "beat", "keepalive", "longest", "pending", "pong")

    def __init__(self) -> None:
        self.answers: Mapping[bytes, bytes] = _NONE
        self.longest = 0
        self.pending = 0
        self.beat: bytes | None = None
        self.pong: bytes | None = None
        # Seconds of silence after which the server's keepalive pings the connection (its
        # ping_interval), for the application to tell its peer; None: unknown.
        self.keepalive: float | None = None

    def arm(self, answers: Mapping[bytes, bytes], beat: tuple[bytes, bytes] | None = None) -> None:
        self.answers, self.longest = answers, max(map(len, answers), default=0)
        self.beat, self.pong = beat or (None, None)

    def disarm(self) -> None:
        self.answers, self.longest = _NONE, 0
        self.beat = self.pong = None

    def lookup(self, frame: bytes) -> bytes | None:
        """The answer to a frame if it is answered now (nothing pending before it), else None;
        counts nothing."""
        if not self.pending and len(frame) <= self.longest:
            return self.answers.get(frame)
        return None

    def answer(self, frame: bytes) -> bytes | None:
        """The answer to a frame, or None: the application reads it (it is counted pending)."""
        found = self.lookup(frame)
        if found is None:
            self.pending += 1
        return found

    def done(self) -> None:
        """The application has handled a frame."""
        self.pending = max(0, self.pending - 1)


def scope_shortcut(scope: Mapping[str, Any]) -> Shortcut | None:
    """The connection's Shortcut, when its server makes one (not under daphne's own server nor
    the test communicator)."""
    found = scope.get("extensions", {}).get(SHORTCUT)
    return found if isinstance(found, Shortcut) else None
