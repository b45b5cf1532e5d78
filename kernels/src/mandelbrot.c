/*
 * mandelbrot: render one tile of the Mandelbrot set.
 *
 * Input:  "W H X0 Y0 TW TH MAXITER" (decimal integers): the tile of TW x TH
 *         pixels whose top-left pixel is (X0, Y0) in a W x H image of the
 *         window re in [-2.5, 1.0], im in [-1.25, 1.25].
 *         1 <= W, H <= 1000000; X0 + TW <= W; Y0 + TH <= H; 1 <= MAXITER <= 65535.
 * Output: TW*TH little-endian uint16 iteration counts, row-major.
 * Errors: malformed input -> message on stderr, exit 2.
 *
 * Pixel (x, y) is the point c = cr + ci*i with (in this evaluation order)
 *   cr = -2.5 + ((x + 0.5) * 3.5) / W,   ci = 1.25 - ((y + 0.5) * 2.5) / H
 * and its count n is the number of steps z <- z^2 + c (from z = 0) taken
 * while |z|^2 <= 4, at most MAXITER:
 *   zr = zi = 0; n = 0;
 *   while (n < MAXITER && zr*zr + zi*zi <= 4.0) {
 *       t = zr*zr - zi*zi + cr; zi = 2.0*zr*zi + ci; zr = t; n++;
 *   }
 * so a point that never escapes gets MAXITER.
 */
#include "../ccgsc.h"

int main(void) {
    size_t len;
    unsigned char *input = ccgsc_read_all(stdin, &len);
    uint64_t v[7];
    if (input == NULL || strlen((char *)input) != len ||
        ccgsc_parse_u64s((char *)input, v, 7) != 0) {
        fputs("mandelbrot: input must be \"W H X0 Y0 TW TH MAXITER\" (decimal integers)\n", stderr);
        return 2;
    }
    free(input);
    uint64_t w = v[0], h = v[1], x0 = v[2], y0 = v[3], tw = v[4], th = v[5], maxiter = v[6];
    if (w == 0 || h == 0 || w > 1000000 || h > 1000000 || x0 > w || tw > w - x0 || y0 > h ||
        th > h - y0 || maxiter == 0 || maxiter > 65535) {
        fputs("mandelbrot: need 1 <= W,H <= 1000000, X0+TW <= W, Y0+TH <= H, "
              "1 <= MAXITER <= 65535\n", stderr);
        return 2;
    }

    unsigned char *row = malloc(tw * 2 + 1);
    if (row == NULL) {
        fputs("mandelbrot: out of memory\n", stderr);
        return 1;
    }
    for (uint64_t ty = 0; ty < th; ty++) {
        double ci = 1.25 - ((double)(y0 + ty) + 0.5) * 2.5 / (double)h;
        for (uint64_t tx = 0; tx < tw; tx++) {
            double cr = -2.5 + ((double)(x0 + tx) + 0.5) * 3.5 / (double)w;
            double zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0;
            uint32_t n = 0;
            while (n < maxiter && zr2 + zi2 <= 4.0) {
                zi = 2.0 * zr * zi + ci;
                zr = zr2 - zi2 + cr;
                zr2 = zr * zr;
                zi2 = zi * zi;
                n++;
            }
            row[2 * tx] = (unsigned char)(n & 0xff);
            row[2 * tx + 1] = (unsigned char)(n >> 8);
        }
        if (fwrite(row, 1, tw * 2, stdout) != tw * 2) {
            fputs("mandelbrot: write to stdout failed\n", stderr);
            return 1;
        }
        if (th >= 8 && (ty + 1) % (th / 8) == 0 && ty + 1 < th)
            ccgsc_progress((double)(ty + 1) / (double)th);
    }
    ccgsc_progress(1.0);
    return fflush(stdout) == 0 ? 0 : 1;
}
