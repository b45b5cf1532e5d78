"""The native CCGSC worker: runs campaign tasks in wasmtime and talks protocol v1 to a server.

Start it with `ccgsc-worker --server URL` (or `python -m workers.native`). This package must
install and run without Django: it imports only the standard library, msgpack, wasmtime,
websockets, httpx, `workers.protocol` and `kernelhost`. `tests/test_native_worker.py` checks
that importing it never pulls in Django.

Modules:

- `client`: the Worker (sessions, feeding slots, batching results, reconnecting, shutdown);
- `executor`: campaign descriptors, jobs and running one job through the KernelHost;
- `transport`: WebSocket and HTTP-fallback transports with one interface;
- `cache`: content-addressed blobs (kernels, static data) fetched over HTTP, cached on disk;
- `backoff`: exponential reconnect backoff with jitter.
"""

from __future__ import annotations

__version__ = "0.1"
