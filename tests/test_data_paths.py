"""The bulk data paths: the export gives the same rows from both of its readers (PostgreSQL's
binary stream, the ORM) in every format, whatever the bytes, and the rows its documentation
describes; the pages of a campaign cost the same queries at any size."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json

import msgpack
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
    (b"back\\slash", ["\\", 'q"uote', "tab\t"]),
    (b"x" * (export.INPUT_INLINE_MAX + 1), None),
    (b"\x01\x02\x1f\x7f controls", None),
    (b"", ["only args"]),
    ("ünï \x00 nul".encode(), None),
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
    "ü\x00".encode(),
]
FAILURE = "5 failed attempt(s); last: exit — ✗"


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
            task.state, task.failure = Task.State.FAILED, FAILURE
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


def _written(data: bytes, binary: str, *, csv_text: bool = False) -> tuple[object, str]:
    """What the documentation says a value is written as (an oracle apart from the code)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not (csv_text and "\0" in text):
        return text, "utf-8"
    if binary == "binary":
        return data, "binary"
    return base64.b64encode(data).decode(), "base64"


def expected(state: str, binary: str = "base64", *, csv_text: bool = False) -> list[dict]:
    rows = []
    for seq, ((data, args), output) in enumerate(zip(INPUTS, OUTPUTS, strict=True)):
        done = output is not None
        if state != "all" and done != (state == "done"):
            continue
        value: object
        if len(data) > export.INPUT_INLINE_MAX:
            value, encoding = hashlib.sha256(data).hexdigest(), "sha256"
        else:
            value, encoding = _written(data, binary, csv_text=csv_text)
        out: object = None
        out_encoding: str | None = None
        if output is not None:
            out, out_encoding = _written(output, binary, csv_text=csv_text)
        rows.append(
            {
                "seq": seq,
                "state": "done" if done else "failed",
                "args": args,
                "input": value,
                "input_encoding": encoding,
                "input_size": len(data),
                "exit_code": 0 if done else None,
                "runtime_ms": seq if done else None,
                "output": out,
                "output_encoding": out_encoding,
                "output_size": None if output is None else len(output),
                "output_sha256": f"sha-{seq}" if done else None,
                "failure": "" if done else FAILURE,
            }
        )
    return rows


def readers() -> list:
    """Both of the export's readers where this database has both (the ORM's everywhere)."""
    if connection.vendor == "postgresql":
        return [export.orm_rows, export.postgres_rows]
    return [export.orm_rows]


def _csv_rows(body: bytes) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    for row in rows:  # back to the JSON Lines' values, to compare with the same oracle
        for name in ("seq", "input_size", "exit_code", "runtime_ms", "output_size"):
            row[name] = int(row[name]) if row[name] else None
        row["args"] = json.loads(row["args"]) if row["args"] else None
        if not row["output_encoding"]:  # no result: no output (an empty output has "utf-8")
            row["output"] = row["output_encoding"] = None
        row["output_sha256"] = row["output_sha256"] or None
    return rows


@pytest.mark.parametrize("state", ["done", "failed", "all"])
def test_every_reader_gives_the_documented_rows_in_every_format(decided, state):
    states = export.STATES[state]
    bodies: dict[str, bytes] = {}
    for read in readers():
        for fmt, encode in export.ENCODERS.items():
            body = b"".join(encode(read(decided, states)))
            # The readers give the same tuples, so the same bytes.
            assert bodies.setdefault(fmt, body) == body, (read.__name__, fmt)
    lines = bodies["jsonl"].splitlines()
    assert bodies["jsonl"].endswith(b"\n") and len(lines) == len(expected(state))
    assert [json.loads(line) for line in lines] == expected(state)
    unpacked = list(msgpack.Unpacker(io.BytesIO(bodies["msgpack"]), raw=False))
    assert unpacked == expected(state, "binary")
    assert _csv_rows(bodies["csv"]) == expected(state, csv_text=True)


@pytest.mark.django_db(transaction=True)  # the second connection sees committed rows only
def test_large_outputs_are_read_alone_with_the_same_rows(decided, monkeypatch):
    monkeypatch.setattr(export, "OUTPUT_CHUNKED_MAX", 5000)  # the 10,000-byte output
    opened = []
    new_connection = connection.get_new_connection

    def spy(params):
        opened.append(params)
        return new_connection(params)

    monkeypatch.setattr(connection, "get_new_connection", spy)
    for fmt, encode in export.ENCODERS.items():
        bodies = {b"".join(encode(read(decided, export.STATES["all"]))) for read in readers()}
        assert len(bodies) == 1, fmt
    rows = [json.loads(line) for line in b"".join(export.export_chunks(decided, "jsonl", "all"))
            .splitlines()]  # fmt: skip
    assert rows == expected("all") and rows[6]["output"] == "x" * 10_000
    # On PostgreSQL that output was read alone, once for each reading.
    assert len(opened) == (4 if connection.vendor == "postgresql" else 0)


def test_csv_never_carries_a_raw_nul(decided):
    body = b"".join(export.export_chunks(decided, "csv", "all"))
    assert b"\0" not in body
    rows = {int(r["seq"]): r for r in csv.DictReader(io.StringIO(body.decode()))}
    # UTF-8 with NUL goes as base64 in CSV (and as text in JSON Lines and msgpack).
    assert (rows[4]["input_encoding"], base64.b64decode(rows[4]["input"])) == (
        "base64",
        b"nul \x00 inside",
    )
    assert (rows[3]["output_encoding"], base64.b64decode(rows[3]["output"])) == (
        "base64",
        b"\x00\x01\x02",
    )
    assert rows[0]["output_encoding"] == "utf-8" and rows[2]["input"] == "héllo wörld ✓"
    jsonl = [json.loads(line) for line in b"".join(export.export_chunks(decided, "jsonl", "all"))
             .splitlines()]  # fmt: skip
    assert (jsonl[4]["input"], jsonl[4]["input_encoding"]) == ("nul \x00 inside", "utf-8")


def test_export_chunks_are_whole_rows_of_about_chunk_bytes(decided, monkeypatch):
    monkeypatch.setattr(export, "CHUNK_BYTES", 500)
    for fmt in export.FORMATS:
        chunks = list(export.export_chunks(decided, fmt, "all"))
        assert len(chunks) >= 3, fmt
        assert max(len(c) for c in chunks) < 500 + 20_000  # one row may pass the mark
        if fmt == "jsonl":
            assert all(c.endswith(b"\n") for c in chunks)
            assert [json.loads(line) for c in chunks for line in c.splitlines()] == expected("all")


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
