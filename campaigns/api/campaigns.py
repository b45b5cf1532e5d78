"""Campaigns: list, create (generator, task file or API input; policies), detail, progress,
the lifecycle actions, and the tasks (paginated list, bulk add as a stream)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

from django.db import transaction
from django.db.models.functions import Length
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, parsers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Organization
from accounts.tenancy import Actor, get_for_actor, get_organization
from campaigns.api.base import (
    TASK_STREAM_PARSERS,
    ApiView,
    IdCursorPagination,
    InvalidTasks,
    Rejected,
    SeqCursorPagination,
    StateConflict,
    StringListField,
    StringMapField,
    organization_for_write,
)
from campaigns.api.kernels import ORG_FILTER
from campaigns.inputs import TASK_FILE_FORMATS, TaskSpec, guess_format
from campaigns.models import Campaign, Kernel, Result, Task
from campaigns.selectors import campaign_stalled
from campaigns.services.base import ServiceError, limits
from campaigns.services.creation import campaign_create
from campaigns.services.generators import campaign_regenerate
from campaigns.services.lifecycle import (
    campaign_cancel,
    campaign_pause,
    campaign_resume,
    campaign_start,
)
from campaigns.services.tasks import tasks_add
from ccgsc.parsers import JSONParser

# --- output --------------------------------------------------------------------------------


class CampaignOutput(serializers.ModelSerializer):
    organization: serializers.SlugRelatedField[Organization] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    static_data_sha256 = serializers.CharField(
        source="static_data_id", allow_null=True, read_only=True
    )
    tasks_remaining = serializers.IntegerField(read_only=True)
    progress = serializers.FloatField(read_only=True, help_text="finished tasks / total, 0..1")
    reduced_output_b64 = serializers.SerializerMethodField(
        help_text="the reducer's output (the campaign's final answer), base64"
    )
    stalled = serializers.SerializerMethodField(
        help_text="why a running campaign cannot progress (its quorum needs more distinct "
        'volunteers than are connected), or ""'
    )

    class Meta:
        model = Campaign
        fields = [
            "id",
            "organization",
            "name",
            "description",
            "state",
            "error",
            "stalled",
            "kernel",
            "args",
            "env",
            "static_data_sha256",
            "input_source",
            "input_state",
            "generator",
            "generator_args",
            "verifier",
            "reducer",
            "priority",
            "task_timeout",
            "max_attempts",
            "points_per_task",
            "min_quorum",
            "target_replicas",
            "max_error_replicas",
            "max_total_replicas",
            "quorum_needs_account",
            "adaptive_replication",
            "approved",
            "tasks_total",
            "tasks_done",
            "tasks_failed",
            "tasks_remaining",
            "progress",
            "reduced_output_b64",
            "reduced_at",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_stalled(self, campaign: Campaign) -> str:
        return campaign_stalled(campaign)

    def get_reduced_output_b64(self, campaign: Campaign) -> str | None:
        if campaign.reduced_output is None:
            return None
        return base64.b64encode(bytes(campaign.reduced_output)).decode()


class ProgressOutput(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Campaign.State.choices)
    input_state = serializers.ChoiceField(choices=Campaign.InputState.choices)
    error = serializers.CharField(allow_blank=True)
    stalled = serializers.CharField(
        allow_blank=True, help_text="why the campaign cannot progress, or empty"
    )
    tasks_total = serializers.IntegerField()
    tasks_done = serializers.IntegerField()
    tasks_failed = serializers.IntegerField()
    tasks_remaining = serializers.IntegerField()
    progress = serializers.FloatField(help_text="finished tasks / total, 0..1")
    rate_per_second = serializers.FloatField(
        help_text="results returned per second over the last minute (or since the start)"
    )
    eta_seconds = serializers.FloatField(
        allow_null=True,
        help_text="remaining tasks / rate; null while nothing is known or while `stalled` says "
        "why the campaign cannot progress",
    )
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


def progress_data(campaign: Campaign) -> dict[str, Any]:
    """The counters maintained by the services plus a throughput estimate: one indexed range
    count of the results returned in the last minute (never a scan of the whole campaign)."""
    now = timezone.now()
    rate = 0.0
    if campaign.state == Campaign.State.RUNNING and campaign.started_at is not None:
        window = min(60.0, max(1.0, (now - campaign.started_at).total_seconds()))
        returned = Result.objects.filter(
            campaign=campaign, returned_at__gte=now - timedelta(seconds=window)
        ).count()
        rate = returned / window
    remaining = campaign.tasks_remaining
    stalled = campaign_stalled(campaign)
    return {
        "id": campaign.pk,
        "state": campaign.state,
        "input_state": campaign.input_state,
        "error": campaign.error,
        "stalled": stalled,
        "tasks_total": campaign.tasks_total,
        "tasks_done": campaign.tasks_done,
        "tasks_failed": campaign.tasks_failed,
        "tasks_remaining": remaining,
        "progress": round(campaign.progress, 6),
        "rate_per_second": round(rate, 3),
        # A stalled campaign's recent rate says nothing of when it ends (it cannot, as it is).
        "eta_seconds": round(remaining / rate, 1) if rate > 0 and not stalled else None,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
    }


def _campaign(actor: Actor, campaign_id: int) -> Campaign:
    return get_for_actor(Campaign.objects.select_related("organization"), actor, pk=campaign_id)


# --- list and create -------------------------------------------------------------------------

POLICY_LIMITS: dict[str, tuple[int, int]] = {
    "priority": (1, 1000),
    "task_timeout": (1, 7 * 24 * 3600),
    "max_attempts": (1, 100),
    "points_per_task": (0, 1_000_000),
    "min_quorum": (1, 10),
    "target_replicas": (1, 10),
    "max_error_replicas": (0, 1000),
    "max_total_replicas": (1, 1000),
}


class CampaignCreateInput(serializers.Serializer):
    organization = serializers.SlugField(
        required=False, help_text="required when the caller belongs to several"
    )
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    kernel = serializers.IntegerField(help_text="the kernel's id")
    args = StringListField(required=False, help_text="command-line arguments of every task")
    env = StringMapField(required=False, help_text="environment variables of every task")
    static_data = serializers.FileField(
        required=False, help_text="bytes readable by every task at /ccgsc/static (multipart)"
    )
    input_source = serializers.ChoiceField(
        choices=Campaign.InputSource.choices,
        required=False,
        help_text="default: generator if `generator` is given, file if `task_file` is, else api",
    )
    generator = serializers.IntegerField(required=False, help_text="a generator kernel's id")
    generator_args = StringListField(required=False)
    task_file = serializers.FileField(
        required=False, help_text="JSON Lines or a msgpack stream, one task each (multipart)"
    )
    task_file_format = serializers.ChoiceField(
        choices=list(TASK_FILE_FORMATS),
        required=False,
        help_text="default: from the file name (.msgpack, .txt, else jsonl)",
    )
    verifier = serializers.IntegerField(required=False, help_text="a verifier kernel's id")
    reducer = serializers.IntegerField(required=False, help_text="a reducer kernel's id")
    start = serializers.BooleanField(default=False, help_text="start the campaign at once")
    quorum_needs_account = serializers.BooleanField(
        required=False,
        help_text="every quorum includes at least one signed-in volunteer: anonymous sessions "
        "alone never decide a task (default false)",
    )
    adaptive_replication = serializers.BooleanField(
        required=False,
        help_text="BOINC's adaptive replication (default false; needs min_quorum >= 2). Risk: "
        "a volunteer trusted on this kernel has a result accepted alone, spot-checked only at "
        "random (at least 1 in 20), so a trusted volunteer who turns hostile gets wrong results "
        "accepted until a spot check catches them. Off, every task gets min_quorum "
        "independent agreeing results",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for name, (low, high) in POLICY_LIMITS.items():
            fields[name] = serializers.IntegerField(required=False, min_value=low, max_value=high)
        return fields


def _kernel_field(actor: Actor, organization: Organization, field: str, pk: int | None) -> Any:
    if pk is None:
        return None
    kernel = Kernel.objects.for_actor(actor).filter(organization=organization, pk=pk).first()
    if kernel is None:
        raise serializers.ValidationError(
            {field: [f"No kernel {pk} in the organization {organization.slug}."]}
        )
    return kernel


class CampaignListApi(ApiView, generics.GenericAPIView):
    not_found = "Organization not found."

    parser_classes = [JSONParser, parsers.MultiPartParser, parsers.FormParser]
    pagination_class = IdCursorPagination
    serializer_class = CampaignOutput

    def get_queryset(self) -> Any:
        actor = self.actor()
        campaigns = Campaign.objects.for_actor(actor).select_related("organization")
        slug = self.request.query_params.get("organization")
        if slug is not None:  # an empty slug names no organization: 404, as an unknown one
            campaigns = campaigns.filter(organization=get_organization(actor, slug))
        state = self.request.query_params.get("state")
        if state:
            if state not in Campaign.State.values:
                raise Rejected(f'Unknown state "{state}": use {", ".join(Campaign.State.values)}.')
            campaigns = campaigns.filter(state=state)
        return campaigns

    @extend_schema(
        operation_id="campaigns_list",
        parameters=[
            ORG_FILTER,
            OpenApiParameter("state", str, enum=Campaign.State.values),
        ],
        responses=CampaignOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="campaigns_create",
        summary="Create a campaign (a draft unless `start` is true)",
        description=(
            "JSON for generator and API campaigns; a multipart form to upload a task file "
            "(`task_file`) or static data (`static_data`). In a form, `args`, `env` and "
            "`generator_args` are JSON-encoded. A bad task file is rejected whole, with the "
            "line or object that is wrong."
        ),
        request={
            "application/json": CampaignCreateInput,
            "multipart/form-data": CampaignCreateInput,
        },
        responses={201: CampaignOutput},
    )
    def post(self, request: Request) -> Response:
        actor = self.actor()
        form = CampaignCreateInput(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        organization = organization_for_write(actor, data.pop("organization", None))
        kernels = {
            name: _kernel_field(actor, organization, name, data.pop(name, None))
            for name in ("kernel", "generator", "verifier", "reducer")
        }
        task_file = data.pop("task_file", None)
        static_file = data.pop("static_data", None)
        fmt = data.pop("task_file_format", None)
        start = data.pop("start")
        source = data.pop("input_source", None) or (
            Campaign.InputSource.GENERATOR
            if kernels["generator"] is not None
            else Campaign.InputSource.FILE
            if task_file is not None
            else Campaign.InputSource.API
        )
        static_data = None
        if static_file is not None:
            cap = limits()["STATIC_DATA_MAX_BYTES"]
            if static_file.size > cap:
                raise Rejected(f"Static data is {static_file.size} bytes; the limit is {cap}.")
            static_data = static_file.read()
        campaign = campaign_create(
            organization=organization,
            created_by=actor.user,
            input_source=source,
            static_data=static_data,
            task_file=task_file,
            task_file_format=fmt or guess_format(getattr(task_file, "name", "") or ""),
            **kernels,
            **data,
        )
        if start:
            campaign = campaign_start(campaign=campaign)
        campaign.refresh_from_db()
        return Response(CampaignOutput(campaign).data, status=status.HTTP_201_CREATED)


class CampaignDetailApi(ApiView):
    not_found = "Campaign {campaign_id} not found."

    @extend_schema(operation_id="campaigns_retrieve", responses=CampaignOutput)
    def get(self, request: Request, campaign_id: int) -> Response:
        return Response(CampaignOutput(_campaign(self.actor(), campaign_id)).data)


class CampaignProgressApi(ApiView):
    not_found = "Campaign {campaign_id} not found."

    @extend_schema(
        operation_id="campaigns_progress",
        summary="Progress counters, throughput and ETA (cheap: poll it)",
        responses=ProgressOutput,
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        return Response(progress_data(_campaign(self.actor(), campaign_id)))


# --- lifecycle actions -------------------------------------------------------------------------


class _CampaignActionApi(ApiView):
    not_found = "Campaign {campaign_id} not found."

    def act(self, campaign: Campaign) -> Campaign:
        raise NotImplementedError

    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = _campaign(self.actor(), campaign_id)
        try:
            campaign = self.act(campaign)
        except ServiceError as exc:
            # A well-formed request the campaign's state refuses (pausing a draft, starting a
            # cancelled campaign): a conflict with the resource's state, not bad input.
            raise StateConflict(str(exc)) from None
        return Response(CampaignOutput(campaign).data)


def _action_schema(verb: str, what: str) -> Any:
    return extend_schema(
        operation_id=f"campaigns_{verb}",
        summary=what,
        request=None,
        responses={
            200: CampaignOutput,
            # The error shape is filled in by campaigns.api.schema.ApiSchemaGenerator.
            409: OpenApiResponse(description="The campaign's state does not allow this."),
        },
    )


class CampaignStartApi(_CampaignActionApi):
    @_action_schema("start", "Start a draft campaign: its tasks are offered to workers")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, campaign: Campaign) -> Campaign:
        return campaign_start(campaign=campaign)


class CampaignPauseApi(_CampaignActionApi):
    @_action_schema("pause", "Pause a running campaign: leased tasks go back to the queue")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, campaign: Campaign) -> Campaign:
        return campaign_pause(campaign=campaign)


class CampaignResumeApi(_CampaignActionApi):
    @_action_schema("resume", "Resume a paused campaign")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, campaign: Campaign) -> Campaign:
        return campaign_resume(campaign=campaign)


class CampaignCancelApi(_CampaignActionApi):
    @_action_schema("cancel", "Cancel a campaign for good: outstanding tasks are withdrawn")
    def post(self, request: Request, campaign_id: int) -> Response:
        return super().post(request, campaign_id)

    def act(self, campaign: Campaign) -> Campaign:
        return campaign_cancel(campaign=campaign)


class CampaignRegenerateApi(ApiView):
    not_found = "Campaign {campaign_id} not found."

    class InputSerializer(serializers.Serializer):
        generator_args = StringListField(
            required=False, help_text="new generator arguments (default: keep them)"
        )

        class Meta:
            ref_name = "CampaignRegenerate"

    @extend_schema(
        operation_id="campaigns_regenerate",
        summary="Run a draft or failed generator campaign's generator again",
        request=InputSerializer,
        responses={
            200: CampaignOutput,
            409: OpenApiResponse(
                description="Not a generator campaign, its generator is running, or it is "
                "neither a draft nor failed."
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = _campaign(self.actor(), campaign_id)
        form = self.InputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            campaign = campaign_regenerate(
                campaign=campaign, generator_args=form.validated_data.get("generator_args")
            )
        except ServiceError as exc:
            # The arguments were checked above: what the service refuses is the campaign's kind
            # or state (a conflict, as for the lifecycle actions), not the request.
            raise StateConflict(str(exc)) from None
        campaign.refresh_from_db()
        return Response(CampaignOutput(campaign).data)


# --- tasks -------------------------------------------------------------------------------------

TASK_STATES = {"pending": Task.State.PENDING, "done": Task.State.DONE, "failed": Task.State.FAILED}


class TaskOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    state = serializers.CharField(help_text="pending, done or failed")
    input_size = serializers.IntegerField()
    input_b64 = serializers.CharField(required=False, help_text="only with ?include=input")
    args = serializers.ListField(child=serializers.CharField(), allow_null=True)
    env = serializers.DictField(child=serializers.CharField(), allow_null=True)
    error_count = serializers.IntegerField()
    failure = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, task: Task) -> dict[str, Any]:
        data = {
            "seq": task.seq,
            "state": Task.State(task.state).name.lower(),
            "input_size": task.input_size,  # type: ignore[attr-defined]
            "args": task.args,
            "env": task.env,
            "error_count": task.error_count,
            "failure": task.failure,
            "created_at": serializers.DateTimeField().to_representation(task.created_at),
            "finished_at": (
                serializers.DateTimeField().to_representation(task.finished_at)
                if task.finished_at
                else None
            ),
        }
        if self.context.get("include_input"):
            data["input_b64"] = base64.b64encode(bytes(task.input)).decode()
        return data


class TaskAddedOutput(serializers.Serializer):
    added = serializers.IntegerField()
    tasks_total = serializers.IntegerField()


class TaskListApi(ApiView, generics.GenericAPIView):
    not_found = "Campaign {campaign_id} not found."

    parser_classes = TASK_STREAM_PARSERS
    pagination_class = SeqCursorPagination
    serializer_class = TaskOutput

    def get_queryset(self) -> Any:
        campaign = _campaign(self.actor(), self.kwargs["campaign_id"])
        tasks = Task.objects.filter(campaign=campaign).annotate(input_size=Length("input"))
        if self.request.query_params.get("include") != "input":
            tasks = tasks.defer("input", "checkpoint")
        else:
            tasks = tasks.defer("checkpoint")
        state = self.request.query_params.get("state")
        if state:
            if state not in TASK_STATES:
                raise Rejected(f'Unknown task state "{state}": use pending, done or failed.')
            tasks = tasks.filter(state=TASK_STATES[state])
        return tasks

    @extend_schema(
        operation_id="tasks_list",
        summary="A campaign's tasks in order, a page at a time",
        parameters=[
            OpenApiParameter("state", str, enum=list(TASK_STATES)),
            OpenApiParameter("include", str, enum=["input"], description="add input_b64"),
        ],
        responses=TaskOutput(many=True),
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        context = {"include_input": request.query_params.get("include") == "input"}
        return self.get_paginated_response(TaskOutput(page, many=True, context=context).data)

    @extend_schema(
        operation_id="tasks_add",
        summary="Add tasks in bulk from a JSON Lines or msgpack stream",
        description=(
            "The body is a stream of tasks, parsed as it arrives (constant memory): "
            "`application/x-ndjson` (one JSON value per line) or `application/msgpack` (a "
            "sequence of msgpack objects). A task is a string (its input), or a map with "
            "`input` (text; bytes in msgpack) or `input_b64`, and optional `args` (list of "
            "strings) and `env` (map). All or nothing: a bad line rejects the whole body, "
            "naming the line, and a body with no tasks at all is refused too."
        ),
        request={
            "application/x-ndjson": OpenApiTypes.BINARY,
            "application/msgpack": OpenApiTypes.BINARY,
        },
        responses={201: TaskAddedOutput},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = _campaign(self.actor(), campaign_id)
        # A lazy iterator: TaskStreamParser reads the body as the service consumes it.
        specs = cast(Iterator[TaskSpec], request.data)
        # All or nothing: tasks_add commits batch by batch on its own; inside this transaction
        # its batches become savepoints, so a bad line late in the stream adds nothing.
        with transaction.atomic():
            added = tasks_add(campaign=campaign, specs=specs)
            if not added:
                raise InvalidTasks(
                    "The body held no tasks: send one task per line (JSON Lines, or plain "
                    "text lines as inputs) or a sequence of msgpack objects."
                )
        campaign.refresh_from_db()
        return Response(
            {"added": added, "tasks_total": campaign.tasks_total}, status=status.HTTP_201_CREATED
        )
