"""What every WebSocket consumer of the platform shares."""

from __future__ import annotations

import logging
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
