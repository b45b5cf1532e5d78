// output_bytes "input": the output buffer is the padded input's size (13 bytes -> 16), the
// words reversed; the zero padding of the last word shows in the first output word.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let n = params.output_bytes / 4u;
    output[i] = input[n - 1u - i] ^ (params.input_bytes << 24u);
}
