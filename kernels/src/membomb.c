/* membomb (test kernel): allocates and touches 1 MiB chunks until malloc
 * returns NULL (the module's memory maximum is reached), then aborts, which
 * traps. Prints how many MiB it got on stderr first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chunks are chained through this volatile head so the compiler cannot prove
 * them unused and delete the allocations (which would make the loop endless). */
static void *volatile head;

int main(void) {
    unsigned long mib = 0;
    for (;;) {
        void **chunk = malloc(1 << 20);
        if (chunk == NULL) break;
        memset(chunk, 0xA5, 1 << 20);
        chunk[0] = head;
        head = chunk;
        mib++;
    }
    fprintf(stderr, "membomb: malloc failed after %lu MiB\n", mib);
    abort();
}
