"""Prometheus metrics: every metric object of the platform, and the decorators that feed them.

The hot paths carry one decorator line each (`workers.scheduler.lease`, `.submit_results`,
`rewards.validation.apply`), so their code stays free of bookkeeping; figures that live in the
database (sessions connected, queue depths) are read when Prometheus scrapes, by
`operations.metrics_view`, so they are the same whichever process answers.

Several server processes: set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by the
processes of one host (before they start); prometheus_client then keeps each process's counters
in files there and /metrics adds them up. Nothing here imports Django, so the module is safe to
import from anywhere.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence, Sized
from typing import ParamSpec, Protocol, TypeVar

from prometheus_client import Counter, Histogram

P = ParamSpec("P")
R = TypeVar("R")
L = TypeVar("L", bound=Sized)

# Lease round trips take a few milliseconds; a slow one (lock contention, a cold campaign
# directory) tens to hundreds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

TASKS_LEASED = Counter("ccgsc_tasks_leased", "Task replicas leased to worker sessions")
LEASE_SECONDS = Histogram(
    "ccgsc_lease_seconds",
    "Time to lease a batch of tasks for one session (one scheduler.lease call)",
    buckets=_LATENCY_BUCKETS,
)
RESULTS_RETURNED = Counter(
    "ccgsc_results_returned",
    "Results returned by workers: accepted (recorded) or ignored (late or duplicate)",
    ["disposition"],
)
RESULT_BATCH_SECONDS = Histogram(
    "ccgsc_result_batch_seconds",
    "Time to record one batch of results (one scheduler.submit_results call)",
    buckets=_LATENCY_BUCKETS,
)
TASKS_FINISHED = Counter(
    "ccgsc_tasks_finished", "Tasks decided while results were recorded", ["state"]
)
RESULTS_VALIDATED = Counter(
    "ccgsc_results_validated", "Results given a validation verdict", ["verdict"]
)


def timed_lease(fn: Callable[P, L]) -> Callable[P, L]:
    """Decorates scheduler.lease: its latency, and how many replicas it leased."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> L:
        start = time.perf_counter()
        leases = fn(*args, **kwargs)
        LEASE_SECONDS.observe(time.perf_counter() - start)
        if leases:
            TASKS_LEASED.inc(len(leases))
        return leases

    return wrapper


class _Outcome(Protocol):
    accepted: list[int]
    ignored: list[int]
    done: int
    failed: int


OutcomeT = TypeVar("OutcomeT", bound=_Outcome)


def timed_results(fn: Callable[P, OutcomeT]) -> Callable[P, OutcomeT]:
    """Decorates scheduler.submit_results: batch time, results accepted/ignored, tasks decided."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> OutcomeT:
        start = time.perf_counter()
        outcome = fn(*args, **kwargs)
        RESULT_BATCH_SECONDS.observe(time.perf_counter() - start)
        returned(outcome.accepted, outcome.ignored, outcome.done, outcome.failed)
        return outcome

    return wrapper


def returned(accepted: Sequence[int], ignored: Sequence[int], done: int, failed: int) -> None:
    if accepted:
        RESULTS_RETURNED.labels("accepted").inc(len(accepted))
    if ignored:
        RESULTS_RETURNED.labels("ignored").inc(len(ignored))
    if done:
        TASKS_FINISHED.labels("done").inc(done)
    if failed:
        TASKS_FINISHED.labels("failed").inc(failed)


class _Decision(Protocol):
    valid: list[int]
    invalid: list[int]


def counted_decisions(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorates rewards.validation.apply(decisions, ...): counts the verdicts it writes."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        out = fn(*args, **kwargs)
        decisions: Sequence[_Decision] = args[0] if args else kwargs["decisions"]  # type: ignore[assignment]
        validated(sum(len(d.valid) for d in decisions), sum(len(d.invalid) for d in decisions))
        return out

    return wrapper


def validated(valid: int, invalid: int = 0) -> None:
    if valid:
        RESULTS_VALIDATED.labels("valid").inc(valid)
    if invalid:
        RESULTS_VALIDATED.labels("invalid").inc(invalid)
