"""Results export: a campaign's canonical results, in task order, streamed as JSON Lines, CSV
or msgpack in constant memory however many there are.

Rows come from one query (tasks joined to their canonical result) as plain tuples (Row below):
on PostgreSQL a binary-format query streamed in chunks of rows (libpq's chunked rows mode:
psycopg's C loaders build the tuples, the server keeps sending while the web process encodes),
elsewhere the ORM's `.iterator(chunk_size=...)`. One encoder per format turns those tuples
into chunks of about CHUNK_BYTES, so both readers give the same bytes. JSON Lines are written
by msgspec, a batch of rows per call. Under ASGI (daphne) Django would drain a synchronous
iterator into a list before sending it, so there the same generator is driven one chunk per
thread hop by an async iterator.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import msgspec
import psycopg
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
ROWS_PER_QUERY_CHUNK = 100

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
# How `input` and `output` are written (the `*_encoding` fields): text when the bytes are UTF-8
# (in CSV: UTF-8 without NUL, a byte CSV cannot carry); otherwise base64 in JSON Lines and CSV,
# raw bytes in msgpack; sha256 for a large input.
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
STATE_NAMES: dict[int, str] = {Task.State.DONE: "done", Task.State.FAILED: "failed"}

# A decided task as both readers give it, a tuple in this order:
#   seq, state (its name), args (JSON text, or None), input (bytes, or None when larger than
#   INPUT_INLINE_MAX), input_sha256 (hex, only for such a large input), input_size, exit_code,
#   runtime_ms, output (bytes, or None for a task without a result), output_size,
#   output_sha256 (None when unknown), failure
Row = tuple[
    int, str, str | None, bytes | None, str | None, int, int | None, int | None,
    bytes | None, int | None, str | None, str,
]  # fmt: skip


def task_rows(campaign: Campaign, states: Iterable[int]) -> Iterator[Row]:
    """The campaign's decided tasks in `states`, in seq order, as ROW tuples."""
    if connection.vendor == "postgresql":
        return postgres_rows(campaign, states)
    return orm_rows(campaign, states)


def orm_rows(campaign: Campaign, states: Iterable[int]) -> Iterator[Row]:
    """task_rows through the ORM (SQLite; any database). Reads ROWS_PER_QUERY_CHUNK rows at a
    time."""
    rows = (
        Task.objects.filter(campaign=campaign, state__in=list(states))
        .order_by("seq")
        .values_list(
            "seq",
            "state",
            "args",
            "input",
            "canonical_result__exit_code",
            "canonical_result__runtime_ms",
            "canonical_result__output",
            "canonical_result__output_sha256",
            "failure",
        )
        .iterator(chunk_size=ROWS_PER_QUERY_CHUNK)
    )
    for seq, state, args, task_input, exit_code, runtime_ms, output, sha, failure in rows:
        data = bytes(task_input)
        big = len(data) > INPUT_INLINE_MAX
        out = None if output is None else bytes(output)
        yield (
            seq,
            STATE_NAMES.get(state, str(state)),
            None if args is None else json.dumps(args, ensure_ascii=False),
            None if big else data,
            hashlib.sha256(data).hexdigest() if big else None,
            len(data),
            exit_code,
            runtime_ms,
            out,
            None if out is None else len(out),
            sha or None,
            failure,
        )


# task_rows on PostgreSQL: the same tuples, computed by the server where that is cheap (the
# state's name, sizes, the large input's digest). Binary results, read by psycopg's C loaders;
# a chunk of ROWS_PER_QUERY_CHUNK rows at a time with libpq 17 or later (chunked rows mode:
# constant memory, the server writes the next rows while this process encodes), one at a time
# otherwise. JSON text of args (`::text`): the web process passes it through unparsed. An output
# larger than OUTPUT_CHUNKED_MAX is not sent with its row (a chunk would hold up to
# ROWS_PER_QUERY_CHUNK outputs of up to a result frame's 16 MiB): it is read alone, on a second
# connection (this one is busy streaming), when its row comes.
OUTPUT_CHUNKED_MAX = 256 * 1024
_ROWS_QUERY = """
SELECT t.seq, CASE t.state WHEN {done} THEN 'done' WHEN {failed} THEN 'failed'
    ELSE t.state::text END,
  t.args::text,
  CASE WHEN length(t.input) <= {inline_max} THEN t.input END,
  CASE WHEN length(t.input) > {inline_max} THEN encode(sha256(t.input), 'hex') END,
  length(t.input), r.exit_code, r.runtime_ms,
  CASE WHEN length(r.output) <= {output_max} THEN r.output END, length(r.output),
  NULLIF(r.output_sha256, ''), t.failure
FROM {tasks} t LEFT JOIN {results} r ON r.id = t.canonical_result_id
WHERE t.campaign_id = %s AND t.state = ANY(%s)
ORDER BY t.seq
"""
_OUTPUT_QUERY = """
SELECT r.output FROM {tasks} t JOIN {results} r ON r.id = t.canonical_result_id
WHERE t.campaign_id = %s AND t.seq = %s
"""


def postgres_rows(campaign: Campaign, states: Iterable[int]) -> Iterator[Row]:
    """task_rows on PostgreSQL: one statement, streamed (above)."""
    tables = {"tasks": Task._meta.db_table, "results": Result._meta.db_table}
    query = _ROWS_QUERY.format(
        done=Task.State.DONE.value,
        failed=Task.State.FAILED.value,
        inline_max=INPUT_INLINE_MAX,
        output_max=OUTPUT_CHUNKED_MAX,
        **tables,
    )
    size = ROWS_PER_QUERY_CHUNK if psycopg.capabilities.has_stream_chunked() else 1
    second: psycopg.Connection[Any] | None = None
    # Django's cursors bind parameters on the client, which psycopg cannot combine with binary
    # results: a plain psycopg cursor on the same connection.
    with (
        connection.cursor() as django_cursor,
        psycopg.Cursor(django_cursor.cursor.connection) as cursor,
    ):
        try:
            for row in cursor.stream(
                query, [campaign.pk, [int(s) for s in states]], binary=True, size=size
            ):
                if row[8] is None and row[9] is not None:  # a large output, not sent (above)
                    if second is None:
                        second = connection.get_new_connection(connection.get_connection_params())
                    with psycopg.Cursor(second) as alone:
                        alone.execute(
                            _OUTPUT_QUERY.format(**tables), [campaign.pk, row[0]], binary=True
                        )
                        fetched = alone.fetchone()
                    row = (*row[:8], bytes(fetched[0]) if fetched else b"", *row[9:])
                yield row
        finally:
            if second is not None:
                second.close()


class _JsonRow(msgspec.Struct, gc=False):
    """A JSON Lines row: msgspec writes the fields in this order (bytes as base64; args as the
    JSON text it holds)."""

    seq: int
    state: str
    args: Any
    input: str | bytes
    input_encoding: str
    input_size: int
    exit_code: int | None
    runtime_ms: int | None
    output: str | bytes | None
    output_encoding: str | None
    output_size: int | None
    output_sha256: str | None
    failure: str


def encode_jsonl(rows: Iterable[Row]) -> Iterator[bytes]:
    """JSON Lines in chunks of about CHUNK_BYTES: each chunk's rows encoded by one msgspec
    call. The per-row Python is only the choice of text or base64 (a UTF-8 decode)."""
    encode_lines = msgspec.json.Encoder().encode_lines
    raw = msgspec.Raw
    batch: list[_JsonRow] = []
    append = batch.append
    held = 0
    for seq, state, args, data, digest, in_size, code, ms, out, out_size, sha, failure in rows:
        in_encoding: str = UTF8
        out_encoding: str | None = UTF8
        in_held = in_size
        text_in: str | bytes | None = data
        text_out: str | bytes | None = out
        try:
            text_in = data.decode()  # type: ignore[union-attr]
        except UnicodeDecodeError:
            in_encoding = BASE64
        except AttributeError:  # None: a large input, written as its sha256
            text_in, in_encoding, in_held = digest, SHA256, 0
        try:
            text_out = out.decode()  # type: ignore[union-attr]
        except UnicodeDecodeError:
            out_encoding = BASE64
        except AttributeError:  # None: no result (a failed task)
            out_encoding = None
        append(
            _JsonRow(
                seq,
                state,
                None if args is None else raw(args),
                text_in,  # type: ignore[arg-type]
                in_encoding,
                in_size,
                code,
                ms,
                text_out,
                out_encoding,
                out_size,
                sha,
                failure,
            )
        )
        held += in_held + (out_size or 0) + 200  # about the row's size (before base64)
        if held >= CHUNK_BYTES:
            yield encode_lines(batch)
            batch.clear()
            held = 0
    if batch:
        yield encode_lines(batch)


def _csv_value(data: bytes | None, digest: str | None) -> tuple[str, str]:
    if data is None:
        return digest or "", SHA256
    if b"\0" not in data:
        try:
            return data.decode(), UTF8
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode("ascii"), BASE64


def encode_csv(rows: Iterable[Row]) -> Iterator[bytes]:
    """CSV with a header row; args as JSON text. Text that holds NUL goes as base64 (a NUL byte
    never appears raw in the CSV)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for seq, state, args, data, digest, in_size, code, ms, out, out_size, sha, failure in rows:
        text_in, in_encoding = _csv_value(data, digest)
        text_out, out_encoding = ("", "") if out is None else _csv_value(out, None)
        writer.writerow(
            [
                seq,
                state,
                "" if args is None else args,
                text_in,
                in_encoding,
                in_size,
                "" if code is None else code,
                "" if ms is None else ms,
                text_out,
                out_encoding,
                "" if out_size is None else out_size,
                sha or "",
                failure,
            ]
        )
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


class _MsgpackRow(_JsonRow, gc=False):
    """A msgpack row: the JSON Lines fields, bytes as msgpack's bin type."""


def encode_msgpack(rows: Iterable[Row]) -> Iterator[bytes]:
    encoder = msgspec.msgpack.Encoder()
    decode_json = msgspec.json.decode
    buffer = bytearray()
    for seq, state, args, data, digest, in_size, code, ms, out, out_size, sha, failure in rows:
        value_in: str | bytes | None
        if data is None:
            value_in, in_encoding = digest, SHA256
        else:
            value_in, in_encoding = _text_or_binary(data)
        value_out, out_encoding = (None, None) if out is None else _text_or_binary(out)
        row = _MsgpackRow(
            seq,
            state,
            None if args is None else decode_json(args),
            value_in,  # type: ignore[arg-type]
            in_encoding,
            in_size,
            code,
            ms,
            value_out,
            out_encoding,
            out_size,
            sha,
            failure,
        )
        encoder.encode_into(row, buffer, -1)
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _text_or_binary(data: bytes) -> tuple[str | bytes, str]:
    try:
        return data.decode(), UTF8
    except UnicodeDecodeError:
        return data, BINARY


ENCODERS = {"jsonl": encode_jsonl, "csv": encode_csv, "msgpack": encode_msgpack}


def export_chunks(campaign: Campaign, fmt: str, state: str = "done") -> Iterator[bytes]:
    """The export as chunks of about CHUNK_BYTES (one write per chunk, not per row)."""
    return ENCODERS[fmt](task_rows(campaign, STATES[state]))


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
            "`output` are text when their bytes are UTF-8 (encoding `utf-8`; in CSV only UTF-8 "
            "without NUL); otherwise base64 in JSON Lines and CSV (`base64`) or raw bytes in "
            "msgpack (`binary`). An input "
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
