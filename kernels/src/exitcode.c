/* exitcode (test kernel): exits with the decimal code read from stdin, e.g.
 * "7" -> exit 7. Codes >= 126 ("200") test the host's out-of-range handling.
 * Malformed input -> message on stderr, exit 2. */
#include "../ccgsc.h"

int main(void) {
    size_t len;
    unsigned char *input = ccgsc_read_all(stdin, &len);
    uint64_t code;
    if (input == NULL || strlen((char *)input) != len ||
        ccgsc_parse_u64s((char *)input, &code, 1) != 0 || code > 0xFFFFFFFFu) {
        fputs("exitcode: input must be a decimal exit code\n", stderr);
        return 2;
    }
    exit((int)(uint32_t)code);
}
