/*
 * float_verify: a tolerance verifier for kernels whose output is a list of
 * floating-point numbers (rounding differences across hosts or libms make
 * byte equality too strict for them).
 *
 * Verifier contract (docs/kernels.md, "Verifiers"):
 *   stdin:  frames (4-byte little-endian length, then the bytes): the task's
 *           input, then N >= 1 candidate outputs.
 *   stdout: N lines, one decimal label per candidate, in order. 0 rejects the
 *           output on its own; outputs with the same positive label agree.
 *   exit:   0; 2 when stdin is not a sequence of frames.
 *
 * An output is accepted when it is at least one whitespace-separated number,
 * each a finite double as strtod reads it. Two outputs agree when they hold
 * the same count of numbers and every pair (a, b) satisfies
 *   |a - b| <= ATOL + RTOL * max(|a|, |b|).
 * RTOL and ATOL come from the environment variables VERIFY_RTOL and
 * VERIFY_ATOL (the campaign's environment), defaults 1e-9 and 1e-12.
 *
 * VERIFY_FORMAT=f32 compares binary outputs instead: little-endian IEEE 754
 * single-precision words, as gpu kernels with "float": true write them. An
 * output is accepted when it is at least one whole word; two agree when they
 * have the same length and every pair of words satisfies the rule above, or
 * is equal (infinities), or both are NaN. (GPU campaigns get this verifier by
 * default, with RTOL 1e-5 and ATOL 1e-6: docs/kernels.md, GPU kernels.)
 *
 * Within a tolerance, agreement is not transitive (a~b and b~c but not a~c),
 * so classes are formed greedily in order: a candidate joins the class of the
 * first earlier accepted candidate that leads a class and agrees with it, or
 * leads a new class labelled with its own position (1-based).
 */
#include "../ccgsc.h"

#include <ctype.h>
#include <math.h>

#define MAX_TOKEN 128

typedef struct {
    const unsigned char *data;
    size_t len;
} span;

/* Next number in s starting at *pos; 1 found, 0 end of span, -1 not a finite number. */
static int next_number(span s, size_t *pos, double *out) {
    size_t i = *pos;
    while (i < s.len && isspace(s.data[i])) i++;
    if (i == s.len) {
        *pos = i;
        return 0;
    }
    char token[MAX_TOKEN];
    size_t n = 0;
    while (i < s.len && !isspace(s.data[i])) {
        if (n + 1 >= MAX_TOKEN) return -1;
        token[n++] = (char)s.data[i++];
    }
    token[n] = '\0';
    *pos = i;
    char *end;
    errno = 0;
    double v = strtod(token, &end);
    if (end != token + n || n == 0 || !isfinite(v)) return -1;
    *out = v;
    return 1;
}

static int f32_mode = 0; /* VERIFY_FORMAT=f32 */

static uint32_t le32(const unsigned char *p);

static double f32_at(span s, size_t i) {
    uint32_t bits = le32(s.data + 4 * i);
    float f;
    memcpy(&f, &bits, sizeof f);
    return (double)f;
}

static int f32_agree(span a, span b, double rtol, double atol) {
    if (a.len != b.len) return 0;
    for (size_t i = 0; i < a.len / 4; i++) {
        double x = f32_at(a, i), y = f32_at(b, i);
        if (isnan(x) || isnan(y)) {
            if (isnan(x) && isnan(y)) continue;
            return 0;
        }
        if (x == y) continue;
        double scale = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
        if (!(fabs(x - y) <= atol + rtol * scale)) return 0;
    }
    return 1;
}

/* 1 when the output is one or more finite numbers (f32: one or more whole words). */
static int accepted(span s) {
    if (f32_mode) return s.len > 0 && s.len % 4 == 0;
    size_t pos = 0;
    double v;
    int count = 0, r;
    while ((r = next_number(s, &pos, &v)) == 1) count++;
    return r == 0 && count > 0;
}

static int agree(span a, span b, double rtol, double atol) {
    if (f32_mode) return f32_agree(a, b, rtol, atol);
    size_t pa = 0, pb = 0;
    for (;;) {
        double x = 0, y = 0;
        int ra = next_number(a, &pa, &x), rb = next_number(b, &pb, &y);
        if (ra != rb) return 0;
        if (ra == 0) return 1;
        if (ra < 0) return 0;
        double scale = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
        if (!(fabs(x - y) <= atol + rtol * scale)) return 0;
    }
}

static double env_double(const char *name, double fallback) {
    const char *text = getenv(name);
    if (text == NULL || *text == '\0') return fallback;
    char *end;
    double v = strtod(text, &end);
    return (*end == '\0' && isfinite(v) && v >= 0) ? v : fallback;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int main(void) {
    size_t len;
    unsigned char *in = ccgsc_read_all(stdin, &len);
    if (in == NULL) {
        fputs("float_verify: cannot read stdin\n", stderr);
        return 2;
    }
    /* Count the frames, then point a span at each. */
    size_t count = 0;
    for (size_t pos = 0; pos < len; count++) {
        if (len - pos < 4 || le32(in + pos) > len - pos - 4) {
            fputs("float_verify: stdin is not a sequence of frames\n", stderr);
            return 2;
        }
        pos += 4 + le32(in + pos);
    }
    if (count < 2) {
        fputs("float_verify: expected the task input and at least one output\n", stderr);
        return 2;
    }
    size_t n = count - 1;
    span *outputs = malloc(n * sizeof *outputs);
    size_t *labels = malloc(n * sizeof *labels);
    if (outputs == NULL || labels == NULL) return 1;
    size_t pos = 4 + le32(in); /* skip the task input */
    for (size_t i = 0; i < n; i++) {
        outputs[i].len = le32(in + pos);
        outputs[i].data = in + pos + 4;
        pos += 4 + outputs[i].len;
    }

    const char *format = getenv("VERIFY_FORMAT");
    f32_mode = format != NULL && strcmp(format, "f32") == 0;
    double rtol = env_double("VERIFY_RTOL", 1e-9);
    double atol = env_double("VERIFY_ATOL", 1e-12);
    for (size_t i = 0; i < n; i++) {
        labels[i] = 0;
        if (!accepted(outputs[i])) continue;
        for (size_t j = 0; j < i && labels[i] == 0; j++) {
            if (labels[j] == j + 1 && agree(outputs[i], outputs[j], rtol, atol)) labels[i] = j + 1;
        }
        if (labels[i] == 0) labels[i] = i + 1;
        ccgsc_progress((double)(i + 1) / (double)n);
    }
    for (size_t i = 0; i < n; i++) printf("%zu\n", labels[i]);
    return fflush(stdout) == 0 ? 0 : 1;
}
