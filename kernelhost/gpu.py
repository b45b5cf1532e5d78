"""The GPU kernel contract (kind `gpu`): a WGSL compute module plus a manifest.

Plain data and text checks, no wgpu import: the protocol (workers/protocol.py), the upload
service and the hosts share these declarations. Running a kernel and compiling WGSL with naga
live in kernelhost.gpuhost (the optional `wgpu` package). The contract, shared with the browser
host (static/js), is docs/kernels.md's "GPU kernels" section:

- bindings in @group(0): 0 = `input` (storage, read; the task input zero-padded to a multiple
  of 4 bytes, at least 4), 1 = `output` (storage, read_write; `output_bytes`, zeroed),
  2 = `params` (uniform; {input_bytes, output_bytes, invocations, reserved}, four u32);
- dispatch: n = the resolved invocations, ceil(n / workgroup_size) workgroups in x (at most
  MAX_WORKGROUPS, else the task fails "dispatch too large");
- result: the output buffer's bytes, exactly output_bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from .contract import KernelRejected, MiB

#: Largest output buffer a manifest may ask for (and the most a task's padded input may be).
MAX_OUTPUT_BYTES = 64 * MiB
MAX_WORKGROUP_SIZE = 256
#: WebGPU's guaranteed maxComputeWorkgroupsPerDimension: a dispatch beyond it fails.
MAX_WORKGROUPS = 65535
MAX_INVOCATIONS = MAX_WORKGROUPS * MAX_WORKGROUP_SIZE
#: The uniform block at binding 2: four u32.
PARAMS_BYTES = 16
#: Float outputs are compared within these (rewards' tolerance verifier, the conformance cases).
FLOAT_REL_TOL = 1e-5
FLOAT_ABS_TOL = 1e-6
DISPATCH_TOO_LARGE = "dispatch too large"

OutputBytes = Annotated[int, msgspec.Meta(ge=4, le=MAX_OUTPUT_BYTES, multiple_of=4)]
Invocations = Annotated[int, msgspec.Meta(ge=1, le=MAX_INVOCATIONS)]
EntryPoint = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]


class GpuManifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How a task runs a gpu kernel. `output_bytes`: the output buffer's size, or "input" (the
    padded input size); `invocations`: "output_words" (output_bytes/4), "input_words" (padded
    input bytes/4) or a number; `workgroup_size` must equal the shader's @workgroup_size(x);
    `float`: the output is f32 words (the campaign then defaults to the tolerance verifier)."""

    workgroup_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKGROUP_SIZE)]
    output_bytes: OutputBytes | Literal["input"]
    entry_point: EntryPoint = "main"
    invocations: Invocations | Literal["output_words", "input_words"] = "output_words"
    float: bool = False

    def to_json(self) -> dict[str, object]:
        """The manifest with its defaults filled in, as stored with the kernel."""
        return msgspec.to_builtins(msgspec.structs.asdict(self))

    @property
    def buffer_bytes(self) -> int | None:
        """The output buffer's size when it does not depend on the task (the scheduler keeps
        such campaigns from sessions whose max_buffer is smaller)."""
        return self.output_bytes if isinstance(self.output_bytes, int) else None


def parse_manifest(data: bytes | str | Mapping[str, Any]) -> GpuManifest:
    """A manifest from JSON text or an already-decoded object; KernelRejected saying which
    field is wrong otherwise."""
    try:
        if isinstance(data, Mapping):
            return msgspec.convert(data, GpuManifest)
        return msgspec.json.decode(data, type=GpuManifest)
    except msgspec.ValidationError as exc:
        raise KernelRejected(f"The manifest is invalid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise KernelRejected(f"The manifest is not a JSON object: {exc}") from None


def padded(n: int) -> int:
    """A task input's size in the input buffer: a multiple of 4, at least 4."""
    return max(4, (n + 3) // 4 * 4)


class Dispatch(msgspec.Struct, frozen=True):
    """One task's buffer sizes and dispatch, resolved from the manifest and its input."""

    input_bytes: int
    padded_input: int
    output_bytes: int
    invocations: int
    workgroups: int


def resolve(manifest: GpuManifest, input_bytes: int) -> Dispatch:
    """The dispatch for a task input of `input_bytes`; ValueError("dispatch too large") or
    ValueError naming the oversized buffer when the contract's caps are exceeded."""
    pad = padded(input_bytes)
    if pad > MAX_OUTPUT_BYTES:
        raise ValueError(f"the task input ({input_bytes} bytes) exceeds {MAX_OUTPUT_BYTES} bytes")
    out = pad if manifest.output_bytes == "input" else manifest.output_bytes
    inv = manifest.invocations
    if inv == "output_words":
        n = out // 4
    elif inv == "input_words":
        n = pad // 4
    else:
        n = inv
    groups = -(-n // manifest.workgroup_size)
    if groups > MAX_WORKGROUPS:
        raise ValueError(DISPATCH_TOO_LARGE)
    return Dispatch(
        input_bytes=input_bytes,
        padded_input=pad,
        output_bytes=out,
        invocations=n,
        workgroups=groups,
    )


# --- WGSL source checks that need no compiler -----------------------------------------------------

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_BINDING = re.compile(
    r"@group\s*\(\s*(\d+)\s*\)\s*@binding\s*\(\s*(\d+)\s*\)\s*var\s*<\s*([a-z_]+)\s*(?:,\s*([a-z_]+)\s*)?>"
)


def check_source(source: bytes, manifest: GpuManifest) -> str:
    """Checks of the WGSL text that need no compiler: UTF-8, the entry point is a @compute
    function with @workgroup_size(manifest.workgroup_size) (y = z = 1), and the bindings of
    group 0 are the contract's. Returns the text; KernelRejected naming the first failed check.
    (The compiler, where there is one, checks the same and everything else: gpuhost.)"""
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        raise KernelRejected("A gpu kernel is WGSL source text in UTF-8.") from None
    code = _COMMENT.sub(" ", text)
    entry = manifest.entry_point
    fn = re.search(r"((?:@\w+\s*(?:\([^)]*\))?\s*)+)fn\s+" + re.escape(entry) + r"\s*\(", code)
    if fn is None or not re.search(r"@compute\b", fn.group(1)):
        raise KernelRejected(
            f"The WGSL has no @compute function {entry!r} (the manifest's entry_point)."
        )
    size = re.search(r"@workgroup_size\s*\(([^)]*)\)", fn.group(1))
    dims = [d.strip() for d in size.group(1).split(",") if d.strip()] if size else []
    if dims[:1] not in ([str(manifest.workgroup_size)], [f"{manifest.workgroup_size}u"]) or any(
        d not in ("1", "1u", "1i") for d in dims[1:]
    ):
        raise KernelRejected(
            f"The entry point {entry!r} must declare @workgroup_size({manifest.workgroup_size})"
            f" as the manifest says (found @workgroup_size({', '.join(dims)}))."
        )
    # binding -> (address space, accesses allowed; "" is the default: read for storage).
    contract = {
        0: ("storage", ("read", "")),
        1: ("storage", ("read_write",)),
        2: ("uniform", ("",)),
    }
    wording = {0: "var<storage, read>", 1: "var<storage, read_write>", 2: "var<uniform>"}
    seen: set[int] = set()
    for group, binding, space, access in _BINDING.findall(code):
        b = int(binding)
        if group != "0" or b not in contract:
            raise KernelRejected(
                f"@group({group}) @binding({binding}) is not in the contract: the bindings are"
                " @group(0) @binding(0) input, 1 output, 2 params."
            )
        if space != contract[b][0] or access not in contract[b][1]:
            raise KernelRejected(f"@binding({b}) must be {wording[b]}.")
        seen.add(b)
    if 1 not in seen:
        raise KernelRejected(
            "The WGSL declares no output: @group(0) @binding(1) var<storage, read_write>."
        )
    return text


def outputs_close(
    a: bytes, b: bytes, rel: float = FLOAT_REL_TOL, abs_tol: float = FLOAT_ABS_TOL
) -> bool:
    """Two outputs of f32 words agree within tolerance (NaN equals NaN; same length)."""
    import math
    import struct

    if len(a) != len(b) or len(a) % 4:
        return False
    n = len(a) // 4
    for x, y in zip(struct.unpack(f"<{n}f", a), struct.unpack(f"<{n}f", b), strict=True):
        if math.isnan(x) or math.isnan(y):
            if not (math.isnan(x) and math.isnan(y)):
                return False
        elif not math.isclose(x, y, rel_tol=rel, abs_tol=abs_tol):
            return False
    return True
