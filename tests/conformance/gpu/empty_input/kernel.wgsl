// Padding case: an empty task input is bound as one zero word (arrayLength 1) and
// params.input_bytes is 0; the output buffer starts zeroed.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    output[i] = (params.input_bytes + i * 7u + arrayLength(&input)) ^ input[0] ^ output[i];
}
