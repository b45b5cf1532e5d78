/*
 * ccgsc.h: the CCGSC kernel contract for C and C++ kernels (header-only).
 *
 * A kernel is a WASI preview 1 command: input on stdin, result on stdout,
 * exit code 0 for success. This header adds the two optional host imports
 * (module "ccgsc") and a few helpers. See docs/kernels.md for the contract.
 *
 * An import is only linked into the module if the kernel calls it, so a
 * kernel that never calls ccgsc_progress()/ccgsc_checkpoint() stays a plain
 * WASI program that runs under any WASI host.
 */
#ifndef CCGSC_H
#define CCGSC_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Report progress, fraction in [0, 1]. Cheap: the host rate-limits it.
 * wasm import "ccgsc" "progress": (f64) -> (). */
__attribute__((import_module("ccgsc"), import_name("progress")))
void ccgsc_progress(double fraction);

/* Save a checkpoint, replacing the previous one. A later attempt of the same
 * task finds it at /ccgsc/checkpoint. Returns 0 when accepted, -1 when len is
 * larger than the host's checkpoint cap (4 MiB by default).
 * wasm import "ccgsc" "checkpoint": (i32 ptr, i32 len) -> i32. */
__attribute__((import_module("ccgsc"), import_name("checkpoint")))
int32_t ccgsc_checkpoint(const void *ptr, int32_t len);

/* Guest paths of the read-only files the host may provide. */
#define CCGSC_STATIC_PATH "/ccgsc/static"
#define CCGSC_CHECKPOINT_PATH "/ccgsc/checkpoint"

/* Read the whole stream into a malloc'ed buffer. The buffer has one extra
 * NUL byte after the data (not counted in *len), so text input can be parsed
 * with the string functions. Returns NULL with errno set (ENOMEM, or the
 * read error) on failure.
 * A regular file is read into one allocation of its size; a stream grows the
 * buffer geometrically with sizes just under powers of two, because the
 * wasm32-wasi malloc of zig's libc rounds every block (plus a 16-byte header)
 * up to a power of two and does not give freed memory back to other sizes. */
static inline unsigned char *ccgsc_read_all(FILE *f, size_t *len) {
    size_t cap = 65536 - 64, n = 0;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size < (uint64_t)(SIZE_MAX / 2))
        cap = (size_t)st.st_size + 1; /* the spare byte lets the next fread see EOF */
    unsigned char *buf = (unsigned char *)malloc(cap + 1);
    if (buf == NULL) { errno = ENOMEM; return NULL; }
    for (;;) {
        if (n == cap) {
            unsigned char *bigger;
            if (cap > SIZE_MAX / 4) { free(buf); errno = ENOMEM; return NULL; }
            cap = (cap + 64) * 2 - 64;
            bigger = (unsigned char *)realloc(buf, cap + 1);
            if (bigger == NULL) { free(buf); errno = ENOMEM; return NULL; }
            buf = bigger;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) { free(buf); return NULL; }
            break;
        }
    }
    buf[n] = 0;
    if (len != NULL) *len = n;
    return buf;
}

/* Read a whole file (e.g. CCGSC_STATIC_PATH) into a buffer like
 * ccgsc_read_all(). Returns NULL with errno == ENOENT when the file is
 * absent, other errno values (ENOMEM, ...) when it cannot be read. */
static inline unsigned char *ccgsc_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    unsigned char *buf = ccgsc_read_all(f, len);
    int saved = errno;
    fclose(f);
    errno = saved;
    return buf;
}

/* Parse exactly n decimal unsigned 64-bit numbers separated by whitespace
 * (leading and trailing whitespace allowed, nothing else). Returns 0, or -1
 * on any other character, a missing or extra number, or overflow. */
static inline int ccgsc_parse_u64s(const char *s, uint64_t *out, int n) {
    int i;
    for (i = 0; i < n; i++) {
        uint64_t v = 0;
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
        if (*s < '0' || *s > '9') return -1;
        while (*s >= '0' && *s <= '9') {
            uint64_t d = (uint64_t)(*s - '0');
            if (v > (UINT64_MAX - d) / 10) return -1;
            v = v * 10 + d;
            s++;
        }
        if (*s != 0 && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return -1;
        out[i] = v;
    }
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    return *s == 0 ? 0 : -1;
}

/* Generators only: write one task input to stdout as a frame
 * (4-byte little-endian length, then the bytes). Returns 0, or -1 when
 * stdout fails. */
static inline int ccgsc_emit_task(const void *data, uint32_t len) {
    unsigned char hdr[4] = {
        (unsigned char)(len & 0xff), (unsigned char)((len >> 8) & 0xff),
        (unsigned char)((len >> 16) & 0xff), (unsigned char)((len >> 24) & 0xff),
    };
    if (fwrite(hdr, 1, 4, stdout) != 4) return -1;
    if (len != 0 && fwrite(data, 1, len, stdout) != len) return -1;
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* CCGSC_H */
