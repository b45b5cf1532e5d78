"""Bulk data paths against PostgreSQL COPY.

    DATABASE_URL=postgres://... python -m bench.data_paths [N] [--rounds K] [--before REV]


1. Task upload: N JSON Lines tasks POSTed to /api/v1/campaigns/{id}/tasks (parsed as a stream,
   inserted in batches by COPY, plus one replica row each), against a bare COPY of the same
   task rows (no parsing, no replicas).
2. Export: the N results streamed as JSON Lines by the export endpoint's generator, against
   `COPY (SELECT the same columns) TO STDOUT`, K rounds (default 3) taken in turn, so that both
   see the same moments of a shared machine; each round's ratio and the median are printed.
   With `--before REV`, campaigns/api/export.py as it was at git revision REV is timed in the
   same rounds too.

Runs in-process (Django test client, no network), on the database DATABASE_URL names (it is
migrated first; the rows it creates are deleted at the end). Prints rates and ratios; the
figures in docs/benchmarks.md come from here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccgsc.settings")


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts import services as account_services
    from accounts.models import Organization
    from campaigns import services
    from campaigns.api.export import export_chunks
    from campaigns.models import Campaign, Result, Task
    from tests.conftest import kernel_bytes

    parser = argparse.ArgumentParser(prog="python -m bench.data_paths")
    parser.add_argument("n", nargs="?", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also time the export at this revision")
    options = parser.parse_args()
    n = options.n
    before_chunks = _export_at(options.before) if options.before else None
    call_command("migrate", verbosity=0)
    org, _ = Organization.objects.get_or_create(slug="bench-data", defaults={"name": "Bench"})
    kernel = services.kernel_upload(organization=org, name="echo", data=kernel_bytes("echo"))
    token = account_services.token_issue(organization=org, name="bench", created_by=None)[1]
    api = services.campaign_create(organization=org, name="api", kernel=kernel)
    bare = services.campaign_create(organization=org, name="copy", kernel=kernel)
    lines = [json.dumps({"input": f"task input {i:08d}", "args": [str(i)]}) for i in range(n)]
    body = ("\n".join(lines) + "\n").encode()
    T, R = Task._meta.db_table, Result._meta.db_table
    print(f"{connection.vendor}, {n} tasks of ~20-byte inputs with one argument each")
    try:
        # One small upload first: the first request of a process imports every view (about
        # 3 s here), which is start-up, not the upload path being measured.
        warm = services.campaign_create(organization=org, name="warm-up", kernel=kernel)
        r = Client().post(
            f"/api/v1/campaigns/{warm.pk}/tasks",
            b'{"input": "x"}\n',
            content_type="application/x-ndjson",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert r.status_code == 201, r.content
        start = time.perf_counter()
        r = Client().post(
            f"/api/v1/campaigns/{api.pk}/tasks",
            body,
            content_type="application/x-ndjson",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        upload = time.perf_counter() - start
        assert r.status_code == 201, r.content

        copy_in = float("nan")
        if connection.vendor == "postgresql":
            cols = "campaign_id, seq, input, args, env, state, error_count, failure, created_at"
            rows = [
                (bare.pk, i, f"task input {i:08d}".encode(), json.dumps([str(i)]), None, 0, 0, "")
                for i in range(n)
            ]
            start = time.perf_counter()
            with (
                connection.cursor() as cursor,
                cursor.cursor.copy(f"COPY {T} ({cols}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row((*row, "2026-01-01T00:00:00Z"))
            copy_in = time.perf_counter() - start

        # Every task done, its replica the canonical result with a small text output.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {R} SET state = 2, outcome = 1, validation = 1, exit_code = 0,"
                f" runtime_ms = 5, output = %s, output_sha256 = 'x' WHERE campaign_id = %s",
                [b"output of the task\n", api.pk],
            )
            cursor.execute(
                f"UPDATE {T} t SET state = 1, canonical_result_id = r.id FROM {R} r"
                f" WHERE r.task_id = t.id AND t.campaign_id = %s"
                if connection.vendor == "postgresql"
                else f"UPDATE {T} SET state = 1, canonical_result_id = (SELECT id FROM {R}"
                f" WHERE task_id = {T}.id) WHERE campaign_id = %s",
                [api.pk],
            )
        campaign = Campaign.objects.get(pk=api.pk)

        def export_now() -> int:
            return sum(len(c) for c in export_chunks(campaign, "jsonl"))

        def export_before() -> int:
            assert before_chunks is not None
            return sum(len(c) for c in before_chunks(campaign, "jsonl"))

        def copy_to() -> int:
            query = (
                f"COPY (SELECT t.seq, t.state, t.args, t.input, r.exit_code, r.runtime_ms,"
                f" r.output_sha256, r.output, t.failure FROM {T} t JOIN {R} r"
                f" ON r.id = t.canonical_result_id WHERE t.campaign_id = {api.pk}"
                f" ORDER BY t.seq) TO STDOUT"
            )
            with connection.cursor() as cursor, cursor.cursor.copy(query) as copy:
                return sum(len(block) for block in copy)

        paths = {"export": export_now}
        if before_chunks is not None:
            paths["before"] = export_before
        if connection.vendor == "postgresql":
            paths["copy"] = copy_to
        times: dict[str, list[float]] = {name: [] for name in paths}
        sizes: dict[str, int] = {}
        for _ in range(options.rounds):
            for name, path in paths.items():
                start = time.perf_counter()
                sizes[name] = path()
                times[name].append(time.perf_counter() - start)
    finally:
        Campaign.objects.filter(organization=org).delete()

    print(f"  upload via the API  {n / upload:10,.0f} tasks/s ({upload:.2f} s)")
    print(f"  COPY FROM (tasks)   {n / copy_in:10,.0f} tasks/s")
    print(f"  -> the API uploads at {copy_in / upload:.2f}x COPY")

    def rates(name: str) -> str:
        return ", ".join(f"{n / t:,.0f}" for t in times[name])

    megabytes = sizes["export"] / 1e6
    print(f"  export JSON Lines   rows/s by round: {rates('export')}  ({megabytes:.1f} MB)")
    if "before" in times:
        print(f"  export at {options.before:<9} rows/s by round: {rates('before')}")
    if "copy" in times:
        print(f"  COPY TO (same cols) rows/s by round: {rates('copy')}")
        for name in ("export", "before"):
            if name in times:
                ratios = [c / t for c, t in zip(times["copy"], times[name], strict=True)]
                print(
                    f"  -> {'the export' if name == 'export' else options.before} runs at "
                    + ", ".join(f"{r:.2f}x" for r in ratios)
                    + f" COPY by round (median {statistics.median(ratios):.2f}x)"
                )


def _export_at(rev: str) -> Any:
    """export_chunks of campaigns/api/export.py as it was at git revision `rev`."""
    root = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    if git is None:
        raise SystemExit("--before needs git")
    source = subprocess.run(
        [git, "show", f"{rev}:campaigns/api/export.py"],
        cwd=root,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader(f"export_at_{rev}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:campaigns/api/export.py", "exec"), module.__dict__)  # noqa: S102
    return module.export_chunks


if __name__ == "__main__":
    main()
