// Float case: f32 arithmetic and sqrt over the input read as f32 words; more output words than
// input words (the rest see zeros read past the input's end as 0.0 through a guarded index).
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    var x = 0.0;
    if (i < arrayLength(&input)) { x = bitcast<f32>(input[i]); }
    let y = sqrt(abs(x)) * 1.5 + x * x * 0.25 - 3.0;
    output[i] = bitcast<u32>(y);
}
