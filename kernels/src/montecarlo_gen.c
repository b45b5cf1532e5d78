/*
 * montecarlo_gen: generator for the montecarlo kernel.
 *
 * Args:   TASKS ITERATIONS (defaults 720 1000000).
 * Output: frames "SEED ITERATIONS" with SEED = 1, 2, ..., TASKS.
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
    uint64_t tasks, iterations;
    if (argc > 3 || arg_u64(argc, argv, 1, 720, &tasks) ||
        arg_u64(argc, argv, 2, 1000000, &iterations)) {
        fputs("usage: montecarlo_gen [TASKS [ITERATIONS]]\n", stderr);
        return 2;
    }
    for (uint64_t seed = 1; seed <= tasks && seed != 0; seed++) {
        char task[48];
        int len = snprintf(task, sizeof task, "%llu %llu", (unsigned long long)seed,
                           (unsigned long long)iterations);
        if (ccgsc_emit_task(task, (uint32_t)len) != 0) return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
