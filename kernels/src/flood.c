/* flood (test kernel): writes 64 KiB blocks to stdout forever, ignoring
 * errors; the host must cap its output and stop it. */
#include <string.h>
#include <unistd.h>

int main(void) {
    static char block[65536];
    memset(block, 'x', sizeof block);
    for (;;) (void)!write(1, block, sizeof block);
}
