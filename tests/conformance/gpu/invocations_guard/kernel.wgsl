// A numeric invocations (100) below the dispatch's 2 x 64: the kernel's guard leaves the
// last 28 words of the (zero-initialised) output untouched.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    output[i] = (i * 0x01000193u) ^ params.invocations;
}
