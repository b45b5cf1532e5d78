// mandelbrot (gpu): one tile of the Mandelbrot set, the WGSL twin of kernels/src/mandelbrot.c.
//
// Input:  seven little-endian u32: W H X0 Y0 TW TH MAXITER (the C kernel's numbers, binary);
//         TW * TH must be even and TW * TH * 2 the manifest's output_bytes.
// Output: TW*TH little-endian u16 iteration counts, row-major (the C kernel's layout); each
//         invocation computes two neighbouring pixels and writes them as one u32 word.
// The arithmetic is the C kernel's in f32 (WGSL has no f64): counts agree with it except near
// the set's boundary, where f32 rounding changes when a point escapes.
struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

fn count(cr: f32, ci: f32, maxiter: u32) -> u32 {
    var zr = 0.0;
    var zi = 0.0;
    var zr2 = 0.0;
    var zi2 = 0.0;
    var n = 0u;
    while (n < maxiter && zr2 + zi2 <= 4.0) {
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
        zr2 = zr * zr;
        zi2 = zi * zi;
        n = n + 1u;
    }
    return n;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.invocations) { return; }
    let w = f32(input[0]);
    let h = f32(input[1]);
    let x0 = input[2];
    let y0 = input[3];
    let tw = input[4];
    let maxiter = min(input[6], 65535u);
    var word = 0u;
    for (var k = 0u; k < 2u; k = k + 1u) {
        let p = gid.x * 2u + k;
        let tx = p % tw;
        let ty = p / tw;
        let ci = 1.25 - (f32(y0 + ty) + 0.5) * 2.5 / h;
        let cr = -2.5 + (f32(x0 + tx) + 0.5) * 3.5 / w;
        word = word | (count(cr, ci, maxiter) << (16u * k));
    }
    output[gid.x] = word;
}
