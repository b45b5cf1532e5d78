/*
 * montecarlo: estimate pi by sampling the unit square.
 *
 * Input:  "SEED ITERATIONS" (decimal u64).
 * Output: "INSIDE ITERATIONS\n", INSIDE = points with x*x + y*y < 1.
 * Errors: malformed input -> message on stderr, exit 2.
 *
 * RNG (bit-identical everywhere): the xoshiro256** state is the first four
 * outputs of splitmix64 seeded with SEED; each point draws x then y from
 * xoshiro256**, each as (next() >> 11) * 2^-53, a double in [0, 1). The test
 * is the IEEE-754 double expression x*x + y*y < 1.0 (wasm has no fused
 * multiply-add, so no host can round it differently).
 */
#include "../ccgsc.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t s[4];

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t xoshiro256ss(void) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

int main(void) {
    size_t len;
    unsigned char *input = ccgsc_read_all(stdin, &len);
    uint64_t v[2];
    if (input == NULL || strlen((char *)input) != len ||
        ccgsc_parse_u64s((char *)input, v, 2) != 0) {
        fputs("montecarlo: input must be \"SEED ITERATIONS\" (decimal unsigned 64-bit)\n", stderr);
        return 2;
    }
    free(input);
    uint64_t seed = v[0], iterations = v[1], inside = 0, done = 0;
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);

    /* 16 slices, progress after each; the last slice takes the remainder. */
    for (int slice = 1; slice <= 16; slice++) {
        uint64_t until = slice == 16 ? iterations : iterations / 16 * (uint64_t)slice;
        for (; done < until; done++) {
            double x = (double)(xoshiro256ss() >> 11) * 0x1.0p-53;
            double y = (double)(xoshiro256ss() >> 11) * 0x1.0p-53;
            inside += x * x + y * y < 1.0;
        }
        ccgsc_progress((double)slice / 16.0);
    }
    printf("%llu %llu\n", (unsigned long long)inside, (unsigned long long)iterations);
    return fflush(stdout) == 0 ? 0 : 1;
}
