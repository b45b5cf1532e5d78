/*
 * mandelbrot_gen: generator for the mandelbrot kernel.
 *
 * Args:   W H TILES_X TILES_Y MAXITER (defaults 400 300 24 30 1000: 720 tiles).
 *         1 <= TILES_X <= W, 1 <= TILES_Y <= H, so no tile is empty.
 * Output: one frame "W H X0 Y0 TW TH MAXITER" per tile, rows of tiles top to
 *         bottom, each row left to right. Tile (i, j) spans x from i*W/TILES_X
 *         to (i+1)*W/TILES_X (integer division), y likewise.
 */
#include "../ccgsc.h"

static int arg_u64(int argc, char **argv, int i, uint64_t dflt, uint64_t *out) {
    if (i >= argc) {
        *out = dflt;
        return 0;
    }
    return ccgsc_parse_u64s(argv[i], out, 1);
}

int main(int argc, char **argv) {
    uint64_t w, h, tx, ty, maxiter;
    if (argc > 6 || arg_u64(argc, argv, 1, 400, &w) || arg_u64(argc, argv, 2, 300, &h) ||
        arg_u64(argc, argv, 3, 24, &tx) || arg_u64(argc, argv, 4, 30, &ty) ||
        arg_u64(argc, argv, 5, 1000, &maxiter) || w == 0 || h == 0 || w > 1000000 ||
        h > 1000000 || tx == 0 || tx > w || ty == 0 || ty > h || maxiter == 0 ||
        maxiter > 65535) {
        fputs("usage: mandelbrot_gen [W [H [TILES_X [TILES_Y [MAXITER]]]]]\n"
              "  1 <= W,H <= 1000000, 1 <= TILES_X <= W, 1 <= TILES_Y <= H, "
              "1 <= MAXITER <= 65535\n", stderr);
        return 2;
    }
    for (uint64_t j = 0; j < ty; j++) {
        uint64_t y0 = j * h / ty, y1 = (j + 1) * h / ty;
        for (uint64_t i = 0; i < tx; i++) {
            uint64_t x0 = i * w / tx, x1 = (i + 1) * w / tx;
            char task[96];
            int len = snprintf(task, sizeof task, "%llu %llu %llu %llu %llu %llu %llu",
                               (unsigned long long)w, (unsigned long long)h,
                               (unsigned long long)x0, (unsigned long long)y0,
                               (unsigned long long)(x1 - x0), (unsigned long long)(y1 - y0),
                               (unsigned long long)maxiter);
            if (ccgsc_emit_task(task, (uint32_t)len) != 0) return 1;
        }
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
