/*
 * montecarlo_reduce: reducer for the montecarlo kernel.
 *
 * Input:  the campaign's results as frames (a 4-byte little-endian length, then
 *         that many bytes), each a montecarlo output "INSIDE ITERATIONS\n".
 * Output: "PI_ESTIMATE INSIDE TOTAL\n": the sums of INSIDE and ITERATIONS over
 *         every frame, and 4 * INSIDE / TOTAL printed with "%.10f" (0 when
 *         there are no frames, e.g. "0.0000000000 0 0\n").
 * Errors: a truncated frame, a frame longer than 64 bytes or not two decimal
 *         u64s, or sums that overflow -> message on stderr, exit 2.
 */
#include "../ccgsc.h"

#define MAX_FRAME 64

/* 1: a frame was read into buf (NUL-terminated); 0: clean end of input; -1: truncated. */
static int read_frame(char *buf, uint32_t *len) {
    unsigned char header[4];
    size_t got = fread(header, 1, 4, stdin);
    if (got == 0 && feof(stdin)) return 0;
    if (got != 4) return -1;
    *len = (uint32_t)header[0] | (uint32_t)header[1] << 8 | (uint32_t)header[2] << 16 |
           (uint32_t)header[3] << 24;
    if (*len > MAX_FRAME) return -2;
    if (fread(buf, 1, *len, stdin) != *len) return -1;
    buf[*len] = '\0';
    return 1;
}

int main(void) {
    char buf[MAX_FRAME + 1];
    uint32_t len;
    uint64_t inside = 0, total = 0, frames = 0;
    for (;;) {
        int rc = read_frame(buf, &len);
        if (rc == 0) break;
        if (rc == -1) {
            fprintf(stderr, "montecarlo_reduce: input ends inside frame %llu\n",
                    (unsigned long long)frames);
            return 2;
        }
        uint64_t v[2];
        if (rc == -2 || strlen(buf) != len || ccgsc_parse_u64s(buf, v, 2) != 0 || v[0] > v[1]) {
            fprintf(stderr,
                    "montecarlo_reduce: frame %llu is not a montecarlo result \"INSIDE ITERATIONS\"\n",
                    (unsigned long long)frames);
            return 2;
        }
        if (inside + v[0] < inside || total + v[1] < total) {
            fputs("montecarlo_reduce: the sums overflow 64 bits\n", stderr);
            return 2;
        }
        inside += v[0];
        total += v[1];
        frames++;
    }
    double estimate = total ? 4.0 * (double)inside / (double)total : 0.0;
    printf("%.10f %llu %llu\n", estimate, (unsigned long long)inside, (unsigned long long)total);
    return fflush(stdout) == 0 ? 0 : 1;
}
