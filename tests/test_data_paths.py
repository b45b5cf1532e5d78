"""The bulk data paths: the JSON Lines export written by PostgreSQL gives the same rows as the
Python encoder, whatever the bytes; the pages of a campaign cost the same queries at any size."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns import services
from campaigns.api import export
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Result, Task

# Every kind of row: plain ASCII, JSON's special characters, non-ASCII text, binary, NUL,
# backslashes, an input above the inline limit, args absent and present, control characters.
INPUTS = [
    (b"plain input", None),
    (b'quote " and tab \t and newline \n', ["a", "b c"]),
    ("héllo wörld ✓".encode(), ["ünï"]),
    (b"\xff\xfe binary", []),
    (b"nul \x00 inside", None),
    (b"back\\slash", ["\\"]),
    (b"x" * (export.INPUT_INLINE_MAX + 1), None),
    (b"\x01\x02\x1f\x7f controls", None),
    (b"", ["only args"]),
]
OUTPUTS = [
    b"out\n",
    b'{"json": "output"}\r\n',
    "ünïcode ✓\n".encode(),
    b"\x00\x01\x02",
    b"",
    b"\\n is not a newline",
    b"x" * 10_000,
    b"\x7f\x1b[0m",
    None,  # this task failed
]


@pytest.fixture
def decided(people, make_campaign) -> Campaign:
    campaign = make_campaign([], start=False)
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i, args=a) for i, a in INPUTS])
    for task, output in zip(
        Task.objects.filter(campaign=campaign).order_by("seq"), OUTPUTS, strict=True
    ):
        result = Result.objects.filter(task=task).first()
        assert result is not None
        if output is None:
            task.state, task.failure = Task.State.FAILED, "5 failed attempt(s); last: exit — ✗"
        else:
            Result.objects.filter(pk=result.pk).update(
                state=Result.State.RETURNED,
                outcome=Result.Outcome.SUCCESS,
                output=output,
                output_sha256=f"sha-{task.seq}",
                exit_code=0,
                runtime_ms=task.seq,
            )
            task.state, task.canonical_result = Task.State.DONE, result
        task.save()
    return campaign


def python_rows(campaign: Campaign, state: str) -> list[dict]:
    lines = b"".join(export.encode_jsonl(export.result_rows(campaign, export.STATES[state])))
    return [json.loads(line) for line in lines.splitlines()]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the SQL path is PostgreSQL's")
@pytest.mark.parametrize("state", ["done", "failed", "all"])
def test_the_postgresql_export_gives_the_python_encoders_rows(decided, state):
    body = b"".join(export.jsonl_postgres(decided, export.STATES[state]))
    assert body.endswith(b"\n")
    rows = [json.loads(line) for line in body.splitlines()]
    expected = python_rows(decided, state)
    assert rows == expected and len(rows) == {"done": 8, "failed": 1, "all": 9}[state]
    # Both kinds of line were exercised: written in SQL (PostgreSQL's JSON text of args has a
    # space after the comma) and re-encoded in Python (no spaces).
    by_seq = {r["seq"]: r for r in rows}
    if state == "all":
        assert b'"args":["a", "b c"]' in body and rb'"args":["\u00fcn\u00ef"]' in body
        assert by_seq[0]["output"] == "out\n" and by_seq[2]["input"] == "héllo wörld ✓"
        assert by_seq[3]["input_encoding"] == "base64" and by_seq[6]["input_encoding"] == "sha256"
        assert by_seq[8]["output"] is None and by_seq[8]["state"] == "failed"


def test_export_chunks_use_the_same_rows_on_every_database(decided):
    body = b"".join(export.export_chunks(decided, "jsonl", "all"))
    assert [json.loads(line) for line in body.splitlines()] == python_rows(decided, "all")


# --- pages independent of the campaign's size ----------------------------------------------------


def _finished(make_campaign, n: int) -> Campaign:
    """A running campaign of n tasks, every one done with a returned result (set-based)."""
    campaign = make_campaign([f"t{i}" for i in range(n)])
    Result.objects.filter(campaign=campaign).update(
        state=Result.State.RETURNED,
        outcome=Result.Outcome.SUCCESS,
        validation=Result.Validation.VALID,
        output=b"out",
        exit_code=0,
        runtime_ms=1,
    )
    Task.objects.filter(campaign=campaign).update(state=Task.State.DONE)
    Campaign.objects.filter(pk=campaign.pk).update(tasks_done=n)
    return campaign


def _page_queries(client: Client, url: str, **params: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    assert response.status_code == 200
    return [q["sql"] for q in queries.captured_queries]


def test_campaign_and_results_pages_cost_the_same_at_any_size(people, make_campaign):
    client = Client()
    client.force_login(people.owner)
    costs = {}
    for n in (60, 600):
        campaign = _finished(make_campaign, n)
        detail = reverse("campaigns:campaign_detail", args=["alpha", campaign.pk])
        results = reverse("campaigns:campaign_results", args=["alpha", campaign.pk])
        first = _page_queries(client, results)
        oldest = Result.objects.filter(campaign=campaign).order_by("id").values_list("pk")[10][0]
        deep = _page_queries(client, results, before=str(oldest))
        costs[n] = (len(_page_queries(client, detail)), len(first), len(deep))
        # Keyset pages: no count of the results, no OFFSET skipping over them.
        for sql in first + deep:
            assert "OFFSET" not in sql.upper() and "COUNT(" not in sql.upper(), sql
        # The campaign page reads the counters, not the tasks.
        for sql in _page_queries(client, detail):
            assert not ("COUNT(" in sql.upper() and Task._meta.db_table in sql), sql
    assert costs[60] == costs[600], costs
