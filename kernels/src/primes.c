/*
 * primes: list the primes in [LO, HI).
 *
 * Input:  "LO HI" (decimal u64, HI exclusive, LO <= HI, HI - LO <= 10000000).
 * Output: each prime in decimal followed by "\n", ascending.
 * Errors: malformed input -> message on stderr, exit 2.
 *
 * Segmented sieve: the range [LO, HI) is one segment (at most 10 MB of
 * flags); the base primes up to sqrt(HI - 1) are themselves produced block by
 * block by an odd-only sieve seeded with the primes below 65536, so memory
 * stays small even when HI is close to 2^64 (where the base-prime sieve, not
 * the range, dominates the running time).
 */
#include "../ccgsc.h"

#define MAX_SPAN 10000000ULL
#define BLOCK 262144 /* odd numbers per base-prime block */

static uint32_t small_primes[6542]; /* all primes below 65536 */
static int n_small;

static void sieve_small(void) {
    static unsigned char composite[65536];
    for (uint32_t i = 2; i < 65536; i++) {
        if (composite[i]) continue;
        small_primes[n_small++] = i;
        for (uint32_t j = i * i; j < 65536; j += i) composite[j] = 1;
    }
}

static uint64_t isqrt_u64(uint64_t n) {
    uint64_t r = 0;
    for (int shift = 32; shift >= 0; shift--) {
        uint64_t c = r | (1ULL << shift);
        if (c <= 0xFFFFFFFFULL && c * c <= n) r = c;
    }
    return r;
}

static unsigned char *range_composite; /* flag per value in [lo, hi) */
static uint64_t lo, hi;

/* Cross off the multiples of base prime p (p >= 2, p*p <= hi - 1). */
static void cross_off(uint64_t p) {
    uint64_t start = p * p;
    if (start < lo) {
        uint64_t rem = lo % p;
        start = lo + (rem ? p - rem : 0);
        if (start < lo) return; /* wrapped past 2^64: no multiple in range */
    }
    /* m < span <= 10^7 and p < 2^32, so m + p cannot overflow. */
    for (uint64_t m = start - lo, end = hi - lo; m < end; m += p) range_composite[m] = 1;
}

static double last_reported = 0.0;

static void report(double fraction) {
    /* A handful of calls per task: only when an eighth has passed. */
    if (fraction >= 1.0 || fraction - last_reported >= 0.125) {
        ccgsc_progress(fraction);
        last_reported = fraction;
    }
}

static char outbuf[65536];
static size_t outlen;

static void out_flush(void) {
    if (outlen && fwrite(outbuf, 1, outlen, stdout) != outlen) {
        fputs("primes: write to stdout failed\n", stderr);
        exit(1);
    }
    outlen = 0;
}

static void out_u64(uint64_t v) {
    char tmp[21];
    int n = 0;
    if (outlen + sizeof tmp > sizeof outbuf) out_flush();
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) outbuf[outlen++] = tmp[--n];
    outbuf[outlen++] = '\n';
}

int main(void) {
    size_t len;
    unsigned char *input = ccgsc_read_all(stdin, &len);
    uint64_t v[2];
    if (input == NULL) {
        fputs("primes: cannot read stdin\n", stderr);
        return 2;
    }
    if (strlen((char *)input) != len || ccgsc_parse_u64s((char *)input, v, 2) != 0) {
        fputs("primes: input must be \"LO HI\" (two decimal unsigned 64-bit numbers)\n", stderr);
        return 2;
    }
    lo = v[0];
    hi = v[1];
    if (lo > hi) {
        fputs("primes: LO must not exceed HI\n", stderr);
        return 2;
    }
    if (hi - lo > MAX_SPAN) {
        fputs("primes: HI - LO must not exceed 10000000\n", stderr);
        return 2;
    }
    free(input);
    if (hi <= 2 || lo == hi) {
        ccgsc_progress(1.0);
        return 0;
    }

    uint64_t span = hi - lo;
    range_composite = calloc(span, 1);
    if (range_composite == NULL) {
        fputs("primes: out of memory\n", stderr);
        return 1;
    }
    for (uint64_t x = lo; x < 2 && x < hi; x++) range_composite[x - lo] = 1;

    sieve_small();
    uint64_t limit = isqrt_u64(hi - 1); /* largest base prime needed */

    /* Base primes up to 65535 are known already. */
    for (int i = 0; i < n_small && small_primes[i] <= limit; i++) cross_off(small_primes[i]);

    /* Base primes in (65535, limit]: sieve odd numbers block by block. */
    if (limit >= 65536) {
        static unsigned char block[BLOCK];
        uint64_t first = 65537; /* odd; block[k] stands for first + 2k */
        while (first <= limit) {
            uint64_t count = (limit - first) / 2 + 1;
            if (count > BLOCK) count = BLOCK;
            uint64_t last = first + 2 * (count - 1);
            memset(block, 0, count);
            for (int i = 1; i < n_small; i++) { /* odd small primes */
                uint64_t p = small_primes[i];
                if (p * p > last) break;
                uint64_t m = (first + p - 1) / p * p; /* > p since first > p */
                if ((m & 1) == 0) m += p;
                for (; m <= last; m += 2 * p) block[(m - first) / 2] = 1;
            }
            for (uint64_t k = 0; k < count; k++)
                if (!block[k]) cross_off(first + 2 * k);
            report(0.5 * (double)(last - 65536) / (double)(limit - 65536 + 1));
            first = last + 2;
        }
    }
    report(0.5);

    for (uint64_t m = 0; m < span; m++) {
        if (!range_composite[m]) out_u64(lo + m);
        if ((m & 0xFFFFF) == 0xFFFFF) report(0.5 + 0.5 * (double)m / (double)span);
    }
    out_flush();
    report(1.0);
    return 0;
}
