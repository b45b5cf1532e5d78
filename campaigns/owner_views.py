"""The owners' web UI: campaigns and kernels of an organization, under /orgs/<slug>/.

Thin views: the organization and campaign come from accounts.tenancy through
campaigns.selectors.campaign_for_actor (404 for outsiders and for missing rows alike; login
required first), input is parsed by campaigns.forms, every write is one call into
campaigns.services and a ServiceError is shown to the person as it is worded. Any member of the
organization may manage its kernels and campaigns (owners additionally manage members and
tokens, in accounts/).

The public demo pages live here too, with their JSON feed: they are readable by anyone for an
approved campaign that has run, and by members always.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Organization, User
from accounts.tenancy import Actor, get_for_actor, get_organization, get_organization_as_owner
from campaigns import selectors
from campaigns.forms import (
    RESULT_FILTERS,
    CampaignCreateForm,
    KernelUploadForm,
    RegenerateForm,
    ResultFilterForm,
)
from campaigns.inputs import guess_format
from campaigns.models import Campaign, Kernel, Result
from campaigns.services import base, creation, generators, kernels, lifecycle, reducer
from campaigns.services.base import ServiceError

ACTIONS = {
    "start": (lifecycle.campaign_start, "Started"),
    "pause": (lifecycle.campaign_pause, "Paused"),
    "resume": (lifecycle.campaign_resume, "Resumed"),
    "cancel": (lifecycle.campaign_cancel, "Cancelled"),
}
EXPORT_FORMATS = (("jsonl", "JSON Lines"), ("csv", "CSV"), ("msgpack", "msgpack"))


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # login_required
    return request.user


def _org_page(
    request: HttpRequest, template: str, org: Organization, tab: str = "campaigns", **context: Any
) -> HttpResponse:
    actor = Actor.from_request(request)
    return render(
        request,
        template,
        {"org": org, "tab": tab, "is_owner": actor.is_owner_of(org), **context},
    )


def _read_upload(upload: Any) -> bytes:
    """The uploaded file's bytes. Django already refuses bodies above
    DATA_UPLOAD_MAX_MEMORY_SIZE; the services check their own, smaller, limits."""
    return b"".join(upload.chunks())


# --- campaigns list and kernels -----------------------------------------------------------------


@login_required
@require_GET
def campaign_list(request: HttpRequest, slug: str) -> HttpResponse:
    org = get_organization(Actor.from_request(request), slug)
    campaigns = list(selectors.organization_campaigns(org))
    counts: dict[str, int] = {}
    for c in campaigns:
        counts[c.state] = counts.get(c.state, 0) + 1
    return _org_page(
        request,
        "campaigns/campaign_list.html",
        org,
        campaigns=campaigns,
        counts=counts,
        kernel_count=selectors.organization_kernels(org).count(),
    )


@login_required
@require_http_methods(["GET", "POST"])
def kernel_list(request: HttpRequest, slug: str) -> HttpResponse:
    org = get_organization(Actor.from_request(request), slug)
    if request.method == "POST":
        form = KernelUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                kernel, created = kernels.kernel_get_or_upload(
                    organization=org,
                    name=form.cleaned_data["name"],
                    data=_read_upload(form.cleaned_data["file"]),
                    kind=form.cleaned_data["kind"],
                    description=form.cleaned_data["description"],
                    created_by=_user(request),
                    manifest=form.cleaned_data["manifest"] or None,
                )
            except ServiceError as exc:
                form.add_error("file", str(exc))
            else:
                if created:
                    messages.success(request, f"Uploaded the kernel “{kernel.name}”.")
                else:
                    # Kernels are content-addressed: the same bytes are the same kernel.
                    messages.info(
                        request,
                        f"This file was already uploaded as the kernel “{kernel.name}”: "
                        "nothing new was stored, and the kernel keeps that name.",
                    )
                return redirect("campaigns:kernel_list", slug=org.slug)
    else:
        form = KernelUploadForm()
    return _org_page(
        request,
        "campaigns/kernel_list.html",
        org,
        tab="kernels",
        kernels=selectors.organization_kernels(org),
        form=form,
        memory_cap=settings.CCGSC["KERNEL_MEMORY_CAP"],
        size_cap=settings.CCGSC["KERNEL_MAX_BYTES"],
    )


@login_required
@require_POST
def kernel_delete(request: HttpRequest, slug: str, kernel_id: int) -> HttpResponse:
    """Owners delete a kernel that no campaign uses; a used one is refused with the reason."""
    org = get_organization_as_owner(Actor.from_request(request), slug)
    kernel = get_object_or_404(Kernel, organization=org, pk=kernel_id)
    try:
        kernels.kernel_delete(kernel=kernel)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Deleted the kernel “{kernel.name}”.")
    return redirect("campaigns:kernel_list", slug=org.slug)


@login_required
@require_http_methods(["GET", "POST"])
def campaign_create(request: HttpRequest, slug: str) -> HttpResponse:
    org = get_organization(Actor.from_request(request), slug)
    form = CampaignCreateForm(
        request.POST if request.method == "POST" else None,
        request.FILES if request.method == "POST" else None,
        organization=org,
        initial={"kernel": request.GET.get("kernel")},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        source = data["input_source"]
        static = data.get("static_data")
        task_file = data.get("task_file") if source == Campaign.InputSource.FILE else None
        policies: dict[str, Any] = form.policies()
        try:
            campaign = creation.campaign_create(
                organization=org,
                name=data["name"],
                description=data["description"],
                kernel=data["kernel"],
                created_by=_user(request),
                args=data["args"],
                env=data["env"],
                static_data=_read_upload(static) if static else None,
                input_source=source,
                generator=data["generator"] if source == Campaign.InputSource.GENERATOR else None,
                generator_args=data["generator_args"],
                task_file=task_file,
                task_file_format=(guess_format(task_file.name) if task_file else "jsonl"),
                verifier=data["verifier"],
                reducer=data["reducer"],
                **policies,
            )
        except ServiceError as exc:
            field = "task_file" if "task file" in str(exc) else None
            form.add_error(field, str(exc))
        else:
            level, text = _start_and_describe(campaign, data["start_now"])
            messages.add_message(request, level, text)
            return redirect("campaigns:campaign_detail", slug=org.slug, campaign_id=campaign.pk)
    return _org_page(
        request,
        "campaigns/campaign_create.html",
        org,
        form=form,
        has_kernels=selectors.organization_kernels(org).exists(),
        max_task_input=base.limits()["TASK_INPUT_MAX_BYTES"],
        # A refused form comes back without its files (browsers never re-send them): say which
        # to choose again.
        dropped_files=(
            {name: upload.name for name in request.FILES if (upload := request.FILES.get(name))}
            if form.errors
            else {}
        ),
    )


def _start_and_describe(campaign: Campaign, start: bool) -> tuple[int, str]:
    """Start a campaign just created if asked to, then say what it is, from its state read
    back from the database rather than from what was asked: a generator runs in the
    background, may already have failed the campaign, and may still be writing the tasks
    (then the message says so instead of promising that the campaign runs; the campaign page
    it leads to shows how the generator ends, live)."""
    refused = ""
    if start:
        try:
            lifecycle.campaign_start(campaign=campaign)
        except ServiceError as exc:  # e.g. its generator failed first
            refused = str(exc)
    campaign.refresh_from_db()
    created = f"Created the campaign “{campaign.name}”"
    State, Input = Campaign.State, Campaign.InputState
    if campaign.state == State.FAILED:
        # The first line: the stderr tail that follows is on the campaign page.
        reason = f": {campaign.error.splitlines()[0]}" if campaign.error.strip() else "."
        again = (
            " Check the generator's arguments below and run it again."
            if campaign.input_source == Campaign.InputSource.GENERATOR
            else ""
        )
        return messages.ERROR, f"{created}, but it failed{reason}{again}"
    if refused:
        return messages.WARNING, f"{created}, but it could not start: {refused}"
    add_tasks = "add them through the API or the ccgsc command line"
    if campaign.state == State.RUNNING:
        if campaign.input_state == Input.GENERATING:
            return messages.SUCCESS, (
                f"{created} and started it. Its generator is still writing the tasks;"
                " workers get them as they arrive."
            )
        if campaign.input_state == Input.NONE:
            return messages.SUCCESS, f"{created}. It is running and waits for tasks: {add_tasks}."
        return messages.SUCCESS, f"{created}. It is running."
    if campaign.state == State.DRAFT:
        if campaign.input_state == Input.GENERATING:
            return messages.SUCCESS, (
                f"{created}. It is a draft while its generator writes the tasks;"
                " start it when you are ready."
            )
        if campaign.input_state == Input.NONE:
            return messages.SUCCESS, (
                f"{created}. It is a draft with no tasks yet: {add_tasks}, then start it."
            )
        return messages.SUCCESS, f"{created}. It is a draft: start it when you are ready."
    return messages.SUCCESS, f"{created}. It is {campaign.state}."


# --- one campaign -------------------------------------------------------------------------------


@login_required
@require_GET
def campaign_detail(request: HttpRequest, slug: str, campaign_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org, campaign = selectors.campaign_for_actor(actor, slug, campaign_id)
    snapshot = selectors.snapshots([campaign.pk]).get(campaign.pk, {})
    return _org_page(
        request,
        "campaigns/campaign_detail.html",
        org,
        campaign=campaign,
        snapshot=snapshot,
        history=selectors.throughput_history(campaign),
        failures=selectors.recent_failures(campaign),
        failed_tasks=selectors.failed_tasks(campaign),
        stalled=selectors.campaign_stalled(campaign),
        reduced=selectors.reduced_preview(campaign.pk) if campaign.reducer_id else None,
        demo=selectors.demo_kind(campaign),
        exports=EXPORT_FORMATS,
        transitions={a: list(states) for a, states in lifecycle.TRANSITIONS.items()},
        regenerate_form=RegenerateForm(
            initial={"generator_args": " ".join(campaign.generator_args)}
        ),
    )


@login_required
@require_POST
def campaign_action(request: HttpRequest, slug: str, campaign_id: int, action: str) -> HttpResponse:
    actor = Actor.from_request(request)
    org, campaign = selectors.campaign_for_actor(actor, slug, campaign_id)
    try:
        if action == "regenerate":
            form = RegenerateForm(request.POST)
            args = form.cleaned_data["generator_args"] if form.is_valid() else None
            generators.campaign_regenerate(campaign=campaign, generator_args=args)
            done = "Regenerating the tasks of"
        elif action in ACTIONS:
            service, done = ACTIONS[action]
            service(campaign=campaign)
        else:
            raise Http404("no such action")
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{done} “{campaign.name}”.")
    return redirect("campaigns:campaign_detail", slug=org.slug, campaign_id=campaign.pk)


@never_cache
@login_required
@require_GET
def campaign_live(request: HttpRequest, slug: str, campaign_id: int) -> JsonResponse:
    """The live snapshot over plain HTTP: the page polls this when WebSockets are blocked."""
    _, campaign = selectors.campaign_for_actor(Actor.from_request(request), slug, campaign_id)
    snapshot = selectors.snapshots([campaign.pk])[campaign.pk]
    body: dict[str, Any] = {"type": "snapshot", "snapshot": snapshot}
    if request.GET.get("reduced"):
        body["reduced"] = selectors.reduced_preview(campaign.pk)
    return JsonResponse(body)


def _cursor(value: str | None) -> int | None:
    """A results page cursor (a result id); anything else is the first page."""
    return int(value) if value and value.isdigit() and len(value) <= 18 else None


@login_required
@require_GET
def campaign_results(request: HttpRequest, slug: str, campaign_id: int) -> HttpResponse:
    org, campaign = selectors.campaign_for_actor(Actor.from_request(request), slug, campaign_id)
    filters = ResultFilterForm(request.GET)
    show, seq = "all", None
    if filters.is_valid():
        show = filters.cleaned_data["show"] or "all"
        seq = filters.cleaned_data["seq"]
    # Keyset pages (?before=ID older, ?after=ID newer): the same cost on the first page and
    # the thousandth, however many results (no COUNT, no OFFSET).
    page = selectors.results_page(
        campaign,
        show,
        seq,
        before=_cursor(request.GET.get("before")),
        after=_cursor(request.GET.get("after")),
    )
    previews = selectors.output_previews([r.pk for r in page.rows])
    reasons = selectors.validation_reasons(campaign, page.rows)
    rows = [(r, previews.get(r.pk), reasons.get(r.pk)) for r in page.rows]
    query = request.GET.copy()
    for key in ("before", "after", "page"):
        query.pop(key, None)
    return _org_page(
        request,
        "campaigns/campaign_results.html",
        org,
        campaign=campaign,
        page=page,
        rows=rows,
        show=show,
        seq=seq,
        filters=RESULT_FILTERS,
        query=query.urlencode(),
        exports=EXPORT_FORMATS,
    )


@login_required
@require_GET
def result_output(
    request: HttpRequest, slug: str, campaign_id: int, result_id: int
) -> HttpResponse:
    """One result's raw output as a download (never rendered: results are untrusted)."""
    actor = Actor.from_request(request)
    _, campaign = selectors.campaign_for_actor(actor, slug, campaign_id)
    result = get_for_actor(
        Result.objects.filter(campaign=campaign).select_related("task"), actor, pk=result_id
    )
    if result.output is None:
        raise Http404("this result has no output")
    response = HttpResponse(bytes(result.output), content_type="application/octet-stream")
    name = f"campaign-{campaign.pk}-task-{result.task.seq}-result-{result.pk}.bin"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


# --- public demo pages --------------------------------------------------------------------------


def _demo_campaign(request: HttpRequest, campaign_id: int) -> tuple[Campaign, str]:
    campaign = get_object_or_404(
        Campaign.objects.select_related("kernel", "organization"), pk=campaign_id
    )
    kind = selectors.demo_kind(campaign)
    if kind is None or not selectors.can_view_demo(Actor.from_request(request), campaign):
        raise Http404("not found")
    return campaign, kind


@require_GET
def demo_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign, kind = _demo_campaign(request, campaign_id)
    twin = selectors.demo_twin(Actor.from_request(request), campaign)
    return render(
        request,
        f"campaigns/demo_{kind}.html",
        {
            "campaign": campaign,
            "kind": kind,
            "reduced": selectors.reduced_preview(campaign.pk),
            "twin": twin,
            # The page's campaign first, then its twin (demo_mandelbrot_deep.html).
            "sides": [{"role": "self", "campaign": campaign}]
            + ([{"role": "twin", "campaign": twin}] if twin else []),
        },
    )


@never_cache
@require_GET
def demo_feed(request: HttpRequest, campaign_id: int) -> JsonResponse:
    """New results of a demo campaign since `cursor` (see selectors.demo_feed)."""
    campaign, kind = _demo_campaign(request, campaign_id)
    if campaign.reducer_id and campaign.state == Campaign.State.RUNNING and campaign.tasks_done:
        # People watching the demo keep its running reduction fresh (throttled).
        reducer.campaign_reduce_soon(campaign_id=campaign.pk)
    try:
        tail: int | None = min(int(request.GET["tail"]), selectors.FEED_PAGE)
    except (KeyError, ValueError):
        tail = None
    horizon = selectors.feed_horizon(campaign)
    body = selectors.demo_feed(campaign, request.GET.get("cursor"), tail=tail, horizon=horizon)
    if kind == "primes":
        body["summary"] = {"primes": selectors.primes_found(campaign, horizon)}
    return JsonResponse(body)
