"""Running gpu kernels (WGSL) through wgpu-py, and compiling them with its WGSL front end (naga).

The optional `wgpu` package (`pip install 'ccgsc[gpu]'`) drives wgpu-native, which finds a real
GPU through Vulkan, Metal or D3D12, or a software rasterizer (Mesa's lavapipe, adapter type
"CPU") that this host uses only when asked (mode "software"; the server's compile check takes
any adapter, as it only needs naga).

Everything wgpu does happens in a child process (`python -m kernelhost.gpuhost`), one per
GpuHost, speaking length-prefixed msgpack over its stdin/stdout:

- a kernel cannot crash the caller: wgpu-native aborts the process on some driver faults, and
  a shader that never ends holds its queue; both end only the child;
- the wall-time limit is real: on timeout (or cancel) the host kills the child, which abandons
  the device and whatever it was running, and starts a fresh one for the next task.

The child runs one kernel at a time (one device, one queue); GpuHost serializes callers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

import msgpack

from .contract import ErrorKind, KernelRejected, Limits, RunResult
from .gpu import PARAMS_BYTES, GpuManifest, parse_manifest, resolve

log = logging.getLogger(__name__)

Mode = Literal["hardware", "software", "any"]
#: Adapter types wgpu reports for real GPUs, best first; "CPU" is a software rasterizer.
HARDWARE_TYPES = ("DiscreteGPU", "IntegratedGPU", "VirtualGPU")
#: Native backends before OpenGL (lavapipe is Vulkan, llvmpipe's GL adapter is slower to set up).
BACKENDS = ("Vulkan", "Metal", "D3D12", "OpenGL")
#: How long the child may take to find its adapter, and to compile a module.
START_TIMEOUT_S = 60.0
COMPILE_TIMEOUT_S = 30.0
PIPELINE_CACHE = 32


@dataclass(frozen=True)
class AdapterInfo:
    """The adapter a child found: what a worker's hello reports (protocol.GpuInfo), plus
    whether it is a software one."""

    adapter: str
    max_buffer: int
    max_workgroups: int
    max_invocations: int
    software: bool

    def hello(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter[:200],
            "max_buffer": self.max_buffer,
            "max_workgroups": self.max_workgroups,
            "max_invocations": self.max_invocations,
        }


@dataclass(frozen=True)
class GpuKernel:
    """A WGSL module that compiled, with its manifest: what GpuHost.run takes."""

    sha256: str
    source: bytes
    manifest: GpuManifest


def wgpu_installed() -> bool:
    try:
        import wgpu  # noqa: F401
    except ImportError:
        return False
    return True


class GpuUnavailable(RuntimeError):
    """No wgpu, or no adapter of the kind asked for."""


class GpuHost:
    """One child process with one wgpu device. Thread-safe (callers take turns)."""

    def __init__(self, mode: Mode = "hardware") -> None:
        self.mode = mode
        self.info: AdapterInfo | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()

    # --- the child ---------------------------------------------------------------------------

    def start(self) -> AdapterInfo:
        """Start the child (if it is not running) and return its adapter; GpuUnavailable when
        wgpu or a suitable adapter is missing."""
        with self._lock:
            return self._ensure()

    def _ensure(self) -> AdapterInfo:
        if self._proc is not None and self._proc.poll() is None and self.info is not None:
            return self.info
        if not wgpu_installed():
            raise GpuUnavailable("the wgpu package is not installed (pip install 'ccgsc[gpu]')")
        debug = os.environ.get("CCGSC_GPU_DEBUG") == "1"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "kernelhost.gpuhost", self.mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # wgpu-native and Mesa write diagnostics there (XDG_RUNTIME_DIR warnings, ...).
            stderr=None if debug else subprocess.DEVNULL,
        )
        self._replies = queue.Queue()
        threading.Thread(
            target=_read_frames, args=(self._proc.stdout, self._replies), daemon=True
        ).start()
        reply = self._wait(START_TIMEOUT_S, None)
        if reply is None or reply[0] != "info":
            self._kill()
            why = reply[1] if reply is not None and len(reply) > 1 else "it did not start"
            raise GpuUnavailable(f"no GPU adapter for mode {self.mode!r}: {why}")
        self.info = AdapterInfo(**reply[1])
        return self.info

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _send(self, message: list[Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = msgpack.packb(message, use_bin_type=True)
        self._proc.stdin.write(struct.pack("<I", len(data)) + data)
        self._proc.stdin.flush()

    def _wait(self, timeout: float, cancel: threading.Event | None) -> Any:
        """The child's next reply, or None when the time is up, cancel is set or it died."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                return None
            try:
                return self._replies.get(timeout=min(left, 0.05))
            except queue.Empty:
                if self._proc is None or self._proc.poll() is not None:
                    # Died: its reader thread may still be handing over a last reply.
                    with contextlib.suppress(queue.Empty):
                        return self._replies.get(timeout=0.2)
                    return None

    # --- kernels -----------------------------------------------------------------------------

    def compile(self, source: bytes, sha256: str, manifest: GpuManifest) -> GpuKernel:
        """Compile the WGSL and build its pipeline with the contract's bind group layout;
        KernelRejected with naga's (or wgpu's) message when it does not."""
        with self._lock:
            self._ensure()
            self._send(["compile", sha256, source, manifest.to_json()])
            reply = self._wait(COMPILE_TIMEOUT_S, None)
            if reply is None:
                self._kill()
                raise KernelRejected("The WGSL compiler did not answer (it crashed or hung).")
        if reply[0] == "rejected":
            raise KernelRejected(f"The WGSL does not compile: {reply[1]}")
        if reply[0] != "ok":
            raise RuntimeError(f"the GPU host failed: {reply[1]}")
        return GpuKernel(sha256=sha256, source=source, manifest=manifest)

    def run(
        self,
        kernel: GpuKernel,
        *,
        stdin: bytes = b"",
        limits: Limits = Limits(),  # noqa: B008 (frozen)
        cancel: threading.Event | None = None,
        on_progress: Callable[[float], None] | None = None,
        on_checkpoint: Callable[[bytes], None] | None = None,
        **_ignored: Any,
    ) -> RunResult:
        """Run one task: stdin is the input buffer, the output buffer is stdout. The wall-time
        limit counts from when the task reaches the device (after any task ahead of it); on
        timeout or cancel the child is killed. Arguments of wasm runs (args, env, static,
        checkpoint) do not apply to gpu kernels and are ignored."""
        started = time.perf_counter()
        try:
            dispatch = resolve(kernel.manifest, len(stdin))
        except ValueError as exc:
            return _failed(ErrorKind.INVALID, str(exc), started)
        if dispatch.output_bytes > limits.output_bytes:
            return _failed(
                ErrorKind.OUTPUT_TOO_LARGE,
                f"The output buffer ({dispatch.output_bytes} bytes) exceeds the limit of"
                f" {limits.output_bytes} bytes.",
                started,
            )
        with self._lock:
            if cancel is not None and cancel.is_set():
                return _failed(ErrorKind.CANCELLED, "cancelled", started)
            self._ensure()
            started = time.perf_counter()
            self._send(["run", kernel.sha256, kernel.source, kernel.manifest.to_json(), stdin])
            reply = self._wait(limits.timeout_s, cancel)
            if reply is None:
                alive = self._proc is not None and self._proc.poll() is None
                self._kill()
                if cancel is not None and cancel.is_set():
                    return _failed(ErrorKind.CANCELLED, "cancelled", started)
                if alive:
                    return _failed(
                        ErrorKind.TIMEOUT,
                        f"The kernel ran longer than its time limit of {limits.timeout_s:g} s.",
                        started,
                    )
                return _failed(ErrorKind.TRAP, "The GPU device was lost (the host died).", started)
        kind, payload = reply[0], reply[1]
        if kind == "ok":
            out = bytes(payload)
            elapsed = time.perf_counter() - started
            return RunResult(0, out, b"", None, "", elapsed, stdout_size=len(out))
        if kind == "rejected":
            return _failed(ErrorKind.INVALID, f"The WGSL does not compile: {payload}", started)
        if kind == "invalid":
            return _failed(ErrorKind.INVALID, str(payload), started)
        return _failed(ErrorKind.TRAP, f"The GPU run failed: {payload}", started)


def _failed(kind: ErrorKind, message: str, started: float) -> RunResult:
    return RunResult(None, b"", b"", kind, message, time.perf_counter() - started)


def _read_frames(stream: IO[bytes] | None, out: queue.Queue[Any]) -> None:
    assert stream is not None
    while True:
        head = stream.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack("<I", head)
        body = stream.read(n)
        if len(body) < n:
            return
        out.put(msgpack.unpackb(body, raw=False))


# --- the server's compile check -------------------------------------------------------------------

_checker: GpuHost | None = None
_checker_lock = threading.Lock()
_checker_missing = ""


def compile_check(source: str | bytes, manifest: GpuManifest) -> str | None:
    """Compile `source` with naga and create its pipeline with the contract's layout, in this
    process's checker child (any adapter: only the WGSL front end matters). Returns the
    adapter's name; None when this machine has no wgpu or no adapter (only the text checks of
    kernelhost.gpu ran then); KernelRejected when the WGSL does not compile."""
    global _checker, _checker_missing
    data = source.encode() if isinstance(source, str) else source
    with _checker_lock:
        if _checker_missing:
            return None
        if _checker is None:
            _checker = GpuHost("any")
        try:
            info = _checker.start()
        except GpuUnavailable as exc:
            _checker_missing = str(exc)
            log.warning("gpu kernels are checked without compiling: %s", exc)
            return None
    import hashlib

    _checker.compile(data, hashlib.sha256(data).hexdigest(), manifest)
    return info.adapter


# --- the child ------------------------------------------------------------------------------------


def _pick_adapter(wgpu: Any, mode: Mode) -> Any:
    adapters = wgpu.gpu.enumerate_adapters_sync()

    def rank(a: Any) -> tuple[int, int]:
        kind, backend = a.info.get("adapter_type", ""), a.info.get("backend_type", "")
        k = HARDWARE_TYPES.index(kind) if kind in HARDWARE_TYPES else len(HARDWARE_TYPES)
        b = BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS)
        return (k, b)

    hardware = [a for a in adapters if a.info.get("adapter_type") in HARDWARE_TYPES]
    software = [a for a in adapters if a.info.get("adapter_type") == "CPU"]
    pool = {"hardware": hardware, "software": software, "any": hardware + software}[mode]
    if not pool:
        found = ", ".join(
            f"{a.info.get('device')} ({a.info.get('adapter_type')})" for a in adapters
        )
        raise GpuUnavailable(f"found {found or 'no adapter'}")
    return sorted(pool, key=rank)[0]


class _Device:
    """The child's device, its bind group layout (the contract's) and compiled pipelines."""

    def __init__(self, mode: Mode) -> None:
        import wgpu

        self.wgpu = wgpu
        self.adapter = _pick_adapter(wgpu, mode)
        # WebGPU's default limits, as a browser gets them: kernels behave the same.
        self.device = self.adapter.request_device_sync()
        limits = self.device.limits
        stage = wgpu.ShaderStage.COMPUTE
        self.layout = self.device.create_bind_group_layout(
            entries=[
                {"binding": 0, "visibility": stage, "buffer": {"type": "read-only-storage"}},
                {"binding": 1, "visibility": stage, "buffer": {"type": "storage"}},
                {"binding": 2, "visibility": stage, "buffer": {"type": "uniform"}},
            ]
        )
        self.pipeline_layout = self.device.create_pipeline_layout(bind_group_layouts=[self.layout])
        self.pipelines: OrderedDict[tuple[str, str], Any] = OrderedDict()
        info = self.adapter.info
        self.info = AdapterInfo(
            adapter=f"{info.get('device', '?')} ({info.get('backend_type', '?')},"
            f" {info.get('adapter_type', '?')})",
            max_buffer=int(limits["max-storage-buffer-binding-size"]),
            max_workgroups=int(limits["max-compute-workgroups-per-dimension"]),
            max_invocations=int(limits["max-compute-invocations-per-workgroup"]),
            software=info.get("adapter_type") == "CPU",
        )

    def pipeline(self, sha256: str, source: bytes, manifest: GpuManifest) -> Any:
        key = (sha256, manifest.entry_point)
        found = self.pipelines.get(key)
        if found is not None:
            self.pipelines.move_to_end(key)
            return found
        try:
            module = self.device.create_shader_module(code=source.decode("utf-8"))
            pipeline = self.device.create_compute_pipeline(
                layout=self.pipeline_layout,
                compute={"module": module, "entry_point": manifest.entry_point},
            )
        except (self.wgpu.GPUError, UnicodeDecodeError) as exc:
            raise KernelRejected(_naga_message(str(exc))) from None
        self.pipelines[key] = pipeline
        while len(self.pipelines) > PIPELINE_CACHE:
            self.pipelines.popitem(last=False)
        return pipeline

    def run(self, pipeline: Any, manifest: GpuManifest, data: bytes) -> bytes:
        wgpu = self.wgpu
        d = resolve(manifest, len(data))
        if d.workgroups > self.info.max_workgroups:
            raise ValueError("dispatch too large")
        for what, size in (("input", d.padded_input), ("output", d.output_bytes)):
            if size > self.info.max_buffer:
                raise ValueError(
                    f"the {what} buffer ({size} bytes) exceeds this adapter's"
                    f" {self.info.max_buffer} bytes"
                )
        dev = self.device
        usage = wgpu.BufferUsage
        inp = dev.create_buffer_with_data(
            data=data + b"\0" * (d.padded_input - len(data)), usage=usage.STORAGE
        )
        # WebGPU zero-initialises new buffers.
        out = dev.create_buffer(size=d.output_bytes, usage=usage.STORAGE | usage.COPY_SRC)
        params = dev.create_buffer_with_data(
            data=struct.pack("<4I", d.input_bytes, d.output_bytes, d.invocations, 0),
            usage=usage.UNIFORM,
        )
        assert PARAMS_BYTES == 16
        group = dev.create_bind_group(
            layout=self.layout,
            entries=[
                {"binding": 0, "resource": {"buffer": inp, "offset": 0, "size": d.padded_input}},
                {"binding": 1, "resource": {"buffer": out, "offset": 0, "size": d.output_bytes}},
                {"binding": 2, "resource": {"buffer": params, "offset": 0, "size": PARAMS_BYTES}},
            ],
        )
        encoder = dev.create_command_encoder()
        compute = encoder.begin_compute_pass()
        compute.set_pipeline(pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(d.workgroups, 1, 1)
        compute.end()
        dev.queue.submit([encoder.finish()])
        result = bytes(dev.queue.read_buffer(out))
        for buffer in (inp, out, params):
            buffer.destroy()
        return result


def _naga_message(text: str) -> str:
    """wgpu's error text without its "Validation Error / Caused by" boilerplate, one block."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln.strip() not in ("Validation Error", "Caused by:")]
    lines = [ln for ln in lines if not ln.strip().startswith("In wgpuDevice")]
    return "\n".join(ln.strip() for ln in lines)[:2000] or text[:2000]


def _child(mode: Mode) -> int:
    # The protocol owns the real stdout; anything else printed goes to stderr.
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    proto_in = sys.stdin.buffer

    def reply(*message: Any) -> None:
        data = msgpack.packb(list(message), use_bin_type=True)
        proto_out.write(struct.pack("<I", len(data)) + data)
        proto_out.flush()

    try:
        device = _Device(mode)
    except Exception as exc:
        reply("none", str(exc))
        return 1
    reply("info", device.info.__dict__)
    while True:
        head = proto_in.read(4)
        if len(head) < 4:
            return 0
        (n,) = struct.unpack("<I", head)
        op, sha256, source, manifest_json, *rest = msgpack.unpackb(proto_in.read(n), raw=False)
        try:
            manifest = parse_manifest(manifest_json)
            pipeline = device.pipeline(sha256, source, manifest)
            if op == "compile":
                reply("ok", None)
            else:
                reply("ok", device.run(pipeline, manifest, rest[0]))
        except KernelRejected as exc:
            reply("rejected", exc.reason)
        except ValueError as exc:
            reply("invalid", str(exc))
        except Exception as exc:
            reply("error", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1] if len(sys.argv) > 1 else "hardware"))  # type: ignore[arg-type]
