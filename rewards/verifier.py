"""Verifier kernels: a campaign's own judge of its results (contract in docs/kernels.md,
"Verifiers").

A verifier is a WASI command run in the server sandbox. Its stdin is a stream of frames (the
generator framing: 4-byte little-endian length, then the bytes): first the task's input, then
the candidate outputs. It writes one line per candidate, in order, each a decimal label: 0
rejects that output on its own (malformed, out of range...), and outputs with the same positive
label are equivalent. It exits 0. Byte equality is the verifier every campaign has by default;
a tolerance verifier (kernels/src/float_verify.c) accepts floating-point results that differ in
the last bits.

The job (verify_tasks) runs the verifier on every task with results waiting, outside any
transaction (a kernel may take seconds), then decides the tasks under their row locks with
rewards.validation. Results that arrived while the verifier ran are left for another pass.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction

from campaigns.models import Campaign, Result, Task
from campaigns.services.base import limits, sandbox_host
from rewards import validation
from rewards.validation import ClassKey, Decision, TaskView
from workers import scheduler

log = logging.getLogger(__name__)

VERDICT_MAX_BYTES = 1024 * 1024


class VerifierError(Exception):
    """The verifier could not judge: it failed, or its output breaks the contract."""


def frames(chunks: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(c)) + bytes(c) for c in chunks)


def parse_verdicts(stdout: bytes, count: int) -> list[int]:
    """Exactly `count` lines of non-negative decimal labels."""
    try:
        lines = stdout.decode("ascii").split()
    except UnicodeDecodeError:
        raise VerifierError("its output is not ASCII text") from None
    if len(lines) != count:
        raise VerifierError(f"it wrote {len(lines)} verdict(s) for {count} output(s)")
    try:
        labels = [int(x) for x in lines]
    except ValueError:
        raise VerifierError("a verdict is not a decimal number") from None
    if any(v < 0 for v in labels):
        raise VerifierError("a verdict is negative")
    return labels


def run_verifier(campaign: Campaign, task_input: bytes, outputs: Sequence[bytes]) -> list[int]:
    """Run the campaign's verifier on one task's outputs; one label per output."""
    from kernelhost import KernelRejected, Limits

    verifier = campaign.verifier
    if verifier is None:
        raise VerifierError("the campaign has no verifier")
    cfg = limits()
    host = sandbox_host()
    try:
        kernel = host.compile(bytes(verifier.blob.data), verifier.sha256)
    except KernelRejected as exc:
        raise VerifierError(f"the verifier kernel was rejected: {exc.reason}") from None
    static = campaign.static_data
    result = host.run(
        kernel,
        stdin=frames([task_input, *outputs]),
        argv0="verifier",
        env=dict(campaign.env),
        static=bytes(static.data) if static else None,
        static_sha256=static.sha256 if static else None,
        limits=Limits(
            timeout_s=cfg["SANDBOX_TIMEOUT_SECONDS"],
            memory_bytes=cfg["KERNEL_MEMORY_CAP"],
            output_bytes=VERDICT_MAX_BYTES,
        ),
    )
    if not result.ok:
        tail = result.stderr_tail.decode("utf-8", "replace").strip()[-300:]
        detail = result.message or str(result.error)
        raise VerifierError(f"{detail}" + (f" (stderr: {tail})" if tail else ""))
    return parse_verdicts(result.stdout, len(outputs))


def verify_tasks(task_ids: Sequence[int]) -> None:
    """The verifier job: judge and decide these tasks. Idempotent, tolerant of vanished rows."""
    tasks = validation.load_tasks(task_ids)
    work = {tid: t for tid, t in tasks.items() if t.candidates}
    if not work:
        return
    campaigns = {
        c.pk: c
        for c in Campaign.objects.filter(pk__in={t.campaign_id for t in work.values()})
        .exclude(state=Campaign.State.CANCELLED)
        .select_related("verifier__blob", "static_data")
    }
    work = {
        tid: t
        for tid, t in work.items()
        if t.campaign_id in campaigns and campaigns[t.campaign_id].verifier is not None
    }
    labels, errors = _judge(work, campaigns)

    retry: list[int] = []
    with transaction.atomic():
        validation.lock_tasks(work)
        fresh = validation.load_tasks(work)
        pols = validation.policies({t.campaign_id for t in fresh.values()})
        decisions: list[Decision] = []
        judged: list[TaskView] = []
        for tid, t in fresh.items():
            if tid in errors:
                decisions.append(_verifier_failed(t, errors[tid]))
                continue
            known: dict[int, ClassKey] = {r.id: labels[r.id] for r in t.replicas if r.id in labels}
            late = any(r.id not in known for r in t.candidates) or (
                t.state == validation.TASK_DONE and t.canonical_id not in known
            )
            if late:
                retry.append(tid)
            if t.state == validation.TASK_DONE and t.canonical_id not in known:
                continue  # decided meanwhile: the retry compares with the canonical result
            judged.append(t)
        classes = {rid: labels[rid] for t in judged for r in t.replicas if (rid := r.id) in labels}
        draw = validation._trust_draw(judged, pols, classes)
        for t in judged:
            known = {r.id: classes[r.id] for r in t.replicas if r.id in classes}
            decisions.append(validation.decide(t, pols[t.campaign_id], known, unchecked=draw))
        done, failed = validation.apply(decisions, fresh)
        with connection.cursor() as cursor:
            scheduler._bump_counters(cursor, done, failed)
        for cid in sorted({fresh[tid].campaign_id for tid in errors if tid in fresh}):
            tid = min(t for t in errors if fresh.get(t) and fresh[t].campaign_id == cid)
            Campaign.objects.filter(pk=cid).update(
                error=f"The verifier failed on task {tid}: {errors[tid]}"[:2000]
            )
        if retry:
            from ccgsc.jobs import enqueue
            from rewards.jobs import verify_tasks as job

            enqueue(job, sorted(retry))


def _judge(
    work: dict[int, TaskView], campaigns: dict[int, Campaign]
) -> tuple[dict[int, ClassKey], dict[int, str]]:
    """Run the verifier once per task on its candidates (and its canonical output when the
    task is already done). Returns labels per result id and failures per task id."""
    wanted = {r.id for t in work.values() for r in t.candidates} | {
        t.canonical_id
        for t in work.values()
        if t.state == validation.TASK_DONE and t.canonical_id is not None
    }
    outputs: dict[int, Any] = dict(Result.objects.filter(pk__in=wanted).values_list("pk", "output"))
    inputs: dict[int, Any] = dict(Task.objects.filter(pk__in=list(work)).values_list("pk", "input"))
    labels: dict[int, ClassKey] = {}
    errors: dict[int, str] = {}
    for tid, t in sorted(work.items()):
        if t.state == validation.TASK_FAILED:
            labels.update({r.id: "failed" for r in t.candidates})  # only made inconclusive
            continue
        ids = [r.id for r in t.candidates]
        if t.state == validation.TASK_DONE and t.canonical_id is not None:
            ids.insert(0, t.canonical_id)
        try:
            verdicts = run_verifier(
                campaigns[t.campaign_id],
                bytes(inputs.get(tid) or b""),
                [bytes(outputs.get(rid) or b"") for rid in ids],
            )
        except VerifierError as exc:
            log.warning("verifier of campaign %s failed on task %s: %s", t.campaign_id, tid, exc)
            errors[tid] = str(exc)
            continue
        # Labels are only comparable within one run, so they are keyed by the task too.
        for rid, v in zip(ids, verdicts, strict=True):
            labels[rid] = None if v == 0 else (tid, v)
    return labels, errors


def _verifier_failed(task: TaskView, message: str) -> Decision:
    d = Decision(task.id, task.campaign_id)
    d.inconclusive = [r.id for r in task.candidates]
    if task.state == validation.TASK_PENDING:
        d.failure = f"verifier failed: {message}"[:2000]
    return d
