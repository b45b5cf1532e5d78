"""Kernels and static data by content hash: fetched from the server over HTTP, kept on disk.

`GET {server}/blobs/{sha256}` is immutable, so a blob is downloaded once per machine and then
read from `<cache dir>/blobs/<sha256>`. Every download is hashed and compared with the name it
was asked for before it is used or stored: the worker runs what it fetched, so bytes that do
not match (a broken proxy, a tampered mirror) are refused. Files are written atomically
(temporary file, then rename) so a crash or a concurrent worker never leaves a half blob under
a real name, and a file that no longer matches its name is deleted and fetched again.

Kernels are additionally marked in `<cache dir>/kernels/`, because hello reports the kernel
hashes a worker has cached (static data is not a kernel).

With a size cap (max_bytes), the least recently used blobs go when a download takes the
cache past it (a blob's mtime is when it was last read from disk or stored), never one held
in memory or being downloaded: those are the ones in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import httpx

from .backoff import Backoff

log = logging.getLogger("ccgsc.worker")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Refuse blobs larger than this (the server caps kernels at 16 MiB and static data at 64 MiB
#: by default; this only bounds what a misbehaving server could make us hold in memory).
MAX_BLOB_BYTES = 1024 * 1024 * 1024
#: Bytes of blobs kept in memory (least recently used dropped first).
MEMORY_BYTES = 512 * 1024 * 1024
#: How hello's kernel list is bounded (workers.protocol accepts at most 1000).
MAX_REPORTED_KERNELS = 1000
DOWNLOAD_ATTEMPTS = 4


class BlobError(Exception):
    """A blob could not be had: not on the server, wrong hash, or the network kept failing."""


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/ccgsc (or ~/.cache/ccgsc; %LOCALAPPDATA%\\ccgsc on Windows)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA")
    return (Path(base) if base else Path.home() / ".cache") / "ccgsc"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class BlobCache:
    """Content-addressed blobs from `base_url` (the server's root URL), cached under `root`.

    `get()` is the one entry point: memory, then disk, then download; concurrent calls for one
    hash share a single download. The async methods must be called on one event loop; disk I/O
    runs in threads so the loop never waits on it.
    """

    def __init__(
        self,
        root: Path,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        memory_bytes: int = MEMORY_BYTES,
        max_blob_bytes: int = MAX_BLOB_BYTES,
        max_bytes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.kernels_dir = self.root / "kernels"
        for d in (self.root, self.blobs_dir, self.kernels_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._own_client = client is None
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_size = 0
        self._memory_limit = memory_bytes
        self._max_blob = max_blob_bytes
        self.max_bytes = max_bytes
        self._inflight: dict[str, asyncio.Task[bytes]] = {}
        self.downloads = 0  # counters for logs and tests
        self.disk_hits = 0
        self.prune()  # a smaller cap than last time applies at once

    # --- public API ---------------------------------------------------------------------------

    async def get(self, sha256: str) -> bytes:
        """The bytes whose sha256 is `sha256`. Raises BlobError (or ValueError for a name that
        is not 64 lowercase hex digits)."""
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        data = self._memory.get(sha256)
        if data is not None:
            self._memory.move_to_end(sha256)
            return data
        task = self._inflight.get(sha256)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(sha256))
            self._inflight[sha256] = task
            task.add_done_callback(lambda _t: self._inflight.pop(sha256, None))
        # shield: one caller giving up (cancelled) must not cancel the others' download.
        return await asyncio.shield(task)

    def mark_kernel(self, sha256: str) -> None:
        """Remember that `sha256` is a kernel (for hello's list). Cheap; errors are ignored."""
        if SHA256_RE.match(sha256):
            with contextlib.suppress(OSError):
                (self.kernels_dir / sha256).touch()

    def kernel_hashes(self, limit: int = MAX_REPORTED_KERNELS) -> list[str]:
        """Cached kernels (blob present), most recently used first, at most `limit`."""
        found: list[tuple[float, str]] = []
        try:
            entries = list(os.scandir(self.kernels_dir))
        except OSError:
            return []
        for entry in entries:
            if SHA256_RE.match(entry.name) and (self.blobs_dir / entry.name).is_file():
                with contextlib.suppress(OSError):
                    found.append((entry.stat().st_mtime, entry.name))
        found.sort(reverse=True)
        return [name for _, name in found[:limit]]

    def usage(self) -> int:
        """Bytes of blobs on disk."""
        return sum(size for _, _, size in self._entries())

    def _entries(self) -> list[tuple[float, str, int]]:
        found: list[tuple[float, str, int]] = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.blobs_dir):
                if SHA256_RE.match(entry.name):
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        found.append((st.st_mtime, entry.name, st.st_size))
        return found

    def in_use(self) -> set[str]:
        """The blobs held in memory or being downloaded (call on the loop's thread)."""
        return set(self._memory) | set(self._inflight)

    def prune(self, keep: Iterable[str] = ()) -> int:
        """Bring the blobs on disk under max_bytes, least recently used first, sparing `keep`
        (pass in_use()). Returns the bytes freed; never raises. Safe in a thread."""
        if self.max_bytes is None:
            return 0
        entries = self._entries()
        total = sum(size for _, _, size in entries)
        spared = set(keep)
        freed = 0
        for _, name, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if name in spared:
                continue
            try:
                self.path(name).unlink()
            except FileNotFoundError:
                pass  # another worker sharing the directory removed it first
            except OSError as exc:
                log.warning("could not prune cached blob %s: %s", name[:12], exc)
                continue
            with contextlib.suppress(OSError):
                (self.kernels_dir / name).unlink(missing_ok=True)
            total -= size
            freed += size
        if freed:
            log.info("cache: removed %d bytes of least recently used blobs", freed)
        return freed

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- internals ----------------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256

    def read_local(self, sha256: str) -> bytes | None:
        """The cached file if it exists and still hashes to its name (else it is removed)."""
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read cached blob %s: %s", path, exc)
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            log.warning("cached blob %s is damaged; fetching it again", sha256[:12])
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: the last to be pruned
        return data

    async def _load(self, sha256: str) -> bytes:
        data = await asyncio.to_thread(self.read_local, sha256)
        if data is None:
            data = await self._download(sha256)
            try:
                await asyncio.to_thread(_write_atomically, self.path(sha256), data)
            except OSError as exc:  # a full disk costs a download next time, nothing more
                log.warning("cannot cache blob %s: %s", sha256[:12], exc)
            else:
                if self.max_bytes is not None:
                    await asyncio.to_thread(self.prune, self.in_use() | {sha256})
        else:
            self.disk_hits += 1
        self._remember(sha256, data)
        return data

    def _remember(self, sha256: str, data: bytes) -> None:
        if len(data) > self._memory_limit:
            return
        self._memory[sha256] = data
        self._memory_size += len(data)
        while self._memory_size > self._memory_limit:
            _, old = self._memory.popitem(last=False)
            self._memory_size -= len(old)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        return self._client

    async def _download(self, sha256: str) -> bytes:
        """Fetch and verify. Network errors and 5xx are retried with backoff; 404 and a hash
        mismatch are not (the server answered, and asking again gives the same answer)."""
        url = f"{self.base_url}/blobs/{sha256}"
        backoff = Backoff(initial=0.5, maximum=4.0)
        last: Exception | None = None
        for attempt in range(DOWNLOAD_ATTEMPTS):
            if attempt:
                await asyncio.sleep(backoff.next())
            try:
                return await self._fetch_once(url, sha256)
            except httpx.HTTPError as exc:
                last = exc
                log.warning("downloading blob %s failed (%s); retrying", sha256[:12], exc)
            except _Retryable as exc:
                last = exc
                log.warning("downloading blob %s failed (%s); retrying", sha256[:12], exc)
        raise BlobError(f"could not download blob {sha256}: {last}")

    async def _fetch_once(self, url: str, sha256: str) -> bytes:
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        async with self._http().stream("GET", url) as response:
            if response.status_code == 404:
                raise BlobError(f"the server has no blob {sha256}")
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise BlobError(f"GET {url} answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_blob:
                    raise BlobError(f"blob {sha256} is larger than {self._max_blob} bytes")
                digest.update(chunk)
                chunks.append(chunk)
        if digest.hexdigest() != sha256:
            raise BlobError(
                f"blob {sha256} downloaded from {url} hashes to {digest.hexdigest()}: refused"
            )
        self.downloads += 1
        return b"".join(chunks)


class _Retryable(Exception):
    """A server-side failure worth asking again for."""
