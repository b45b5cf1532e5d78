"""Unit tests of the native worker (workers/native): no server, no database.

The worker is driven through a fake transport that plays the server's part of protocol v1
(every frame the worker sends is round-tripped through msgpack and checked with the server's
own parsers in workers.protocol), and a fake kernel host whose runs the tests control. The
executor's result mapping is checked against the real KernelHost with tiny WAT kernels.
End-to-end tests against a real server live elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import wasmtime

from kernelhost import ErrorKind, KernelHost, KernelRejected, Limits, RunResult
from tests.waiting import until
from workers import protocol
from workers.native import client as client_mod
from workers.native import results as results_mod
from workers.native.backoff import Backoff
from workers.native.cache import BlobCache, BlobError
from workers.native.client import Options, Worker, server_list
from workers.native.executor import CampaignSpec, Job, RunPlan, execute, result_item
from workers.native.transport import HttpTransport, WebSocketTransport, http_base, websocket_url

REPO = Path(__file__).resolve().parent.parent

KERNEL = b"\0asm fake kernel"
KERNEL_SHA = hashlib.sha256(KERNEL).hexdigest()
STATIC = b"static data"
STATIC_SHA = hashlib.sha256(STATIC).hexdigest()
BAD_KERNEL = b"\0asm rejected"
BAD_SHA = hashlib.sha256(BAD_KERNEL).hexdigest()
MISSING_SHA = "0" * 64


# --- fakes ---------------------------------------------------------------------------------------


def ok_result(out: bytes) -> RunResult:
    return RunResult(exit_code=0, stdout=out, stderr_tail=b"", error=None, message="", runtime_s=0)


class FakeKernel:
    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256


class FakeHost:
    """Records run() calls; `behaviour(kwargs)` decides each outcome (default: echo stdin
    upper-cased). Thread-safe like the real one."""

    def __init__(self, behaviour: Callable[[dict[str, Any]], RunResult] | None = None) -> None:
        self.behaviour = behaviour or (lambda kw: ok_result(kw["stdin"].upper()))
        self.calls: list[dict[str, Any]] = []
        self.compiled: list[str | None] = []
        self._lock = threading.Lock()

    def compile(self, wasm: bytes, sha256: str | None = None) -> Any:
        if wasm == BAD_KERNEL:
            raise KernelRejected("The module exports no memory.")
        self.compiled.append(sha256)
        return FakeKernel(sha256 or "")

    def run(self, kernel: Any, **kw: Any) -> RunResult:
        with self._lock:
            self.calls.append(kw)
        return self.behaviour(kw)


class FakeCache:
    def __init__(self) -> None:
        self.blobs = {KERNEL_SHA: KERNEL, STATIC_SHA: STATIC, BAD_SHA: BAD_KERNEL}
        self.fetched: list[str] = []

    async def get(self, sha256: str) -> bytes:
        self.fetched.append(sha256)
        if sha256 not in self.blobs:
            raise BlobError(f"the server has no blob {sha256}")
        return self.blobs[sha256]

    def kernel_hashes(self) -> list[str]:
        return [KERNEL_SHA]

    def mark_kernel(self, sha256: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _validate(frame: bytes) -> None:
    """What the server does with a frame from us: decode it into the protocol's structs, in
    the version our hello names (unknown fields, wrong types and bounds are refused)."""
    protocol.decode(frame, version=protocol.VERSION)


class FakeServer:
    """One connection's server side: welcomes, acks results and releases, answers bye."""

    paced = True

    def __init__(self, *, welcome: bool = True, error: dict[str, Any] | None = None) -> None:
        self.name = "fake"
        self.sent: list[dict[str, Any]] = []
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = False
        self.welcome = welcome
        self.error = error
        self.ack = True

    # Transport interface (what the worker calls).
    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        frame = protocol.encode(message)
        _validate(frame)
        msg = protocol.decode_map(frame)
        self.sent.append(msg)
        kind = msg["t"]
        if kind == "hello":
            if self.error is not None:
                self.push(self.error)
            elif self.welcome:
                self.push(
                    {
                        "t": "welcome",
                        "v": protocol.VERSION,
                        "session": 7,
                        "secret": "s",
                        "limits": {
                            "max_frame": protocol.MAX_FRAME,
                            "max_batch": protocol.MAX_BATCH,
                            "max_output": 1 << 20,
                            "max_checkpoint": 1 << 20,
                            "heartbeat": 20,
                        },
                    }
                )
        elif kind == "result" and self.ack:
            leases = [r["lease"] for r in msg["results"]]
            self.push({"t": "ack", "leases": leases, "ignored": []})
        elif kind == "release":
            self.push({"t": "ack", "released": msg["leases"]})
        elif kind == "bye":
            self.push({"t": "bye"})
            self.inbox.put_nowait(None)

    async def recv(self) -> dict[str, Any] | None:
        if self.closed and self.inbox.empty():
            return None
        msg = await self.inbox.get()
        if msg is None:
            self.closed = True
        return msg

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.put_nowait(None)

    # Test side.
    def push(self, msg: dict[str, Any]) -> None:
        self.inbox.put_nowait(protocol.decode_map(protocol.encode(msg)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["t"] == kind]

    def results(self) -> list[dict[str, Any]]:
        return [r for m in self.of("result") for r in m["results"]]


def descriptor(**over: Any) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "name": "c",
        "kernel": KERNEL_SHA,
        "kind": "wasm",
        "static": None,
        "args": [],
        "env": {},
        "timeout": 30,
        "memory": None,
    }
    desc.update(over)
    return desc


def tasks_frame(
    leases: range | list[int], campaign: int = 1, desc: dict[str, Any] | None = None, **task: Any
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "t": "tasks",
        "tasks": [
            {"lease": lease, "task": 1000 + lease, "c": campaign, "in": b"t%d" % lease, **task}
            for lease in leases
        ],
    }
    if desc is not None:
        frame["campaigns"] = {campaign: desc}
    return frame


def loop_time() -> float:
    return asyncio.get_running_loop().time()


class Harness:
    """A Worker wired to FakeServer connections (a new one per connect)."""

    def __init__(self, host: FakeHost | None = None, **opts: Any) -> None:
        self.host = host or FakeHost()
        self.cache = FakeCache()
        self.servers: list[FakeServer] = []
        self.refuse = 0  # connects to fail before succeeding
        self.connects = 0
        self.server_factory: Callable[[], FakeServer] = FakeServer
        options = Options(server="http://test", slots=opts.pop("slots", 2), **opts)
        self.worker = Worker(
            options,
            host=self.host,
            cache=self.cache,  # type: ignore[arg-type]
            connect=self._connect,
            backoff=Backoff(initial=0.01, maximum=0.02),
        )
        self.task: asyncio.Task[int] | None = None

    async def _connect(self) -> Any:
        self.connects += 1
        if self.refuse > 0:
            self.refuse -= 1
            return None
        server = self.server_factory()
        self.servers.append(server)
        return server

    @property
    def server(self) -> FakeServer:
        return self.servers[-1]

    async def start(self) -> FakeServer:
        self.task = asyncio.get_running_loop().create_task(self.worker.run())
        await until(lambda: self.servers and self.worker.session is not None)
        return self.server

    async def exited(self, timeout: float = 5.0) -> int:
        assert self.task is not None
        return await asyncio.wait_for(self.task, timeout)

    async def stop(self, timeout: float = 10.0) -> int:
        self.worker.request_stop("test over")
        return await self.exited(timeout)


# --- Django-free import --------------------------------------------------------------------------


def test_native_worker_imports_without_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    code = (
        "import sys\n"
        "import workers.native, workers.native.client, workers.native.__main__\n"
        "import workers.native.cache, workers.native.executor, workers.native.transport\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_command_line_help_runs_without_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-m", "workers.native", "--help"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for flag in ("--server", "--token", "--slots", "--campaign", "--http", "--cache-dir"):
        assert flag in out.stdout
    for flag in ("--max-tasks", "--exit-when-idle", "--quiet"):
        assert flag in out.stdout


def test_manage_py_worker_passes_its_arguments_through() -> None:
    out = subprocess.run(
        [sys.executable, "manage.py", "worker", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ccgsc-worker ")


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_caps() -> None:
    b = Backoff(initial=0.5, maximum=30.0, rng=random.Random(1))
    ceilings = []
    for _ in range(12):
        c = b.ceiling()
        d = b.next()
        assert c / 2 <= d <= c
        ceilings.append(c)
    assert ceilings[:7] == [0.5, 1, 2, 4, 8, 16, 30]
    assert max(ceilings) == 30.0
    b.reset()
    assert b.ceiling() == 0.5


def test_backoff_jitter_spreads_delays() -> None:
    delays = {round(Backoff(rng=random.Random(seed)).next(), 6) for seed in range(20)}
    assert len(delays) > 10  # workers that lost the same server do not come back in lockstep


def test_backoff_survives_long_outages() -> None:
    b = Backoff()
    for _ in range(10_000):
        assert b.next() <= 30.0


# --- URLs ----------------------------------------------------------------------------------------


def test_urls() -> None:
    assert websocket_url("http://h:8000") == "ws://h:8000/ws/work/"
    assert websocket_url("https://h/prefix/") == "wss://h/prefix/ws/work/"
    assert http_base("http://h:8000/") == "http://h:8000"
    with pytest.raises(ValueError, match="scheme"):
        websocket_url("ftp://h")


# --- blob cache ----------------------------------------------------------------------------------


def _blob_client(blobs: dict[str, bytes], log: list[str], fail_first: int = 0) -> httpx.AsyncClient:
    failures = {"left": fail_first}

    def handler(request: httpx.Request) -> httpx.Response:
        sha = request.url.path.rsplit("/", 1)[-1]
        log.append(sha)
        if failures["left"] > 0:
            failures["left"] -= 1
            return httpx.Response(503)
        if sha not in blobs:
            return httpx.Response(404, json={"error": {"code": "not_found"}})
        return httpx.Response(200, content=blobs[sha])

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_cache_downloads_verifies_and_reuses(tmp_path: Path) -> None:
    log: list[str] = []
    cache = BlobCache(tmp_path, "http://srv", client=_blob_client({KERNEL_SHA: KERNEL}, log))
    assert await cache.get(KERNEL_SHA) == KERNEL
    assert await cache.get(KERNEL_SHA) == KERNEL  # from memory
    assert log == [KERNEL_SHA]
    assert (tmp_path / "blobs" / KERNEL_SHA).read_bytes() == KERNEL
    assert not [p for p in (tmp_path / "blobs").iterdir() if p.name.startswith(".tmp")]

    # A new process (new cache object) reads the disk, not the network.
    again = BlobCache(tmp_path, "http://srv", client=_blob_client({}, log))
    assert await again.get(KERNEL_SHA) == KERNEL
    assert log == [KERNEL_SHA]
    assert again.disk_hits == 1


async def test_cache_refuses_bytes_that_do_not_match_their_hash(tmp_path: Path) -> None:
    log: list[str] = []
    cache = BlobCache(tmp_path, "http://srv", client=_blob_client({KERNEL_SHA: b"evil"}, log))
    with pytest.raises(BlobError, match="refused"):
        await cache.get(KERNEL_SHA)
    assert not (tmp_path / "blobs" / KERNEL_SHA).exists()


async def test_cache_replaces_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "blobs").mkdir(mode=0o700)
    (tmp_path / "blobs" / KERNEL_SHA).write_bytes(b"bit rot")
    log: list[str] = []
    cache = BlobCache(tmp_path, "http://srv", client=_blob_client({KERNEL_SHA: KERNEL}, log))
    assert await cache.get(KERNEL_SHA) == KERNEL
    assert log == [KERNEL_SHA]
    assert (tmp_path / "blobs" / KERNEL_SHA).read_bytes() == KERNEL


async def test_cache_missing_blob_is_not_retried(tmp_path: Path) -> None:
    log: list[str] = []
    cache = BlobCache(tmp_path, "http://srv", client=_blob_client({}, log))
    with pytest.raises(BlobError, match="no blob"):
        await cache.get(MISSING_SHA)
    assert log == [MISSING_SHA]
    with pytest.raises(ValueError, match="sha256"):
        await cache.get("../../etc/passwd")


async def test_cache_retries_server_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.native.cache.Backoff.next", lambda self: 0.001)
    log: list[str] = []
    client = _blob_client({KERNEL_SHA: KERNEL}, log, fail_first=2)
    cache = BlobCache(tmp_path, "http://srv", client=client)
    assert await cache.get(KERNEL_SHA) == KERNEL
    assert len(log) == 3


async def test_cache_shares_one_download_between_concurrent_callers(tmp_path: Path) -> None:
    log: list[str] = []
    cache = BlobCache(tmp_path, "http://srv", client=_blob_client({KERNEL_SHA: KERNEL}, log))
    got = await asyncio.gather(*(cache.get(KERNEL_SHA) for _ in range(5)))
    assert got == [KERNEL] * 5
    assert log == [KERNEL_SHA]


async def test_cache_reports_cached_kernels_only(tmp_path: Path) -> None:
    blobs = {KERNEL_SHA: KERNEL, STATIC_SHA: STATIC}
    cache = BlobCache(tmp_path, "http://srv", client=_blob_client(blobs, []))
    await cache.get(KERNEL_SHA)
    await cache.get(STATIC_SHA)
    cache.mark_kernel(KERNEL_SHA)
    cache.mark_kernel(MISSING_SHA)  # marked but not cached: not reported
    assert cache.kernel_hashes() == [KERNEL_SHA]


async def test_cache_keeps_to_its_size_cap_least_recently_used_first(tmp_path: Path) -> None:
    blobs = {hashlib.sha256(bytes([i]) * 1000).hexdigest(): bytes([i]) * 1000 for i in range(4)}
    a, b, c, d = blobs
    seed = BlobCache(tmp_path, "http://srv", client=_blob_client(blobs, []))
    for sha in (a, b, c):
        await seed.get(sha)
    seed.mark_kernel(a)
    for age, sha in ((300, a), (200, b), (100, c)):  # a used longest ago, then b, then c
        os.utime(tmp_path / "blobs" / sha, (time.time() - age, time.time() - age))

    # A later worker process with a cap of 2 blobs (and none held in memory): reading b from
    # disk marks it as used; then d is downloaded and the least recently used go: a, then c.
    log: list[str] = []
    client = _blob_client(blobs, log)
    cache = BlobCache(tmp_path, "http://srv", client=client, max_bytes=2000, memory_bytes=0)
    assert await cache.get(b) == blobs[b]
    assert await cache.get(d) == blobs[d]
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == {b, d}
    assert cache.usage() == 2000
    assert not (tmp_path / "kernels" / a).exists()
    # What was pruned is simply downloaded again when needed.
    assert await cache.get(a) == blobs[a]
    assert log == [d, a]
    # Without a cap nothing is removed.
    assert BlobCache(tmp_path, "http://srv").prune() == 0


def test_worker_cache_max_option(capsys: pytest.CaptureFixture[str]) -> None:
    from workers.native.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args([]).cache_max == 2 * 1024**3
    assert parser.parse_args(["--cache-max", "500M"]).cache_max == 500 * 1024**2
    assert parser.parse_args(["--cache-max", "1.5GiB"]).cache_max == int(1.5 * 1024**3)
    for bad, message in (("lots", "not a size"), ("10M", "at least 64M")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--cache-max", bad])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


# --- executor with the real kernel host ----------------------------------------------------------

WAT_HELLO = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  (data (i32.const 16) "hi")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
WAT_TRAP = '(module (memory (export "memory") 1 1) (func (export "_start") unreachable))'
WAT_EXIT3 = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1 1)
  (func (export "_start") (call $exit (i32.const 3))))"""
WAT_LOOP = '(module (memory (export "memory") 1 1) (func (export "_start") (loop $l (br $l))))'


@pytest.fixture(scope="module")
def real_host(tmp_path_factory: pytest.TempPathFactory) -> KernelHost:
    root = tmp_path_factory.mktemp("kernelhost")
    os.chmod(root, 0o700)
    return KernelHost(cache_dir=root / "host")


def _run_real(host: KernelHost, wat: str, *, timeout: float = 5.0) -> protocol.ResultItem:
    wasm = bytes(wasmtime.wat2wasm(wat))
    sha = hashlib.sha256(wasm).hexdigest()
    spec = CampaignSpec.parse(1, descriptor(kernel=sha, timeout=timeout))
    kernel = host.compile(wasm, sha)
    job = Job(lease=5, task=6, campaign=1, stdin=b"")
    job.plan = RunPlan.build(spec, kernel, None, max_output=1 << 20, max_checkpoint=1 << 20)
    item = execute(host, job, lambda *a: None)
    assert item.lease == 5
    _validate(protocol.encode(protocol.Result(results=[item])))
    return item


def test_execute_success(real_host: KernelHost) -> None:
    item = _run_real(real_host, WAT_HELLO)
    assert item.ok is True and item.output == b"hi" and item.exit == 0
    assert isinstance(item.ms, int)


def test_execute_trap(real_host: KernelHost) -> None:
    item = _run_real(real_host, WAT_TRAP)
    assert item.ok is False and item.err == "trap" and item.exit is None
    assert b"trapped" in item.stderr


def test_execute_exit_status(real_host: KernelHost) -> None:
    item = _run_real(real_host, WAT_EXIT3)
    assert (item.ok, item.err, item.exit) == (False, "exit", 3)


def test_execute_timeout(real_host: KernelHost) -> None:
    item = _run_real(real_host, WAT_LOOP, timeout=0.2)
    assert (item.ok, item.err) == (False, "timeout")
    assert b"time limit" in item.stderr


def test_result_item_keeps_the_end_of_stderr_and_the_reason() -> None:
    result = RunResult(
        exit_code=1,
        stdout=b"partial",
        stderr_tail=b"x" * 5000,
        error=ErrorKind.EXIT,
        message="The kernel exited with status 1.",
        runtime_s=0.5,
    )
    item = result_item(result, 500, lease=7)
    assert len(item.stderr) == protocol.MAX_STDERR
    assert item.stderr.endswith(b"\nThe kernel exited with status 1.")
    assert item.output == b""  # a failure's partial output is not sent


def test_execute_maps_host_failures() -> None:
    def broken(kw: dict[str, Any]) -> RunResult:
        raise OSError("too many open files")

    def bad_args(kw: dict[str, Any]) -> RunResult:
        raise ValueError("arguments must not contain NUL")

    spec = CampaignSpec.parse(1, descriptor())
    for behaviour, err in ((broken, "host"), (bad_args, "invalid")):
        job = Job(lease=1, task=1, campaign=1, stdin=b"")
        job.plan = RunPlan.build(spec, FakeKernel(""), None, max_output=10, max_checkpoint=10)
        item = execute(FakeHost(behaviour), job, lambda *a: None)
        assert (item.ok, item.err) == (False, err)


def test_campaign_descriptor_validation() -> None:
    assert CampaignSpec.parse(3, descriptor(args=["-n", "5"])).args == ["-n", "5"]
    for bad in (
        descriptor(kernel="nothex"),
        descriptor(static="short"),
        descriptor(args="not a list"),
        descriptor(env={"A": 1}),
        descriptor(timeout=0),
        descriptor(memory=True),
        "not a map",
    ):
        with pytest.raises(ValueError, match="campaign"):
            CampaignSpec.parse(1, bad)


# --- the worker against a fake server ------------------------------------------------------------


async def test_hello_and_first_want() -> None:
    h = Harness(slots=3, token="ccgsc_tok", campaign=9)
    server = await h.start()
    hello = server.of("hello")[0]
    assert hello["kind"] == "native" and hello["slots"] == 3 and hello["v"] == protocol.VERSION
    assert hello["token"] == "ccgsc_tok" and hello["campaign"] == 9
    assert hello["kernels"] == [KERNEL_SHA]
    assert hello["agent"].startswith("ccgsc-worker/")
    # Room offered: the server's own estimate decides how much of it is used.
    assert server.of("want") == [{"t": "want", "n": protocol.MAX_BATCH}]
    assert await h.stop() == 0
    assert server.sent[-1] == {"t": "bye"}


async def test_tasks_run_with_campaign_and_task_settings() -> None:
    h = Harness()
    server = await h.start()
    desc = descriptor(static=STATIC_SHA, args=["-a", "1"], env={"A": "1", "B": "2"}, timeout=7)
    server.push(tasks_frame([11], desc=desc, args=["-t"], env={"B": "3"}, ckpt=b"resume-here"))
    await until(lambda: server.results())
    (call,) = h.host.calls
    assert call["stdin"] == b"t11"
    assert call["args"] == ["-a", "1", "-t"]
    assert call["env"] == {"A": "1", "B": "3"}
    assert call["static"] == STATIC and call["static_sha256"] == STATIC_SHA
    assert call["checkpoint"] == b"resume-here"
    assert call["limits"] == Limits(
        timeout_s=7,
        memory_bytes=Limits().memory_bytes,
        output_bytes=1 << 20,
        checkpoint_bytes=1 << 20,
    )
    (result,) = server.results()
    # (Defaults are left out on the wire: "ms" is there when the run took a millisecond.)
    assert {k: v for k, v in result.items() if k != "ms"} == {
        "lease": 11,
        "ok": True,
        "output": b"T11",
        "exit": 0,
    }
    # The kernel and static data were fetched once, the kernel compiled once.
    server.push(tasks_frame([12, 13]))
    await until(lambda: len(server.results()) == 3)
    assert h.cache.fetched == [KERNEL_SHA, STATIC_SHA]
    assert h.host.compiled == [KERNEL_SHA]
    await h.stop()


async def test_results_are_batched_each_exactly_once_with_want_piggybacked() -> None:
    h = Harness(slots=4)
    server = await h.start()
    leases = list(range(1, 501))
    server.push(tasks_frame(leases[:250], desc=descriptor()))
    server.push(tasks_frame(leases[250:]))
    await until(lambda: len(server.results()) == 500)
    frames = server.of("result")
    got = [r["lease"] for r in server.results()]
    assert sorted(got) == leases and len(set(got)) == 500
    assert len(frames) < 100  # batched, not one frame per task
    assert all(len(f["results"]) <= protocol.MAX_BATCH for f in frames)
    assert frames[-1]["want"] == protocol.MAX_BATCH  # all the room is free again
    await h.stop()


class GatedHost(FakeHost):
    """Each run waits until the test releases its lease (by input b"t<lease>")."""

    def __init__(self) -> None:
        self.gates: dict[bytes, threading.Event] = {}
        self._gates_lock = threading.Lock()
        super().__init__(self._wait)

    def gate(self, lease: int) -> threading.Event:
        with self._gates_lock:
            return self.gates.setdefault(b"t%d" % lease, threading.Event())

    def _wait(self, kw: dict[str, Any]) -> RunResult:
        assert self.gate(int(kw["stdin"][1:])).wait(10)
        return ok_result(kw["stdin"].upper())


async def test_results_linger_while_every_slot_has_work_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Long tasks share frames: while every slot has another task queued, a result waits up
    to RESULT_LINGER for others; once the queue runs short, results go at once."""
    monkeypatch.setattr(results_mod, "RESULT_LINGER", 30.0)
    host = GatedHost()
    h = Harness(host, slots=2)
    server = await h.start()
    server.push(tasks_frame(range(1, 7), desc=descriptor()))  # 2 running + 4 queued
    await until(lambda: len(host.calls) == 2)
    host.gate(1).set()
    await until(lambda: len(host.calls) == 3)
    # Held (5 tasks in hand for 2 slots): its flush is due in RESULT_LINGER, not RESULT_DELAY.
    session = h.worker.session
    assert session is not None
    results = session.results
    await until(lambda: len(results) == 1)
    assert results.due is not None and results.due - loop_time() > 10
    assert server.of("result") == []
    host.gate(2).set()
    host.gate(3).set()
    # Now 3 in hand for 2 slots: the queue is short, so both held results go together.
    await until(lambda: len(server.of("result")) == 1)
    (frame,) = server.of("result")
    assert sorted(r["lease"] for r in frame["results"]) == [1, 2, 3]
    for lease in range(4, 7):
        host.gate(lease).set()
    await until(lambda: len(server.results()) == 6)
    assert sorted(r["lease"] for r in server.results()) == list(range(1, 7))
    await h.stop()


async def test_results_go_at_once_when_the_queue_is_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(results_mod, "RESULT_LINGER", 30.0)
    host = GatedHost()
    h = Harness(host, slots=2)
    server = await h.start()
    server.push(tasks_frame([1, 2, 3], desc=descriptor()))  # 2 running + 1 queued
    await until(lambda: len(host.calls) == 2)
    host.gate(1).set()
    await until(lambda: len(server.of("result")) == 1)
    assert [r["lease"] for r in server.results()] == [1]
    for lease in (2, 3):
        host.gate(lease).set()
    await until(lambda: len(server.results()) == 3)
    await h.stop()


async def test_the_result_of_the_last_task_in_hand_goes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no other task in hand nothing could share its frame (a synchronous run's answer,
    the end of a burst): no RESULT_DELAY."""
    monkeypatch.setattr(results_mod, "RESULT_DELAY", 30.0)
    host = GatedHost()
    h = Harness(host, slots=2)
    server = await h.start()
    server.push(tasks_frame([1, 2], desc=descriptor()))
    await until(lambda: len(host.calls) == 2)
    host.gate(1).set()
    session = h.worker.session
    assert session is not None
    results = session.results
    # Task 2 still runs: result 1 waits for company.
    await until(lambda: len(results) == 1)
    assert results.due is not None and results.due - loop_time() > 10
    assert server.of("result") == []
    host.gate(2).set()
    await until(lambda: len(server.of("result")) == 1)
    assert sorted(r["lease"] for r in server.of("result")[0]["results"]) == [1, 2]
    # A lone task: its result goes as soon as it is there.
    server.push(tasks_frame([3]))
    await until(lambda: len(host.calls) == 3)
    host.gate(3).set()
    await until(lambda: len(server.of("result")) == 2)
    assert [r["lease"] for r in server.of("result")[1]["results"]] == [3]
    await h.stop()


async def test_flow_control_waits_for_acks_but_not_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(results_mod, "ACK_WAIT", 30.0)
    h = Harness(slots=1)
    server = await h.start()
    server.ack = False  # a server that never acks
    server.push(tasks_frame([1], desc=descriptor()))
    await until(lambda: len(server.of("result")) == 1)
    server.push(tasks_frame([2, 3]))
    session = h.worker.session
    assert session is not None
    results = session.results
    # Held back while the first frame is unacked: their flush waits for the ack's deadline...
    await until(lambda: len(results) == 2 and (results.due or 0) - loop_time() > 10)
    assert len(server.of("result")) == 1
    # ... and no longer: when the deadline comes (its timer, run now), the frame goes.
    monkeypatch.setattr(results_mod, "ACK_WAIT", 0.0)
    results.flush()
    assert len(server.results()) == 3
    server.ack = True
    await h.stop()


async def test_large_outputs_are_split_to_fit_the_frame_limit() -> None:
    big = b"x" * (1 << 20)  # the fake server's max_output
    h = Harness(FakeHost(lambda kw: ok_result(big)), slots=2)
    server = await h.start()
    server.ack = False  # flow control would hold results back; the size limit must not wait
    server.push(tasks_frame(list(range(1, 41)), desc=descriptor()))
    await until(lambda: len(server.results()) >= 30)
    for frame in server.of("result"):
        assert len(protocol.encode(frame)) <= protocol.MAX_FRAME
    server.ack = True
    await h.stop()


async def test_failures_are_reported_with_their_reason() -> None:
    def behaviour(kw: dict[str, Any]) -> RunResult:
        return RunResult(
            exit_code=None,
            stdout=b"",
            stderr_tail=b"boom\n",
            error=ErrorKind.TRAP,
            message="The kernel trapped: unreachable",
            runtime_s=0.002,
        )

    h = Harness(FakeHost(behaviour))
    server = await h.start()
    server.push(tasks_frame([4], desc=descriptor()))
    await until(lambda: server.results())
    (r,) = server.results()
    assert (r["lease"], r["ok"], r["err"], r.get("exit")) == (4, False, "trap", None)
    assert r["stderr"] == b"boom\nThe kernel trapped: unreachable"
    await h.stop()


async def test_rejected_kernel_and_missing_blob_fail_their_tasks() -> None:
    h = Harness()
    server = await h.start()
    server.push(tasks_frame([1, 2], campaign=1, desc=descriptor(kernel=BAD_SHA)))
    server.push(tasks_frame([3], campaign=2, desc=descriptor(kernel=MISSING_SHA)))
    server.push(tasks_frame([4], campaign=3, desc=descriptor(kind="js")))
    await until(lambda: len(server.results()) == 4)
    by_lease = {r["lease"]: r for r in server.results()}
    assert by_lease[1]["err"] == by_lease[2]["err"] == "invalid"
    assert b"exports no memory" in by_lease[1]["stderr"]
    assert by_lease[3]["err"] == "host" and b"no blob" in by_lease[3]["stderr"]
    assert by_lease[4]["err"] == "invalid"
    assert h.host.calls == []
    # The rejection is remembered: no second compile for the same kernel.
    server.push(tasks_frame([5], campaign=1))
    await until(lambda: len(server.results()) == 5)
    assert h.host.compiled == []
    await h.stop()


def _blocking_host() -> tuple[FakeHost, threading.Event, list[threading.Event]]:
    """A host whose runs block until `gate` is set or the run's cancel event fires."""
    gate = threading.Event()
    cancels: list[threading.Event] = []

    def behaviour(kw: dict[str, Any]) -> RunResult:
        cancels.append(kw["cancel"])
        deadline = time.monotonic() + 10
        while not gate.is_set() and not kw["cancel"].is_set() and time.monotonic() < deadline:
            time.sleep(0.002)
        if kw["cancel"].is_set():
            return RunResult(None, b"", b"", ErrorKind.CANCELLED, "cancelled", 0.0)
        return ok_result(b"done")

    return FakeHost(behaviour), gate, cancels


async def test_cancel_drops_queued_and_stops_running_tasks() -> None:
    host, gate, cancels = _blocking_host()
    h = Harness(host, slots=1)
    server = await h.start()
    server.push(tasks_frame([1, 2, 3], desc=descriptor()))
    await until(lambda: len(cancels) == 1)
    wants_before = len(server.of("want"))
    server.push({"t": "cancel", "leases": [1, 2], "reason": "campaign paused"})
    await until(lambda: cancels[0].is_set())
    gate.set()
    await until(lambda: server.results())
    assert [r["lease"] for r in server.results()] == [3]
    assert len(host.calls) == 2  # lease 2 never started
    assert len(server.of("want")) == wants_before + 1  # the freed room is offered again
    await h.stop()


async def test_memory_bound_on_held_task_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "MAX_HELD_BYTES", 250)
    host, gate, cancels = _blocking_host()
    h = Harness(host, slots=1)
    server = await h.start()
    frame = tasks_frame([1, 2, 3], desc=descriptor())
    for task in frame["tasks"]:
        task["in"] = b"i" * 100
    server.push(frame)
    await until(lambda: len(cancels) == 1)
    s = h.worker.session
    assert s is not None and s.held_bytes == 300
    assert h.worker._want(s) == 0  # 300 bytes of inputs in hand: no more for now
    server.push({"t": "cancel", "leases": [2, 3], "reason": "test"})
    await until(lambda: s.held_bytes == 100)
    assert h.worker._want(s) > 0
    gate.set()
    await until(lambda: server.results())
    assert s.held_bytes == 0
    await h.stop()


async def test_over_http_more_is_asked_for_at_half_of_the_last_fill() -> None:
    host, gate, cancels = _blocking_host()
    h = Harness(host, slots=2)

    def unpaced() -> FakeServer:
        server = FakeServer()
        server.paced = False  # as HttpTransport
        return server

    h.server_factory = unpaced
    server = await h.start()
    server.push(tasks_frame(list(range(1, 101)), desc=descriptor()))
    await until(lambda: len(cancels) == 2)
    s = h.worker.session
    assert s is not None and s.low_water == 50
    assert h.worker._want(s) == 0  # 100 in hand: the server would only hold a want
    server.push({"t": "cancel", "leases": list(range(3, 53)), "reason": "test"})
    await until(lambda: len(s.jobs) == 50)
    assert h.worker._want(s) > 0
    gate.set()
    await h.stop()


async def test_checkpoints_and_progress_reach_the_server() -> None:
    progress_sent = threading.Event()

    def behaviour(kw: dict[str, Any]) -> RunResult:
        kw["on_progress"](0.25)
        kw["on_checkpoint"](b"first")
        kw["on_checkpoint"](b"second")  # within CHECKPOINT_INTERVAL: deferred
        assert progress_sent.wait(10)  # the kernel runs until its progress was flushed
        return RunResult(None, b"", b"", ErrorKind.TIMEOUT, "too slow", 1.0)

    h = Harness(FakeHost(behaviour), slots=1)
    server = await h.start()
    server.push(tasks_frame([8], desc=descriptor()))
    await until(lambda: server.of("progress"))
    progress_sent.set()
    await until(lambda: server.results())
    checkpoints = server.of("checkpoint")
    assert [(c["lease"], c["data"]) for c in checkpoints] == [(8, b"first"), (8, b"second")]
    # Both were sent before the result (after it the lease is no longer ours).
    kinds = [m["t"] for m in server.sent if m["t"] in ("checkpoint", "result")]
    assert kinds == ["checkpoint", "checkpoint", "result"]
    assert server.of("progress") == [{"t": "progress", "p": {8: 0.25}}]
    await h.stop()


async def test_graceful_shutdown_releases_queued_and_finishes_running() -> None:
    host, gate, cancels = _blocking_host()
    h = Harness(host, slots=1)
    server = await h.start()
    server.push(tasks_frame([1, 2, 3, 4], desc=descriptor()))
    await until(lambda: len(cancels) == 1)
    h.worker.request_stop("test")
    await until(lambda: server.of("release"))
    assert server.of("release") == [{"t": "release", "leases": [2, 3, 4]}]
    # A tasks frame that crossed the release on the wire is given back too.
    server.push(tasks_frame([5]))
    await until(lambda: len(server.of("release")) == 2)
    assert server.of("release")[1]["leases"] == [5]
    gate.set()
    assert await h.exited() == 0
    assert [r["lease"] for r in server.results()] == [1]
    assert "want" not in server.of("result")[0]
    assert server.sent[-1] == {"t": "bye"}
    assert len(host.calls) == 1


async def test_shutdown_grace_period_releases_what_still_runs() -> None:
    host, _gate, cancels = _blocking_host()
    h = Harness(host, slots=1, grace=0.2)
    server = await h.start()
    server.push(tasks_frame([1], desc=descriptor()))
    await until(lambda: len(cancels) == 1)
    h.worker.request_stop("test")
    assert await h.exited() == 0
    assert server.of("release") == [{"t": "release", "leases": [1]}]
    assert server.results() == []
    assert cancels[0].is_set()
    assert server.sent[-1] == {"t": "bye"}


async def test_disconnect_drops_the_old_session_and_reconnects() -> None:
    host, gate, cancels = _blocking_host()
    h = Harness(host, slots=1)
    first = await h.start()
    first.push(tasks_frame([1, 2], desc=descriptor()))
    await until(lambda: len(cancels) == 1)
    await first.close()  # the connection drops: the server released our leases
    await until(lambda: len(h.servers) == 2 and h.worker.session is not None)
    second = h.server
    assert second.of("hello")
    await until(lambda: cancels[0].is_set())  # the kernel of the old lease was stopped
    gate.set()
    # The same lease id may come back in the new session: it runs afresh.
    second.push(tasks_frame([1], desc=descriptor()))
    await until(lambda: second.results())
    assert [r["lease"] for r in second.results()] == [1]
    assert first.results() == []
    assert len(host.calls) == 2  # lease 2 of the old session never ran
    await h.stop()


async def test_reconnect_backs_off_while_the_server_is_down() -> None:
    h = Harness()
    h.refuse = 3
    await h.start()
    assert h.connects == 4
    assert h.worker.backoff.attempts == 3  # not reset: that session is too young
    await h.stop()


async def test_a_lost_connection_moves_on_to_the_next_of_several_servers() -> None:
    h = Harness()
    h.worker.servers = server_list("http://a:1, http://b:2,http://c:3")
    h.worker._server_at = 2
    tried: list[str] = []
    connect = h.worker._connect
    assert connect is not None

    async def recording() -> Any:
        tried.append(h.worker.server)
        return await connect()

    h.worker._connect = recording
    h.refuse = 2
    await h.start()
    assert tried == ["http://c:3", "http://a:1", "http://b:2"]
    h.server.inbox.put_nowait(None)  # that process dies: the session goes on at the next one
    await until(lambda: len(h.servers) == 2 and h.worker.session is not None)
    assert tried[-1] == "http://c:3"
    await h.stop()


def test_several_servers_parse_and_nothing_is_refused() -> None:
    assert server_list("http://a") == ["http://a"]
    assert server_list(" http://a ,http://b,") == ["http://a", "http://b"]
    with pytest.raises(ValueError, match="no server URL"):
        server_list(" , ")


async def test_max_tasks_leases_exactly_that_many_then_exits() -> None:
    h = Harness(slots=2, max_tasks=3)
    server = await h.start()
    assert server.of("want") == [{"t": "want", "n": 3}]
    server.push(tasks_frame([1, 2, 3], desc=descriptor()))
    assert await h.exited() == 0
    assert sorted(r["lease"] for r in server.results()) == [1, 2, 3]
    assert all("want" not in f for f in server.of("result"))
    assert server.sent[-1] == {"t": "bye"}


async def test_exit_when_idle() -> None:
    h = Harness(exit_when_idle=0.2)
    server = await h.start()
    server.push({"t": "idle"})
    assert await h.exited() == 0
    assert server.sent[-1] == {"t": "bye"}
    assert not server.of("ping")  # idle means waiting for a push, not polling


async def test_bad_token_is_permanent() -> None:
    h = Harness()
    h.server_factory = lambda: FakeServer(
        error={"t": "error", "code": "auth", "message": "invalid token", "fatal": True}
    )
    h.task = asyncio.get_running_loop().create_task(h.worker.run())
    assert await asyncio.wait_for(h.task, 5) == 2
    assert h.connects == 1


async def test_stop_does_not_wait_for_a_silent_server() -> None:
    h = Harness()
    h.server_factory = lambda: FakeServer(welcome=False)
    h.task = asyncio.get_running_loop().create_task(h.worker.run())
    await until(lambda: h.servers and h.server.of("hello"))
    h.worker.request_stop("test")
    assert await h.exited(2) == 0


async def test_malformed_task_entries_do_not_crash_the_worker() -> None:
    h = Harness()
    server = await h.start()
    server.push(
        {
            "t": "tasks",
            "tasks": [{"lease": 1, "task": 1, "c": 1, "in": 5}, "junk", {"lease": 2}],
            "campaigns": {1: descriptor()},
        }
    )
    server.push(tasks_frame([3], campaign=4))  # no descriptor ever sent for campaign 4
    await until(lambda: len(server.results()) == 3)
    assert {r["lease"]: r["err"] for r in server.results()} == {1: "host", 2: "host", 3: "host"}
    await h.stop()


# --- transports ----------------------------------------------------------------------------------


async def test_http_transport_polls_and_pushes_separately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("workers.native.transport.MIN_POLL_INTERVAL", 0.05)
    requests: list[dict[str, Any]] = []
    release_poll = asyncio.Event()
    polls = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        body = msgpack.unpackb(request.content, raw=False, strict_map_key=False)
        requests.append(body)
        kinds = [m["t"] for m in body["messages"]]
        out: list[dict[str, Any]] = []
        if kinds == ["hello"]:
            out = [{"t": "welcome", "v": 1, "session": 3, "secret": "sec", "limits": {}}]
        elif kinds == ["want"]:
            polls["n"] += 1
            if polls["n"] == 1:
                await release_poll.wait()
                out = [{"t": "tasks", "tasks": [], "campaigns": {}}]
            else:
                await asyncio.sleep(0.05)
                out = [{"t": "idle"}]
        elif "result" in kinds:
            out = [{"t": "ack", "leases": [1], "ignored": []}]
        elif "bye" in kinds:
            out = [{"t": "bye"}]
        return httpx.Response(
            200,
            content=protocol.encode({"messages": out}),
            headers={"content-type": "application/msgpack"},
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    t = HttpTransport("http://srv", agent="test", client=client)
    t.send(protocol.Hello(v=protocol.VERSION, kind="native", slots=1))
    assert (await t.recv() or {})["t"] == "welcome"
    assert (t.session, t.secret) == (3, "sec")
    t.send(protocol.Want(n=4))
    await until(lambda: polls["n"] == 1)
    # Results while the poll is out go in their own request (merged into one frame), their
    # want kept for the next poll.
    r1 = protocol.ResultItem(lease=1, ok=True)
    r2 = protocol.ResultItem(lease=2, ok=True, output=b"x")
    t.send(protocol.Result(results=[r1], want=5))
    t.send(protocol.Result(results=[r2], want=6))
    assert (await t.recv() or {})["t"] == "ack"
    push = requests[-1]
    assert push["session"] == 3 and push["secret"] == "sec"
    assert push["messages"] == [
        {
            "t": "result",
            "results": [{"lease": 1, "ok": True}, {"lease": 2, "ok": True, "output": b"x"}],
        }
    ]
    release_poll.set()
    assert (await t.recv() or {})["t"] == "tasks"
    # Tasks came back: the stripped want needs no poll of its own. Once that poll is over,
    # nothing is queued and no repeat is due (what would start one).
    await until(lambda: t._poll is None)
    assert not t._outbox and not t._repoll
    assert polls["n"] == 1
    # A poll that comes back empty (the server's long poll expired) is repeated.
    t.send(protocol.Want(n=6))
    await until(lambda: polls["n"] >= 3)
    assert requests[-1]["messages"] == [{"t": "want", "n": 6}]
    t.send(protocol.Bye())
    await until(lambda: any(m["t"] == "bye" for r in requests for m in r["messages"]))
    await t.close()
    left = []
    while (msg := await asyncio.wait_for(t.recv(), 5)) is not None:
        left.append(msg["t"])
    assert "bye" in left


async def test_http_transport_merges_results_and_the_latest_want_wins() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    t = HttpTransport("http://srv", agent="test", client=client)
    r1, r2, r3 = (protocol.ResultItem(lease=i, ok=True) for i in (1, 2, 3))
    t._outbox.extend(
        [
            protocol.Result(results=[r1], want=9),
            protocol.Result(results=[r2]),  # then the client had enough: no want
            protocol.Ping(),
            protocol.Result(results=[r3], want=4),
        ]
    )
    batch, wanted = t._take(strip=False)
    assert batch == [
        protocol.Result(results=[r1, r2]),
        protocol.Ping(),
        protocol.Result(results=[r3], want=4),
    ]
    assert wanted and t._want == 4 and HttpTransport._asks(batch)
    assert not HttpTransport._asks(batch[:2])
    await t.close()


async def test_http_transport_unknown_session_ends_the_connection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = msgpack.unpackb(request.content, raw=False)
        if body["session"] is None:
            out = [{"t": "welcome", "v": 1, "session": 1, "secret": "x", "limits": {}}]
            return httpx.Response(
                200,
                content=protocol.encode({"messages": out}),
                headers={"content-type": "application/msgpack"},
            )
        err = [{"t": "error", "code": "session", "message": "unknown", "fatal": True}]
        return httpx.Response(
            404,
            content=protocol.encode({"messages": err}),
            headers={"content-type": "application/msgpack"},
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    t = HttpTransport("http://srv", agent="test", client=client)
    t.send(protocol.Hello(v=protocol.VERSION, kind="native", slots=1))
    assert (await t.recv() or {})["t"] == "welcome"
    t.send(protocol.Ping())
    assert (await t.recv() or {})["code"] == "session"
    assert await asyncio.wait_for(t.recv(), 5) is None
    await t.close()


async def test_websocket_transport_speaks_binary_msgpack() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    received: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        async for frame in ws:
            received.append(frame)
            msg = protocol.decode_map(frame)  # type: ignore[arg-type]
            if msg["t"] == "hello":
                await ws.send(protocol.encode({"t": "welcome", "v": 1, "session": 1}))
            elif msg["t"] == "bye":
                await ws.send(protocol.encode({"t": "bye"}))
                await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        t = await WebSocketTransport.open(f"http://127.0.0.1:{port}", agent="test")
        t.send(protocol.Hello(v=protocol.VERSION, kind="native", slots=1))
        assert await t.recv() == {"t": "welcome", "v": 1, "session": 1}
        t.send(protocol.Bye())
        assert await t.recv() == {"t": "bye"}
        assert await t.recv() is None
        await t.close()
    assert all(isinstance(f, bytes) for f in received)


# --- heartbeat -----------------------------------------------------------------------------------


def test_without_beats_the_worker_pings_every_heartbeat_and_gives_a_silent_server_up() -> None:
    step = client_mod.heartbeat_step
    assert step(100.0, heard=100.0, pinged=100.0, heartbeat=45, beat=None) == ("wait", 45.01)
    assert step(145.0, heard=140.0, pinged=100.0, heartbeat=45, beat=None) == ("ping", 0.0)
    # Heard from all along: still a ping every heartbeat.
    assert step(190.0, heard=189.0, pinged=145.0, heartbeat=45, beat=None)[0] == "ping"
    assert step(190.1, heard=100.0, pinged=145.0, heartbeat=45, beat=None) == ("dead", 0.0)


def test_with_beats_the_worker_pings_only_once_the_server_has_been_silent_a_heartbeat() -> None:
    step = client_mod.heartbeat_step
    inf = float("inf")
    # The server talks (its pings of a silent session among others): no ping of ours, ever.
    for now in (110.0, 150.0, 154.9):
        assert step(now, heard=100.0, pinged=-inf, heartbeat=55, beat=50)[0] == "wait"
    assert step(150.0, heard=100.0, pinged=-inf, heartbeat=55, beat=50) == ("wait", 5.01)
    # Silent a heartbeat (we talked, nothing came back): one ping for this silence...
    assert step(155.0, heard=100.0, pinged=-inf, heartbeat=55, beat=50) == ("ping", 0.0)
    # ...then only the wait for the server to be given up.
    assert step(155.0, heard=100.0, pinged=155.0, heartbeat=55, beat=50) == ("wait", 55.01)
    assert step(210.1, heard=100.0, pinged=155.0, heartbeat=55, beat=50) == ("dead", 0.0)
    # Once it speaks again, the next silence gets its ping.
    assert step(216.0, heard=160.0, pinged=155.0, heartbeat=55, beat=50) == ("ping", 0.0)


async def test_the_worker_announces_pongs_and_answers_the_servers_ping() -> None:
    h = Harness()
    server = await h.start()
    assert server.of("hello")[0]["pongs"] is True
    server.push({"t": "ping"})
    await until(lambda: server.of("pong"))
    assert server.of("ping") == []  # answered, not pinged back
    await h.stop()


def test_a_welcome_with_beat_makes_the_session_wait_for_the_servers_pings() -> None:
    limits = {"max_frame": 1 << 20, "max_batch": 8, "heartbeat": 55, "beat": 50}
    with_beat = client_mod.Session.from_welcome(1, None, {"session": 1, "limits": limits})  # type: ignore[arg-type]
    assert (with_beat.heartbeat, with_beat.beat) == (55.0, 50.0)
    del limits["beat"]
    without = client_mod.Session.from_welcome(1, None, {"session": 1, "limits": limits})  # type: ignore[arg-type]
    assert without.beat is None
