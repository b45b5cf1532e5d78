// Float case: a 16-term f32 series per input word (multiply, add, divide); hosts may
// differ in the last bits, so it is compared within the contract's tolerance.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
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
