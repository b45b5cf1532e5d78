/*
 * mandelbrot_deep_gen: generator for mandelbrot_deep (the WGSL kernel and its CPU version).
 *
 * Args:   W H MAXITER RE IM SPAN (defaults 512 384 1500 -0.743643887037151 0.131825904205330
 *         0.000000002): a W x H image (multiples of 64) of the view SPAN wide centred on
 *         RE + IM i, decimals with at most 18 fraction digits, |RE|, |IM| < 4, 0 < SPAN < 4.
 * Output: one 40-byte task per 64x64 tile, rows of tiles top to bottom, each row left to right
 *         (the layout is in mandelbrot_deep.c). Coordinates are Q8.56 fixed point: a decimal
 *         d becomes round(d * 2^56); the pixel size is floor(SPAN / W) in those units.
 */
#include "../ccgsc.h"

#define TILE 64

/* A decimal "[-]I[.F]" as Q8.56, rounded to nearest; -1 on error. */
static int parse_fixed(const char *s, int64_t *out) {
    int negative = 0;
    if (*s == '-') {
        negative = 1;
        s++;
    }
    if (*s < '0' || *s > '9') return -1;
    uint64_t whole = 0;
    while (*s >= '0' && *s <= '9') {
        whole = whole * 10 + (uint64_t)(*s++ - '0');
        if (whole >= 4) return -1;
    }
    unsigned __int128 frac = 0, scale = 1;
    if (*s == '.') {
        s++;
        for (int digits = 0; *s >= '0' && *s <= '9'; digits++, s++) {
            if (digits >= 18) return -1;
            frac = frac * 10 + (unsigned)(*s - '0');
            scale *= 10;
        }
    }
    if (*s != '\0') return -1;
    int64_t value = (int64_t)(whole << 56) + (int64_t)(((frac << 56) + scale / 2) / scale);
    *out = negative ? -value : value;
    return 0;
}

static void put_word(unsigned char *p, int i, uint32_t v) {
    p[4 * i] = v & 0xff;
    p[4 * i + 1] = (v >> 8) & 0xff;
    p[4 * i + 2] = (v >> 16) & 0xff;
    p[4 * i + 3] = v >> 24;
}

static void put_fixed(unsigned char *p, int i, int64_t v) {
    put_word(p, i, (uint32_t)((uint64_t)v & 0xffffffffu));
    put_word(p, i + 1, (uint32_t)((uint64_t)v >> 32));
}

int main(int argc, char **argv) {
    const char *arg[6] = {"512", "384", "1500", "-0.743643887037151", "0.131825904205330",
                          "0.000000002"};
    for (int i = 1; i < argc && i <= 6; i++) arg[i - 1] = argv[i];
    uint64_t w, h, maxiter;
    int64_t re, im, span;
    if (argc > 7 || ccgsc_parse_u64s(arg[0], &w, 1) || ccgsc_parse_u64s(arg[1], &h, 1) ||
        ccgsc_parse_u64s(arg[2], &maxiter, 1) || parse_fixed(arg[3], &re) ||
        parse_fixed(arg[4], &im) || parse_fixed(arg[5], &span) || w == 0 || h == 0 ||
        w % TILE || h % TILE || w > 65472 || h > 65472 || maxiter == 0 ||
        maxiter > 1000000 || span <= 0) {
        fputs("usage: mandelbrot_deep_gen [W [H [MAXITER [RE [IM [SPAN]]]]]]\n"
              "  W, H multiples of 64 up to 65472; 1 <= MAXITER <= 1000000;\n"
              "  RE, IM, SPAN decimals (at most 18 fraction digits), |RE|,|IM| < 4, 0 < SPAN < 4\n",
              stderr);
        return 2;
    }
    int64_t step = span / (int64_t)w;
    if (step == 0) {
        fputs("mandelbrot_deep_gen: SPAN / W is below the 2^-56 resolution\n", stderr);
        return 2;
    }
    /* The centre of the top-left pixel. */
    int64_t left = re - step * (int64_t)(w / 2) + step / 2;
    int64_t top = im + step * (int64_t)(h / 2) - step / 2;
    for (uint64_t j = 0; j < h / TILE; j++) {
        for (uint64_t i = 0; i < w / TILE; i++) {
            unsigned char task[40] = {0};
            put_word(task, 0, (uint32_t)maxiter);
            put_fixed(task, 2, left + step * (int64_t)(i * TILE));
            put_fixed(task, 4, top - step * (int64_t)(j * TILE));
            put_fixed(task, 6, step);
            put_word(task, 8, (uint32_t)(i * TILE) | (uint32_t)(j * TILE) << 16);
            put_word(task, 9, (uint32_t)w | (uint32_t)h << 16);
            if (ccgsc_emit_task(task, sizeof task) != 0) return 1;
        }
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
