"""`python manage.py worker [ccgsc-worker options]`: the native worker, started through Django.

Only a convenience for people who already run manage.py: it hands its arguments unchanged to
`workers.native.__main__.main` (the same code as the `ccgsc-worker` console script), which
does not use Django at all. Django's own option parsing is bypassed on purpose: the worker's
flags (-v, --server, ...) would clash with manage.py's (-v is --verbosity there).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from workers.native.__main__ import main


class Command(BaseCommand):
    help = "Run a native worker (same options as ccgsc-worker; see --help)."

    def run_from_argv(self, argv: list[str]) -> None:
        # argv is [manage.py, "worker", *worker options].
        raise SystemExit(main(argv[2:]))

    def add_arguments(self, parser: Any) -> None:
        # For call_command("worker", "--server", URL, ...): positional passthrough.
        parser.add_argument("worker_args", nargs="*")

    def handle(self, *args: Any, **options: Any) -> None:
        code = main([*args, *options.get("worker_args", [])])
        if code:
            raise CommandError(f"the worker exited with status {code}", returncode=code)
