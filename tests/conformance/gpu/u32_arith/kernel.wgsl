// Integer case: wrapping u32 multiply and add, and the corners WGSL defines for integer
// division: x / 0 = x, x % 0 = 0, and i32 MIN / -1 = MIN (MIN % -1 = 0), as both hosts'
// compilers must polyfill them.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
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
