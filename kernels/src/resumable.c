/*
 * resumable: demonstrates progress and checkpoints.
 *
 * Input:  "N" (number of steps, 1 <= N <= 1000000).
 * Output: "resumed_from=R steps=N\n", R = the step found in /ccgsc/checkpoint
 *         (0 when starting from scratch).
 * After each step it calls progress(step/N) and saves the step number (decimal
 * text) as the checkpoint. If the environment variable CCGSC_STOP_AT=K is set
 * and the task started from scratch, it exits with code 3 right after saving
 * step K's checkpoint, which simulates a crash mid-task.
 * Errors: malformed input or checkpoint -> message on stderr, exit 2.
 */
#include "../ccgsc.h"

static volatile uint64_t sink;

/* About a millisecond of work that the compiler cannot fold away. */
static void work(uint64_t step) {
    uint64_t x = step;
    for (int i = 0; i < 500000; i++) {
        x ^= x >> 29;
        x = x * 0xBF58476D1CE4E5B9ULL + (uint64_t)i;
    }
    sink = x;
}

int main(void) {
    size_t len;
    unsigned char *input = ccgsc_read_all(stdin, &len);
    uint64_t n, resumed_from = 0, stop_at = 0;
    if (input == NULL || strlen((char *)input) != len ||
        ccgsc_parse_u64s((char *)input, &n, 1) != 0 || n == 0 || n > 1000000) {
        fputs("resumable: input must be \"N\", 1 <= N <= 1000000\n", stderr);
        return 2;
    }
    free(input);

    unsigned char *ckpt = ccgsc_read_file(CCGSC_CHECKPOINT_PATH, &len);
    int resumed = ckpt != NULL;
    if (ckpt == NULL && errno != ENOENT) {
        fprintf(stderr, "resumable: cannot read the checkpoint (errno %d)\n", errno);
        return 1;
    }
    if (resumed) {
        if (strlen((char *)ckpt) != len || ccgsc_parse_u64s((char *)ckpt, &resumed_from, 1) != 0 ||
            resumed_from > n) {
            fputs("resumable: checkpoint is not a step number <= N\n", stderr);
            return 2;
        }
        free(ckpt);
    }
    const char *stop = getenv("CCGSC_STOP_AT");
    if (stop != NULL && !resumed && ccgsc_parse_u64s(stop, &stop_at, 1) != 0) {
        fputs("resumable: CCGSC_STOP_AT must be a step number\n", stderr);
        return 2;
    }

    for (uint64_t step = resumed_from + 1; step <= n; step++) {
        char text[24];
        work(step);
        ccgsc_progress((double)step / (double)n);
        int tlen = snprintf(text, sizeof text, "%llu", (unsigned long long)step);
        if (ccgsc_checkpoint(text, tlen) != 0) fputs("resumable: checkpoint refused\n", stderr);
        if (step == stop_at) {
            fprintf(stderr, "resumable: stopping after step %llu (CCGSC_STOP_AT)\n",
                    (unsigned long long)step);
            return 3;
        }
    }
    printf("resumed_from=%llu steps=%llu\n", (unsigned long long)resumed_from,
           (unsigned long long)n);
    return fflush(stdout) == 0 ? 0 : 1;
}
