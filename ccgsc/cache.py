"""One Redis connection pool per process for Django's cache (the API's rate counters).

Django keeps a cache object per thread, and under ASGI every request's synchronous code runs
in a thread of its own (Django's ThreadSensitiveContext), so the Redis backend's per-object
pool lived one request: each request opened a fresh connection (a TCP handshake, redis-py's
CLIENT SETINFO round trips and its look-up of its own version in the package metadata) before
the throttle's first GET. Measured on POST /api/v1/run: about a tenth of the request's CPU.
redis-py's pools are thread-safe and reset themselves in a forked child, so every cache object
of the process shares one, per URL and options.
"""

from __future__ import annotations

import threading
from typing import Any

from redis import ConnectionPool

_pools: dict[tuple[str, tuple[tuple[str, str], ...]], ConnectionPool] = {}
_lock = threading.Lock()


class SharedConnectionPool(ConnectionPool):
    """CACHES["default"]["OPTIONS"]["pool_class"]: from_url gives the process's pool for that
    URL and options, made on first use."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ConnectionPool:  # type: ignore[override]
        key = (url, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = ConnectionPool.from_url(url, **kwargs)
            return pool
