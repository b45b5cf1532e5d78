/*
 * primes_gen: generator for the primes kernel.
 *
 * Args:   N CHUNK (defaults 1000000 10000; 1 <= CHUNK <= 10000000).
 * Output: one frame "LO HI" per chunk, covering [0, N) in order; the last
 *         chunk is shorter when CHUNK does not divide N.
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
    uint64_t n, chunk;
    if (argc > 3 || arg_u64(argc, argv, 1, 1000000, &n) || arg_u64(argc, argv, 2, 10000, &chunk) ||
        chunk == 0 || chunk > 10000000) {
        fputs("usage: primes_gen [N [CHUNK]]  (1 <= CHUNK <= 10000000)\n", stderr);
        return 2;
    }
    for (uint64_t lo = 0; lo < n; lo += chunk) {
        uint64_t hi = n - lo < chunk ? n : lo + chunk;
        char task[48];
        int len = snprintf(task, sizeof task, "%llu %llu", (unsigned long long)lo,
                           (unsigned long long)hi);
        if (ccgsc_emit_task(task, (uint32_t)len) != 0) return 1;
        if (hi == n) break; /* also stops lo + chunk from wrapping */
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
