"""Write the GPU conformance cases whose expected output is computed here, in Python, from the
WGSL semantics (not taken from either host): `python tests/conformance/gpu/generate.py`.

Each case is a folder with kernel.wgsl, manifest.json, input.bin and expected.bin. Integer
cases must be byte-identical on every host; float cases (manifest "float": true) agree within
the contract's tolerance. The cases f32_poly and u32_hash_padded were written with the browser
host (their expected.bin is checked by both hosts as well).
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
M32 = 0xFFFFFFFF
HEADER = """struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
"""


def words(data: bytes) -> list[int]:
    data = (data + b"\0" * (-len(data) % 4)) or b"\0" * 4
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def pack(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}I", *[v & M32 for v in values])


def write(name: str, comment: str, body: str, manifest: dict, data: bytes, expected: bytes) -> None:
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    text = "".join(f"// {line}\n" for line in comment.strip().splitlines())
    uses_header = "@binding(0)" not in body
    (folder / "kernel.wgsl").write_text(text + (HEADER if uses_header else "") + body.lstrip("\n"))
    full = {"entry_point": "main", "invocations": "output_words", "float": False, **manifest}
    (folder / "manifest.json").write_text(json.dumps(full) + "\n")
    (folder / "input.bin").write_bytes(data)
    (folder / "expected.bin").write_bytes(expected)


def i32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v & 0x80000000 else v


def trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def u32_arith() -> None:
    rng = random.Random(15)
    pairs = [(rng.getrandbits(32), rng.getrandbits(32) >> rng.randrange(32)) for _ in range(250)]
    pairs += [(7, 0), (0x80000000, M32), (M32, 1), (123456789, 0), (5, 3), (0, 0)]
    data = pack([x for p in pairs for x in p])
    out = []
    for a, b in pairs:
        # WGSL: u32 a / 0 is a, a % 0 is 0; i32 MIN / -1 is MIN, MIN % -1 is 0, x / 0 is x.
        q = a if b == 0 else a // b
        r = 0 if b == 0 else a % b
        sa, sb = i32(a), i32(b)
        if sb == 0 or (sa == -(1 << 31) and sb == -1):
            sq, sr = sa, 0
        else:
            sq = trunc_div(sa, sb)
            sr = sa - sq * sb
        out.append((a * b + q) ^ r ^ ((sq + sr) & M32))
    write(
        "u32_arith",
        """Integer case: wrapping u32 multiply and add, and the corners WGSL defines for integer
division: x / 0 = x, x % 0 = 0, and i32 MIN / -1 = MIN (MIN % -1 = 0), as both hosts'
compilers must polyfill them.""",
        """
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let a = input[2u * i];
    let b = input[2u * i + 1u];
    let sa = bitcast<i32>(a);
    let sb = bitcast<i32>(b);
    output[i] = (a * b + a / b) ^ (a % b) ^ bitcast<u32>(sa / sb + sa % sb);
}
""",
        {"workgroup_size": 64, "output_bytes": 4 * len(pairs), "invocations": "output_words"},
        data,
        pack(out),
    )


def bit_ops() -> None:
    rng = random.Random(16)
    values = [rng.getrandbits(32) for _ in range(200)] + [0, 1, M32, 0x80000000, 0x00010000]
    out = []
    for x in values:
        ones = bin(x).count("1")
        rev = int(f"{x:032b}"[::-1], 2)
        lead = M32 if x == 0 else x.bit_length() - 1
        clz = 32 - x.bit_length()
        ctz = 32 if x == 0 else (x & -x).bit_length() - 1
        s = x & 31
        rotl = ((x << s) | (x >> ((32 - s) & 31))) & M32 if s else x
        out += [ones | (clz << 8) | (ctz << 16), rev, lead, rotl ^ (x >> 7)]
    write(
        "bit_ops",
        """Integer case: the bit built-ins (countOneBits, reverseBits, firstLeadingBit,
countLeadingZeros, countTrailingZeros) and shifts by a runtime amount, zero included.""",
        """
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let x = input[i];
    let s = x & 31u;
    var rotl = x;
    if (s != 0u) { rotl = (x << s) | (x >> (32u - s)); }
    let counts = countOneBits(x) | (countLeadingZeros(x) << 8u);
    output[4u * i] = counts | (countTrailingZeros(x) << 16u);
    output[4u * i + 1u] = reverseBits(x);
    output[4u * i + 2u] = firstLeadingBit(x);
    output[4u * i + 3u] = rotl ^ (x >> 7u);
}
""",
        {"workgroup_size": 64, "output_bytes": 16 * len(values), "invocations": "input_words"},
        pack(values),
        pack(out),
    )


def empty_input() -> None:
    # An empty input is one zero word; params.input_bytes says 0.
    out = [(0 + i * 7 + 1) ^ 0 for i in range(4)]
    write(
        "empty_input",
        """Padding case: an empty task input is bound as one zero word (arrayLength 1) and
params.input_bytes is 0; the output buffer starts zeroed.""",
        """
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    output[i] = (params.input_bytes + i * 7u + arrayLength(&input)) ^ input[0] ^ output[i];
}
""",
        {"workgroup_size": 4, "output_bytes": 16},
        b"",
        pack(out),
    )


def echo_input() -> None:
    data = bytes(range(1, 14))  # 13 bytes: padded to 16, the last word 0x0000000d
    w = words(data)
    n = len(w)
    out = [w[n - 1 - i] ^ (13 << 24) for i in range(n)]
    write(
        "output_input_size",
        """output_bytes "input": the output buffer is the padded input's size (13 bytes -> 16), the
words reversed; the zero padding of the last word shows in the first output word.""",
        """
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let n = params.output_bytes / 4u;
    output[i] = input[n - 1u - i] ^ (params.input_bytes << 24u);
}
""",
        {"workgroup_size": 8, "output_bytes": "input", "invocations": "input_words"},
        data,
        pack(out),
    )


def invocations_guard() -> None:
    n, total = 100, 128  # two workgroups of 64 run 128 invocations; 28 must do nothing
    out = [(i * 0x01000193) ^ n for i in range(n)] + [0] * (total - n)
    write(
        "invocations_guard",
        """A numeric invocations (100) below the dispatch's 2 x 64: the kernel's guard leaves the
last 28 words of the (zero-initialised) output untouched.""",
        """
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    output[i] = (i * 0x01000193u) ^ params.invocations;
}
""",
        {"workgroup_size": 64, "output_bytes": 4 * total, "invocations": n},
        b"\0" * 4,
        pack(out),
    )


def f32_series() -> None:
    import numpy as np

    rng = random.Random(17)
    xs = [rng.uniform(-4.0, 4.0) for _ in range(300)]
    data = struct.pack(f"<{len(xs)}f", *xs)
    xs32 = np.frombuffer(data, dtype="<f4")
    out = []
    for x in xs32:
        acc = np.float32(0.0)
        for j in range(16):
            fj = np.float32(j)
            acc = np.float32(acc + np.float32(np.float32(x * fj + np.float32(0.5)) / (fj + 1)))
        out.append(float(acc))
    write(
        "f32_series",
        """Float case: a 16-term f32 series per input word (multiply, add, divide); hosts may
differ in the last bits, so it is compared within the contract's tolerance.""",
        """
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let x = bitcast<f32>(input[i]);
    var acc = 0.0;
    for (var j = 0u; j < 16u; j++) {
        let fj = f32(j);
        acc = acc + (x * fj + 0.5) / (fj + 1.0);
    }
    output[i] = bitcast<u32>(acc);
}
""",
        {
            "workgroup_size": 64,
            "output_bytes": "input",
            "invocations": "input_words",
            "float": True,
        },
        data,
        struct.pack(f"<{len(out)}f", *out),
    )


def workgroup_sum() -> None:
    rng = random.Random(18)
    values = [rng.getrandbits(24) for _ in range(64 * 16)]
    sums = [sum(values[g * 64 : (g + 1) * 64]) & M32 for g in range(16)]
    write(
        "workgroup_sum",
        """Workgroup shared memory and barriers: each workgroup of 64 sums its 64 input words by
a tree reduction in var<workgroup> memory; invocation 0 writes the group's sum.""",
        """
var<workgroup> partial: array<u32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
    partial[lid] = input[gid.x];
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) { partial[lid] = partial[lid] + partial[lid + stride]; }
        workgroupBarrier();
    }
    if (lid == 0u) { output[wid.x] = partial[0]; }
}
""",
        {"workgroup_size": 64, "output_bytes": 4 * 16, "invocations": "input_words"},
        pack(values),
        pack(sums),
    )


def atomic_histogram() -> None:
    rng = random.Random(19)
    values = [rng.getrandbits(32) for _ in range(4000)]
    hist = [0] * 16
    for v in values:
        hist[v & 15] += 1
        hist[(v >> 28) & 15] += 2
    write(
        "atomic_histogram",
        """Atomics on the output buffer (declared array<atomic<u32>>, the same binding): 4000
invocations add to 16 bins in any order; the counts are exact.""",
        """struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(128)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let v = input[i];
    atomicAdd(&output[v & 15u], 1u);
    atomicAdd(&output[(v >> 28u) & 15u], 2u);
}
""",
        {"workgroup_size": 128, "output_bytes": 64, "invocations": "input_words"},
        pack(values),
        pack(hist),
    )


if __name__ == "__main__":
    for make in (
        u32_arith,
        bit_ops,
        empty_input,
        echo_input,
        invocations_guard,
        f32_series,
        workgroup_sum,
        atomic_histogram,
    ):
        make()
