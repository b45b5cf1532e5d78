// Integer case: the bit built-ins (countOneBits, reverseBits, firstLeadingBit,
// countLeadingZeros, countTrailingZeros) and shifts by a runtime amount, zero included.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
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
