// mandelbrot_deep: one 64x64 tile of a deep zoom into the Mandelbrot set, in 64-bit fixed point
// (Q8.56: 56 fraction bits, resolution 1.4e-17) emulated with u32 pairs. f32 runs out of bits
// at a view about 3e-5 wide; this reaches views a million times narrower, and being integer
// arithmetic it gives the same counts on every GPU and in the CPU version of the same kernel
// (kernels/src/mandelbrot_deep.c), so results verify byte for byte.
//
// Input (40 bytes, little-endian u32 words; written by mandelbrot_deep_gen):
//   0 maxiter   1 reserved   2-3 cr0   4-5 ci0   6-7 step   (Q8.56 as lo, hi)
//   8 x0 | y0 << 16   9 W | H << 16   (where the tile sits in the W x H image; unused here)
// Pixel (tx, ty) of the tile is c = (cr0 + tx*step) + (ci0 - ty*step) i.
// Output: 4096 u32 iteration counts, row-major: the steps z <- z^2 + c (from z = 0) taken while
// |z|^2 <= 4, at most maxiter, every product floor((a*b) / 2^56) (an arithmetic shift).

struct Params { input_bytes: u32, output_bytes: u32, invocations: u32, reserved: u32 }
@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

const TILE: u32 = 64u;

// A 64-bit two's complement integer as (lo, hi).
fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

// The full 64-bit product of two u32, from 16-bit halves.
fn mul32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return vec2<u32>((p00 & 0xffffu) | (mid << 16u), a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}

// a * k (mod 2^64) for a small unsigned k.
fn mul_small(a: vec2<u32>, k: u32) -> vec2<u32> {
    let p = mul32(a.x, k);
    return vec2<u32>(p.x, p.y + a.y * k);
}

// floor(a * b / 2^56) for Q8.56 numbers: bits 56..119 of the signed 128-bit product.
fn mulfix(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let p00 = mul32(a.x, b.x);
    let p01 = mul32(a.x, b.y);
    let p10 = mul32(a.y, b.x);
    let p11 = mul32(a.y, b.y);
    var w1 = p00.y + p01.x;
    var c1 = select(0u, 1u, w1 < p01.x);
    w1 = w1 + p10.x;
    c1 = c1 + select(0u, 1u, w1 < p10.x);
    var w2 = p11.x + p01.y;
    var c2 = select(0u, 1u, w2 < p01.y);
    w2 = w2 + p10.y;
    c2 = c2 + select(0u, 1u, w2 < p10.y);
    w2 = w2 + c1;
    c2 = c2 + select(0u, 1u, w2 < c1);
    var high = vec2<u32>(w2, p11.y + c2);
    // The unsigned product, corrected to the signed one (two's complement).
    if ((a.y >> 31u) != 0u) { high = sub64(high, b); }
    if ((b.y >> 31u) != 0u) { high = sub64(high, a); }
    return vec2<u32>((w1 >> 24u) | (high.x << 8u), (high.x >> 24u) | (high.y << 8u));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.invocations) { return; }
    let maxiter = input[0];
    let step = vec2<u32>(input[6], input[7]);
    let cr = add64(vec2<u32>(input[2], input[3]), mul_small(step, i % TILE));
    let ci = sub64(vec2<u32>(input[4], input[5]), mul_small(step, i / TILE));
    var zr = vec2<u32>(0u, 0u);
    var zi = vec2<u32>(0u, 0u);
    var n = 0u;
    loop {
        if (n >= maxiter) { break; }
        let zr2 = mulfix(zr, zr);
        let zi2 = mulfix(zi, zi);
        let m = add64(zr2, zi2);
        // |z|^2 > 4 (4.0 is 2^58: hi 0x04000000, lo 0); never negative, below 2^63.
        if (m.y > 0x04000000u || (m.y == 0x04000000u && m.x != 0u)) { break; }
        let zrzi = mulfix(zr, zi);
        zi = add64(vec2<u32>(zrzi.x << 1u, (zrzi.y << 1u) | (zrzi.x >> 31u)), ci);
        zr = add64(sub64(zr2, zi2), cr);
        n = n + 1u;
    }
    output[i] = n;
}
