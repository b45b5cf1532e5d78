"""Results export: a campaign's canonical results, in task order, streamed as JSON Lines, CSV
or msgpack in constant memory however many there are.

Rows come from one query (tasks joined to their canonical result) read with
`.iterator(chunk_size=...)`: a server-side cursor on PostgreSQL, chunked fetchmany on SQLite.
They are encoded into chunks of about CHUNK_BYTES and handed to the response one chunk at a
time. Under ASGI (daphne) Django would drain a synchronous iterator into a list before sending
it, so there the same generator is driven one chunk per thread hop by an async iterator.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import msgpack
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from accounts.tenancy import get_for_actor
from campaigns.api.base import ApiView, Rejected
from campaigns.models import Campaign, Result, Task

CHUNK_BYTES = 64 * 1024
ROWS_PER_QUERY_CHUNK = 500

FORMATS = {
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "msgpack": ("application/msgpack", "msgpack"),
}
STATES = {
    "done": (Task.State.DONE,),
    "failed": (Task.State.FAILED,),
    "all": (Task.State.DONE, Task.State.FAILED),
}
# Inputs up to this size are exported themselves; a larger input is exported as its sha256
# (the owner has it already, and a million 1 MiB inputs would dwarf the results).
INPUT_INLINE_MAX = 4096
# How `input` and `output` are written (the `*_encoding` fields): text when the bytes are UTF-8;
# otherwise base64 in JSON Lines and CSV, raw bytes in msgpack; sha256 for a large input.
UTF8, BASE64, BINARY, SHA256 = "utf-8", "base64", "binary", "sha256"
CSV_COLUMNS = [
    "seq",
    "state",
    "args",
    "input",
    "input_encoding",
    "input_size",
    "exit_code",
    "runtime_ms",
    "output",
    "output_encoding",
    "output_size",
    "output_sha256",
    "failure",
]
COLUMNS = (
    "seq",
    "state",
    "args",
    "input",
    "canonical_result__exit_code",
    "canonical_result__runtime_ms",
    "canonical_result__output_sha256",
    "canonical_result__output",
    "failure",
)
STATE_NAMES = {Task.State.DONE: "done", Task.State.FAILED: "failed"}


def result_rows(campaign: Campaign, states: Iterable[int]) -> Iterator[dict[str, Any]]:
    """One dict per decided task, in seq order: its args, its input and the canonical output
    as bytes (None for a failed task). Reads ROWS_PER_QUERY_CHUNK rows at a time."""
    rows = (
        Task.objects.filter(campaign=campaign, state__in=list(states))
        .order_by("seq")
        .values_list(*COLUMNS)
        .iterator(chunk_size=ROWS_PER_QUERY_CHUNK)
    )
    for seq, state, args, task_input, exit_code, runtime_ms, sha, output, failure in rows:
        data = None if output is None else bytes(output)
        yield {
            "seq": seq,
            "state": STATE_NAMES.get(state, str(state)),
            "args": args,
            "input": bytes(task_input),
            "exit_code": exit_code,
            "runtime_ms": runtime_ms,
            "output_size": None if data is None else len(data),
            "output_sha256": sha or None,
            "output": data,
            "failure": failure,
        }


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def present(row: dict[str, Any], *, binary: str) -> dict[str, Any]:
    """Write the row's input and output for people: text when UTF-8, else `binary` (BASE64 for
    text formats, BINARY for msgpack), a large input as its sha256; `*_encoding` says which."""
    data: bytes = row.pop("input")
    out: dict[str, Any] = {"seq": row["seq"], "state": row["state"], "args": row["args"]}
    if len(data) > INPUT_INLINE_MAX:
        out["input"], out["input_encoding"] = hashlib.sha256(data).hexdigest(), SHA256
    else:
        out["input"], out["input_encoding"] = _encode(data, binary)
    out["input_size"] = len(data)
    output: bytes | None = row.pop("output")
    out["exit_code"], out["runtime_ms"] = row["exit_code"], row["runtime_ms"]
    if output is None:
        out["output"], out["output_encoding"] = None, None
    else:
        out["output"], out["output_encoding"] = _encode(output, binary)
    out["output_size"], out["output_sha256"] = row["output_size"], row["output_sha256"]
    out["failure"] = row["failure"]
    return out


def _encode(data: bytes, binary: str) -> tuple[str | bytes, str]:
    text = _text(data)
    if text is not None:
        return text, UTF8
    if binary == BINARY:
        return data, BINARY
    return base64.b64encode(data).decode("ascii"), BASE64


def encode_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield json.dumps(present(row, binary=BASE64), separators=(",", ":")).encode() + b"\n"


def encode_csv(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        out = present(row, binary=BASE64)
        if out["args"] is not None:
            out["args"] = json.dumps(out["args"])
        writer.writerow(["" if out[c] is None else out[c] for c in CSV_COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def encode_msgpack(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    packer = msgpack.Packer(use_bin_type=True)
    for row in rows:
        yield packer.pack(present(row, binary=BINARY))


ENCODERS = {"jsonl": encode_jsonl, "csv": encode_csv, "msgpack": encode_msgpack}


def chunked(pieces: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Join small pieces into chunks of about `size` bytes (one write per chunk, not per row)."""
    parts: list[bytes] = []
    held = 0
    for piece in pieces:
        parts.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(parts)
            parts, held = [], 0
    if parts:
        yield b"".join(parts)


def export_chunks(campaign: Campaign, fmt: str, state: str = "done") -> Iterator[bytes]:
    if fmt == "jsonl" and connection.vendor == "postgresql":
        return chunked(jsonl_postgres(campaign, STATES[state]))
    return chunked(ENCODERS[fmt](result_rows(campaign, STATES[state])))


# JSON Lines on PostgreSQL: the database writes the lines and COPY TO STDOUT streams them (the
# ORM path built a dict per row, converted its fields and encoded it in Python, at 0.12x the
# speed of a bare COPY: bench/data_paths.py). A row whose input and output are ASCII without
# NUL or backslash ("plain": encode(..., 'escape') leaves such bytes as they are, and has a
# backslash otherwise) is written whole in SQL, its bytes as JSON text (to_json). Any other row
# (non-ASCII text, binary) is written as "#" and a JSON array of its columns with the bytes in
# hex, and present() encodes it in Python as the ORM path does; both paths give the same fields,
# encodings and values. COPY's CSV format with control characters as delimiter and quote writes
# each line as it is: JSON has no raw control characters to quote. `OFFSET 0` keeps the inner
# query a subquery: pulled up, each use of `ein` and `eout` would encode the bytes again.
_EXPORT_INNER = """
SELECT t.seq, t.state, t.args, t.input, t.failure, r.exit_code, r.runtime_ms, r.output,
  r.output_sha256, length(t.input) > {inline_max} AS big,
  CASE WHEN length(t.input) <= {inline_max} THEN encode(t.input, 'escape') END AS ein,
  encode(r.output, 'escape') AS eout
FROM {tasks} t LEFT JOIN {results} r ON r.id = t.canonical_result_id
WHERE t.campaign_id = %s AND t.state = ANY(%s)
OFFSET 0
"""
_EXPORT_LINE = """
SELECT CASE WHEN (big OR strpos(ein, '\\') = 0) AND (eout IS NULL OR strpos(eout, '\\') = 0)
THEN '{{"seq":' || seq
  || ',"state":' || CASE state WHEN {done} THEN '"done"' WHEN {failed} THEN '"failed"'
    ELSE to_json(state::text)::text END
  || ',"args":' || COALESCE(args::text, 'null')
  || ',"input":' || CASE WHEN big
    THEN '"' || encode(sha256(input), 'hex') || '","input_encoding":"{sha}"'
    ELSE to_json(ein)::text || ',"input_encoding":"{utf8}"' END
  || ',"input_size":' || length(input)
  || ',"exit_code":' || COALESCE(exit_code::text, 'null')
  || ',"runtime_ms":' || COALESCE(runtime_ms::text, 'null')
  || ',"output":' || CASE WHEN output IS NULL
    THEN 'null,"output_encoding":null,"output_size":null'
    ELSE to_json(eout)::text || ',"output_encoding":"{utf8}","output_size":' || length(output)
    END
  || ',"output_sha256":' || CASE WHEN output_sha256 IS NULL OR output_sha256 = '' THEN 'null'
    ELSE to_json(output_sha256)::text END
  || ',"failure":' || CASE failure WHEN '' THEN '""' ELSE to_json(failure)::text END || '}}'
ELSE '#' || json_build_array(seq, state, args,
  CASE WHEN big THEN NULL ELSE encode(input, 'hex') END, length(input),
  CASE WHEN big THEN encode(sha256(input), 'hex') END,
  exit_code, runtime_ms, encode(output, 'hex'), output_sha256, failure)::text
END
FROM ({inner}) x ORDER BY seq
"""
_COPY_LINES = "COPY ({query}) TO STDOUT (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
_HASH = ord("#")


def jsonl_postgres(campaign: Campaign, states: Iterable[int]) -> Iterator[bytes]:
    """export_chunks' JSON Lines on PostgreSQL, written by the database where it can (above).
    One statement; the rows stream through COPY in constant memory."""
    inner = _EXPORT_INNER.format(
        inline_max=INPUT_INLINE_MAX, tasks=Task._meta.db_table, results=Result._meta.db_table
    )
    query = _EXPORT_LINE.format(
        done=Task.State.DONE.value,
        failed=Task.State.FAILED.value,
        sha=SHA256,
        utf8=UTF8,
        inner=inner,
    )
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(_COPY_LINES.format(query=query), [campaign.pk, list(states)]) as copy,
    ):
        # One block per row (PostgreSQL sends each row in a message of its own).
        for block in copy:
            if block[0] == _HASH:
                yield _jsonl_row(json.loads(bytes(block[1:])))
            else:
                yield bytes(block)


def _jsonl_row(columns: list[Any]) -> bytes:
    seq, state, args, hex_input, size, digest, exit_code, runtime_ms, hex_output, sha, failure = (
        columns
    )
    out: dict[str, Any] = {
        "seq": seq,
        "state": STATE_NAMES.get(state, str(state)),
        "args": args,
    }
    if digest is not None:
        out["input"], out["input_encoding"] = digest, SHA256
    else:
        out["input"], out["input_encoding"] = _encode(bytes.fromhex(hex_input), BASE64)
    out["input_size"], out["exit_code"], out["runtime_ms"] = size, exit_code, runtime_ms
    data = None if hex_output is None else bytes.fromhex(hex_output)
    if data is None:
        out["output"], out["output_encoding"] = None, None
    else:
        out["output"], out["output_encoding"] = _encode(data, BASE64)
    out["output_size"] = None if data is None else len(data)
    out["output_sha256"], out["failure"] = sha or None, failure
    return json.dumps(out, separators=(",", ":")).encode() + b"\n"


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _drive(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # thread_sensitive: every step runs on the one thread that owns this request's database
    # connection, so the open cursor is always used from the thread that opened it.
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    while True:
        chunk = await step(chunks)
        if chunk is None:
            return
        yield chunk


class ResultExportApi(ApiView):
    not_found = "Campaign {campaign_id} not found."

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # `?format=` names the export format here, not a DRF renderer; errors render as JSON.
        return (JSONRenderer(), JSONRenderer.media_type)

    @extend_schema(
        operation_id="results_export",
        summary="Download a campaign's results (streamed)",
        description=(
            "The canonical result of every decided task, in task order. Fields: seq, state "
            "(done/failed), args, input, input_encoding, input_size, exit_code, runtime_ms, "
            "output, output_encoding, output_size, output_sha256, failure. `input` and "
            "`output` are text when their bytes are UTF-8 (encoding `utf-8`); otherwise base64 "
            "in JSON Lines and CSV (`base64`) or raw bytes in msgpack (`binary`). An input "
            f"larger than {INPUT_INLINE_MAX} bytes is given as its sha256 (`sha256`). In CSV, "
            "args is a JSON list."
        ),
        parameters=[
            OpenApiParameter("format", str, enum=list(FORMATS), default="jsonl"),
            OpenApiParameter(
                "state", str, enum=list(STATES), default="done", description="which tasks"
            ),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "application/msgpack"): OpenApiResponse(OpenApiTypes.BINARY),
        },
    )
    def get(self, request: Request, campaign_id: int) -> StreamingHttpResponse:
        campaign = get_for_actor(Campaign.objects.all(), self.actor(), pk=campaign_id)
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in FORMATS:
            raise Rejected(f'Unknown format "{fmt}": use jsonl, csv or msgpack.')
        state = request.query_params.get("state", "done")
        if state not in STATES:
            raise Rejected(f'Unknown state "{state}": use done, failed or all.')
        chunks = export_chunks(campaign, fmt, state)
        content_type, ext = FORMATS[fmt]
        content: Iterator[bytes] | AsyncIterator[bytes] = chunks
        if isinstance(request._request, ASGIRequest):
            content = _drive(chunks)
        response = StreamingHttpResponse(content, content_type=content_type)
        response["Content-Disposition"] = (
            f'attachment; filename="campaign-{campaign.pk}-results.{ext}"'
        )
        response["X-Tasks-Total"] = str(campaign.tasks_total)
        response["Cache-Control"] = "no-store"
        return response
