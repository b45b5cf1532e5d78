/* A CCGSC kernel: the task's input arrives on stdin, its result goes to stdout, exit code 0
 * means success (docs/kernels.md). This one counts the primes below N, N being the first
 * argument or else the input text.
 *
 *   ccgsc kernel build kernel.c             # -> kernel.wasm
 *   echo 1000 | ccgsc kernel run kernel.wasm
 *   printf '1000\n2000\n' > tasks.txt && ccgsc run kernel.c --tasks tasks.txt
 */
#include "ccgsc.h"

int main(int argc, char **argv) {
    size_t len;
    char *input = (char *)ccgsc_read_all(stdin, &len);
    if (input == NULL) {
        perror("reading the input");
        return 1;
    }
    const char *text = argc > 1 ? argv[1] : input;
    uint64_t n;
    if (ccgsc_parse_u64s(text, &n, 1) != 0) {
        fprintf(stderr, "expected one number, got \"%s\"\n", text);
        return 2;
    }
    uint64_t count = 0;
    for (uint64_t i = 2; i < n; i++) {
        int prime = 1;
        for (uint64_t d = 2; d * d <= i; d++) {
            if (i % d == 0) {
                prime = 0;
                break;
            }
        }
        count += (uint64_t)prime;
        if (i % 65536 == 0) ccgsc_progress((double)i / (double)n); /* optional */
    }
    printf("%llu\n", (unsigned long long)count);
    free(input);
    return 0;
}
