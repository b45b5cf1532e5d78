// Integer case: one invocation per input word (the input is 1001 bytes, so the last word is
// zero-padded); wrapping u32 arithmetic, shifts and the Params uniform must match exactly.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    var h = input[i] * 2654435761u + i;
    h = h ^ (h >> 13u) ^ (params.input_bytes << 7u) ^ params.output_bytes;
    output[i] = h * 0x9e3779b1u;
}
