"""The Redis channel layer, one instance per event loop.

channels keeps one channel layer object per process, and channels_redis's RedisChannelLayer
keeps its receive machinery on that object: a lock around its specific channels' reads
(ChannelLock, one per process prefix), a receive lock and the receive buffers. Its connection
pools are per event loop, but that machinery is not: an asyncio.Lock binds itself to the first
loop that waits on it, and a receive cancelled while waiting for the channel lock never gives
its place back (channels_redis counts waiters without a try/finally), so the lock outlives the
loop. From then on every receive that has to wait for it, in any other loop of the process,
fails with "Lock ... is bound to a different event loop", and the consumer or dispatcher
doing it stops.

A server process with one event loop (daphne) never meets this; a process that runs several
loops does: the test suite (one loop per test), and async code run through async_to_sync
(Django's WSGI handler running the HTTP fallback, a management command). This layer gives each
running event loop its own RedisChannelLayer, made on first use and dropped once its loop is
closed, so nothing bound to one loop is ever used from another. Channel names stay valid
across instances for sending and for groups (they name Redis keys); a channel is received from
in the loop that created it, as consumers and the dispatcher do. Code with no running loop
(a sync caller about to use async_to_sync) gets a shared instance, which is only right for
sending and groups.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from channels_redis.core import RedisChannelLayer


class LoopLocalRedisChannelLayer:
    """Configured like channels_redis.core.RedisChannelLayer (CHANNEL_LAYERS["default"]
    ["CONFIG"]); every attribute is the running loop's instance's."""

    def __init__(self, **config: Any) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._per_loop: dict[asyncio.AbstractEventLoop, RedisChannelLayer] = {}
        self._no_loop = RedisChannelLayer(**config)

    def for_running_loop(self) -> RedisChannelLayer:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._no_loop
        with self._lock:
            layer = self._per_loop.get(loop)
            if layer is None:
                for old in [lp for lp in self._per_loop if lp.is_closed()]:
                    del self._per_loop[old]
                layer = self._per_loop[loop] = RedisChannelLayer(**self._config)
        return layer

    def __getattr__(self, name: str) -> Any:
        # Only for names this class does not define: the layer's API (send, receive,
        # new_channel, group_add, group_send, flush, extensions, ...).
        return getattr(self.for_running_loop(), name)
