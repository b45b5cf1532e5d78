"""Synchronous runs: `POST /api/v1/run` runs one task on the pool and answers with its output;
`GET /api/v1/runs/{id}` fetches a run that was not finished in time (campaigns/runs.py)."""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any

from django.db.models import Q
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.tenancy import get_for_actor
from campaigns import runs
from campaigns.api.base import (
    ApiView,
    Rejected,
    StringListField,
    StringMapField,
    organization_for_write,
)
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Kernel, Task
from campaigns.selectors import campaign_stalled
from campaigns.services import runs as run_services

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RunInput(serializers.Serializer):
    organization = serializers.SlugField(
        required=False, help_text="required when the caller belongs to several"
    )
    kernel = serializers.RegexField(
        SHA256.pattern,
        help_text="the sha256 of one of the organization's kernels (as stored, or as uploaded "
        "when the platform wrote its memory cap into the module)",
    )
    input = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="the task's stdin as text (UTF-8); default empty",
    )
    input_b64 = serializers.CharField(
        required=False, allow_blank=True, help_text="the task's stdin as base64, instead of input"
    )
    args = StringListField(required=False, help_text="command-line arguments")
    env = StringMapField(required=False, help_text="environment variables")
    quorum = serializers.IntegerField(
        required=False,
        default=1,
        min_value=1,
        max_value=10,
        help_text="independent volunteers whose byte-identical answers decide the run; 1 (the "
        "default) answers with one worker's result, unverified",
    )
    wait = serializers.FloatField(
        required=False,
        default=runs.WAIT_DEFAULT_SECONDS,
        min_value=0,
        max_value=runs.WAIT_MAX_SECONDS,
        help_text="seconds to wait for the answer before answering 202 (the run stays queued)",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "input" in attrs and "input_b64" in attrs:
            raise serializers.ValidationError({"input_b64": ["Give input or input_b64, not both."]})
        if "input_b64" in attrs:
            try:
                attrs["input_bytes"] = base64.b64decode(attrs.pop("input_b64"), validate=True)
            except (binascii.Error, ValueError):
                raise serializers.ValidationError({"input_b64": ["Not valid base64."]}) from None
        else:
            attrs["input_bytes"] = attrs.pop("input", "").encode()
        return attrs


class VerificationOutput(serializers.Serializer):
    quorum = serializers.IntegerField(help_text="agreeing independent results required")
    basis = serializers.CharField(
        allow_null=True,
        help_text="why the answer was accepted: single (one worker, unverified), quorum "
        "(agreed with independent volunteers), ...; null until done",
    )
    agreed_with = serializers.IntegerField(
        allow_null=True, help_text="with basis quorum: how many other volunteers agreed"
    )


class RunOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="the run's id (GET /api/v1/runs/{id})")
    url = serializers.CharField(help_text="where to fetch the run later")
    state = serializers.CharField(
        help_text="queued (no worker has it; also again after a worker went silent holding "
        "it), running (leased), done or failed"
    )
    campaign = serializers.IntegerField(help_text="the interactive campaign holding the run")
    kernel = serializers.CharField(help_text="sha256 of the module that ran")
    ok = serializers.BooleanField(allow_null=True, help_text="exit code 0; null until decided")
    exit_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(
        allow_null=True, help_text="the error kind of a failed attempt (exit, trap, timeout...)"
    )
    stdout = serializers.CharField(allow_null=True, help_text="the kernel's output, when done")
    stdout_encoding = serializers.ChoiceField(
        choices=["utf-8", "base64"], allow_null=True, help_text="utf-8 text, else base64"
    )
    stdout_size = serializers.IntegerField(allow_null=True)
    stdout_sha256 = serializers.CharField(allow_null=True)
    stderr = serializers.CharField(allow_blank=True, help_text="the tail of the kernel's stderr")
    failure = serializers.CharField(allow_blank=True, help_text="why a failed run failed")
    stalled = serializers.CharField(
        allow_blank=True,
        help_text="why an undecided run cannot be decided now (its quorum needs more distinct "
        "volunteers than are connected: the campaign's `stalled`), or empty",
    )
    verification = VerificationOutput()
    runtime_ms = serializers.IntegerField(
        allow_null=True, help_text="the kernel's run time as the worker measured it"
    )
    queued_ms = serializers.IntegerField(
        allow_null=True, help_text="from the run's creation until a worker leased it"
    )
    elapsed_ms = serializers.IntegerField(help_text="this request's time in the server")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


def _output(view: runs.RunView, started: float, stalled: str = "") -> dict[str, Any]:
    stdout: str | None = None
    encoding: str | None = None
    if view.stdout is not None:
        try:
            stdout, encoding = view.stdout.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            stdout, encoding = base64.b64encode(view.stdout).decode("ascii"), "base64"
    return RunOutput(
        {
            "id": view.id,
            "url": reverse("api-run", kwargs={"run_id": view.id}),
            "state": view.state,
            "campaign": view.campaign,
            "kernel": view.kernel,
            "ok": view.ok,
            "exit_code": view.exit_code,
            "error": view.error,
            "stdout": stdout,
            "stdout_encoding": encoding,
            "stdout_size": None if view.stdout is None else len(view.stdout),
            "stdout_sha256": view.stdout_sha256,
            "stderr": view.stderr,
            "failure": view.failure,
            "stalled": stalled,
            "verification": {
                "quorum": view.quorum,
                "basis": view.basis,
                "agreed_with": view.agreed_with,
            },
            "runtime_ms": view.runtime_ms,
            "queued_ms": view.queued_ms,
            "elapsed_ms": round((time.perf_counter() - started) * 1000),
            "created_at": view.created_at,
            "finished_at": view.finished_at,
        }
    ).data


def _answer(view: runs.RunView, started: float, *, created: bool) -> Response:
    if view.decided:
        return Response(_output(view, started), status=status.HTTP_200_OK)
    # Not decided within `wait`: say so when it cannot be, as things are (one query for the
    # campaign, and one more for the volunteers only when its quorum is above one).
    campaign = Campaign.objects.filter(pk=view.campaign).first()
    data = _output(view, started, campaign_stalled(campaign) if campaign else "")
    response = Response(data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)
    response["Location"] = data["url"]
    response["Retry-After"] = "1"
    return response


class RunApi(ApiView):
    @extend_schema(
        operation_id="run",
        summary="Run one task on the pool and answer with its output (synchronous offload)",
        description=(
            "Queues one task of the kernel (its stdin, args and env) at the head of the pool: "
            "a connected worker (native or browser) leases it before any batch work, runs it "
            "and returns the result, which is recorded and validated like any campaign's. "
            "The request waits up to `wait` seconds: 200 with the answer once the run is "
            "decided (done, or failed after its attempts: `ok` false, `error`, `exit_code`, "
            "`stderr`), else 202 with the run as it is now and a `Location` to fetch it from "
            "(GET /api/v1/runs/{id}, which can wait too). A queued run stays queued until a "
            "worker takes it. A worker that goes silent holding the run loses it within "
            f"{runs.SILENT_WORKER_SECONDS} s of its lease (the kernel's "
            f"{runs.RUN_TASK_TIMEOUT} s limit and a {runs.RUN_LEASE_GRACE} s grace, then the "
            "sweeper): the run is queued again for another worker, or fails with `failure` "
            '"lease expired on N worker session(s)..." once silent sessions of max_attempts '
            "distinct networks let it expire; a request waiting on it is answered as soon "
            "as it is decided. With quorum 1 the answer is one worker's, unverified "
            "(`verification.basis` = single); with quorum N it is decided by N independent "
            "volunteers' byte-identical answers. Runs are tasks of the organization's "
            '"Synchronous runs of KERNEL" campaign (one per kernel and quorum).'
        ),
        request=RunInput,
        responses={
            200: RunOutput,
            202: OpenApiResponse(RunOutput, description="Not decided within `wait`: queued."),
        },
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        actor = self.actor()
        form = RunInput(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        organization = organization_for_write(actor, data.get("organization"))
        sha = data["kernel"]
        kernel = (
            Kernel.objects.for_actor(actor)
            .filter(Q(sha256=sha) | Q(original_sha256=sha), organization=organization)
            .order_by("pk")
            .first()
        )
        if kernel is None:
            raise exceptions.NotFound(f"No kernel {sha} in the organization {organization.slug}.")
        if kernel.kind != Kernel.Kind.WASM:
            raise Rejected("Synchronous runs take WebAssembly kernels.")
        task = run_services.run_submit(
            organization=organization,
            kernel=kernel,
            spec=TaskSpec(
                input=data["input_bytes"], args=data.get("args"), env=data.get("env") or None
            ),
            quorum=data["quorum"],
            created_by=actor.user,
        )
        runs.wait(task.pk, data["wait"])
        view = runs.run_view(task.pk)
        assert view is not None  # a run is never deleted but with its campaign
        return _answer(view, started, created=True)


class RunDetailApi(ApiView):
    not_found = "Run {run_id} not found."

    @extend_schema(
        operation_id="runs_retrieve",
        summary="A synchronous run: its state, and its answer once decided",
        parameters=[
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0, "maximum": runs.WAIT_MAX_SECONDS},
                description=f"seconds (0 to {runs.WAIT_MAX_SECONDS:g}) to wait for the run to "
                "be decided before answering; default 0",
            )
        ],
        responses=RunOutput,
    )
    def get(self, request: Request, run_id: int) -> Response:
        started = time.perf_counter()
        raw = request.query_params.getlist("wait")
        try:
            seconds = float(raw[0]) if raw else 0.0
        except ValueError:
            seconds = -1.0
        if len(raw) > 1 or not 0 <= seconds <= runs.WAIT_MAX_SECONDS:
            raise exceptions.ValidationError(
                {"wait": [f"A number of seconds from 0 to {runs.WAIT_MAX_SECONDS:g}, once."]}
            )
        interactive = Task.objects.filter(campaign__interactive=True)
        task = get_for_actor(interactive, self.actor(), pk=run_id)
        runs.wait(task.pk, seconds)
        view = runs.run_view(task.pk)
        assert view is not None
        return _answer(view, started, created=False)
