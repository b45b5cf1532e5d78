"""Container health check for the web role: GET /api/v1/status on the local daphne.

Exit 0 when it answers 200, 1 otherwise. Standard library only (the slim image has no curl).
Django refuses a Host it does not allow (400), so the request names the first entry of
ALLOWED_HOSTS rather than 127.0.0.1; X-Forwarded-Proto: https keeps any HTTPS redirect from
turning the probe into a failure.
"""

from __future__ import annotations

import os
import sys
import urllib.request

PORT = os.environ.get("HEALTHCHECK_PORT", "8000")
URL = f"http://127.0.0.1:{PORT}/api/v1/status"


def probe_host() -> str:
    for entry in os.environ.get("ALLOWED_HOSTS", "").split(","):
        entry = entry.strip()
        if not entry or entry == "*":
            continue
        # ".example.org" allows example.org and its subdomains.
        return entry.lstrip(".")
    return "localhost"


def main() -> int:
    headers = {"Host": probe_host(), "X-Forwarded-Proto": "https"}
    request = urllib.request.Request(URL, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  (fixed loopback URL)
            if response.status == 200:
                return 0
            print(f"{URL}: HTTP {response.status}")
    except Exception as exc:  # any failure (refused, timeout, 4xx/5xx) means unhealthy
        print(f"{URL}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
