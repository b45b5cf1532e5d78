"""`ccgsc`: the campaign owners' command line. It talks only to the REST API (and runs kernels
locally in kernelhost for `kernel run`); it imports no Django, so it works from a plain
`pip install ccgsc` on any machine.

Exit codes (also in docs/api.md):

    0  success
    1  other errors (server unreachable, server error)
    2  usage (bad arguments)
    3  authentication (no, invalid or revoked token; not allowed)
    4  not found (or belongs to another organization)
    5  invalid input (refused by the server, or a local file that cannot be read)
    6  `campaign watch`, `run`: the campaign failed or was cancelled
    7  `kernel build`, `run`: the kernel could not be built (compiler error, missing toolchain)
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_INVALID = 5
EXIT_CAMPAIGN_FAILED = 6
EXIT_BUILD = 7
