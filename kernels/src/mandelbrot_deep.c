/*
 * mandelbrot_deep: the CPU (WebAssembly) version of kernels/gpu/mandelbrot_deep.wgsl, the same
 * kernel for the same tasks, so one deep-zoom campaign can run on CPUs and another on GPUs and
 * their results compare byte for byte.
 *
 * Input:  40 bytes, little-endian u32 words (mandelbrot_deep_gen writes them):
 *           0 maxiter   1 reserved   2-3 cr0   4-5 ci0   6-7 step   (Q8.56 int64 as lo, hi)
 *           8 x0 | y0 << 16   9 W | H << 16   (the tile's place in the image; unused here)
 * Output: 64 x 64 little-endian uint32 iteration counts, row-major. Pixel (tx, ty) is
 *         c = (cr0 + tx*step) + (ci0 - ty*step) i; its count is the number of steps
 *         z <- z^2 + c (from z = 0) taken while |z|^2 <= 4, at most maxiter, in Q8.56 fixed
 *         point (56 fraction bits) where every product is floor(a*b / 2^56) and sums wrap.
 * Errors: input not 40 bytes -> message on stderr, exit 2.
 */
#include "../ccgsc.h"

#define TILE 64
#define FOUR ((int64_t)1 << 58)

static int64_t mulfix(int64_t a, int64_t b) {
    return (int64_t)(((__int128)a * (__int128)b) >> 56);
}

static int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

static uint32_t word(const unsigned char *p, int i) {
    return (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
           (uint32_t)p[4 * i + 3] << 24;
}

static int64_t fixed(const unsigned char *p, int i) {
    return (int64_t)((uint64_t)word(p, i) | (uint64_t)word(p, i + 1) << 32);
}

int main(void) {
    size_t len;
    unsigned char *in = ccgsc_read_all(stdin, &len);
    if (in == NULL || len != 40) {
        fputs("mandelbrot_deep: input must be the 40 bytes mandelbrot_deep_gen writes\n", stderr);
        return 2;
    }
    uint32_t maxiter = word(in, 0);
    int64_t cr0 = fixed(in, 2), ci0 = fixed(in, 4), step = fixed(in, 6);
    free(in);
    static unsigned char out[TILE * TILE * 4];
    for (uint32_t ty = 0; ty < TILE; ty++) {
        int64_t ci = wrap_sub(ci0, (int64_t)((uint64_t)step * ty));
        for (uint32_t tx = 0; tx < TILE; tx++) {
            int64_t cr = wrap_add(cr0, (int64_t)((uint64_t)step * tx));
            int64_t zr = 0, zi = 0;
            uint32_t n = 0;
            while (n < maxiter) {
                int64_t zr2 = mulfix(zr, zr), zi2 = mulfix(zi, zi);
                if (wrap_add(zr2, zi2) > FOUR) break;
                int64_t zrzi = mulfix(zr, zi);
                zi = wrap_add((int64_t)((uint64_t)zrzi << 1), ci);
                zr = wrap_add(wrap_sub(zr2, zi2), cr);
                n++;
            }
            unsigned char *o = out + 4 * (ty * TILE + tx);
            o[0] = n & 0xff;
            o[1] = (n >> 8) & 0xff;
            o[2] = (n >> 16) & 0xff;
            o[3] = n >> 24;
        }
        if ((ty + 1) % 16 == 0 && ty + 1 < TILE) ccgsc_progress((double)(ty + 1) / TILE);
    }
    ccgsc_progress(1.0);
    return fwrite(out, 1, sizeof out, stdout) == sizeof out && fflush(stdout) == 0 ? 0 : 1;
}
