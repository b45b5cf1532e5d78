// Atomics on the output buffer (declared array<atomic<u32>>, the same binding): 4000
// invocations add to 16 bins in any order; the counts are exact.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
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
