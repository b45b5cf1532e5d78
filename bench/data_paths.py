"""Bulk data paths against PostgreSQL COPY.

    DATABASE_URL=postgres://... python -m bench.data_paths [N]


1. Task upload: N JSON Lines tasks POSTed to /api/v1/campaigns/{id}/tasks (parsed as a stream,
   inserted in batches by COPY, plus one replica row each), against a bare COPY of the same
   task rows (no parsing, no replicas).
2. Export: the N results streamed as JSON Lines by the export endpoint's generator, against
   `COPY (SELECT the same columns) TO STDOUT`. On PostgreSQL the export writes its JSON Lines in
   SQL and streams them through COPY TO STDOUT too (campaigns/api/export.py).

Runs in-process (Django test client, no network), on the database DATABASE_URL names (it is
migrated first; the rows it creates are deleted at the end). Prints rates and ratios; the
figures in docs/benchmarks.md come from here.
"""

from __future__ import annotations

import json
import os
import sys
import time

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

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
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
        start = time.perf_counter()
        size = sum(len(c) for c in export_chunks(Campaign.objects.get(pk=api.pk), "jsonl"))
        export = time.perf_counter() - start

        copy_out = float("nan")
        if connection.vendor == "postgresql":
            query = (
                f"COPY (SELECT t.seq, t.state, t.args, t.input, r.exit_code, r.runtime_ms,"
                f" r.output_sha256, r.output, t.failure FROM {T} t JOIN {R} r"
                f" ON r.id = t.canonical_result_id WHERE t.campaign_id = {api.pk}"
                f" ORDER BY t.seq) TO STDOUT"
            )
            start = time.perf_counter()
            with connection.cursor() as cursor, cursor.cursor.copy(query) as copy:
                copied = sum(len(block) for block in copy)
            copy_out = time.perf_counter() - start
            assert copied > 0
    finally:
        Campaign.objects.filter(organization=org).delete()

    print(f"  upload via the API  {n / upload:10,.0f} tasks/s ({upload:.2f} s)")
    print(f"  COPY FROM (tasks)   {n / copy_in:10,.0f} tasks/s")
    print(f"  -> the API uploads at {copy_in / upload:.2f}x COPY")
    print(f"  export JSON Lines   {n / export:10,.0f} rows/s  ({size / 1e6:.1f} MB)")
    print(f"  COPY TO (same cols) {n / copy_out:10,.0f} rows/s")
    print(f"  -> the export runs at {copy_out / export:.2f}x COPY")


if __name__ == "__main__":
    main()
