"""The owners' web UI: every page with the owner, a teammate, an outsider (404) and an anonymous
visitor (login redirect); uploads and creation through the services with their messages shown;
lifecycle buttons; results browser; worker-session data; the public demo pages and feed."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import wasmtime
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.models import User
from campaigns import services
from campaigns.models import Campaign, Result, Task
from campaigns.templatetags.sizes import binary_size
from tests.conftest import fail_item, kernel_bytes, ok_item
from workers import scheduler
from workers.models import WorkerSession


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# The create form's policy fields at their usual values.
FORM_POLICIES = {
    "priority": 10,
    "task_timeout": 300,
    "max_attempts": 5,
    "points_per_task": 10,
    "min_quorum": 1,
    "target_replicas": 1,
    "max_error_replicas": 5,
    "max_total_replicas": 10,
}


def complete_tasks(campaign: Campaign, outputs: dict[int, bytes] | None = None, n: int = 100):
    """Lease and answer up to `n` tasks through the real scheduler (one native session)."""
    session = WorkerSession.objects.create(
        kind="native", slots=n, organization=campaign.organization
    )
    info = scheduler.SessionInfo(
        id=session.pk, kind="native", organization_id=campaign.organization_id
    )
    scheduler.work_available()  # forget per-process caches from earlier tests (ids are reused)
    leases = scheduler.lease(info, n)
    seqs = dict(Task.objects.filter(pk__in=[x.task for x in leases]).values_list("pk", "seq"))
    items = [ok_item(x, (outputs or {}).get(seqs[x.task], x.input)) for x in leases]
    scheduler.submit_results(info, items)
    return session


def fail_one(campaign: Campaign, stderr: str = "boom: bad input\n") -> None:
    session = WorkerSession.objects.create(
        kind="native", slots=1, organization=campaign.organization
    )
    info = scheduler.SessionInfo(
        id=session.pk, kind="native", organization_id=campaign.organization_id
    )
    scheduler.work_available()
    (lease,) = scheduler.lease(info, 1)
    scheduler.submit_results(
        info,
        [fail_item(lease, code=2, stderr=stderr)],
    )


# --- access: owner / teammate / outsider / anonymous --------------------------------------------


def org_urls(slug: str) -> list[str]:
    return [
        reverse("campaigns:campaign_list", args=[slug]),
        reverse("campaigns:kernel_list", args=[slug]),
        reverse("campaigns:campaign_create", args=[slug]),
    ]


def campaign_urls(slug: str, campaign: Campaign) -> list[str]:
    result = Result.objects.filter(campaign=campaign).first()
    assert result is not None
    return [
        reverse("campaigns:campaign_detail", args=[slug, campaign.pk]),
        reverse("campaigns:campaign_live", args=[slug, campaign.pk]),
        reverse("campaigns:campaign_results", args=[slug, campaign.pk]),
        reverse("campaigns:result_output", args=[slug, campaign.pk, result.pk]),
        reverse("campaign-workers", args=[slug, campaign.pk]),
    ]


@pytest.mark.django_db
def test_members_see_every_page(people, make_campaign):
    campaign = make_campaign(["a", "b", "c"])
    complete_tasks(campaign)
    for user in (people.owner, people.teammate):
        client = client_for(user)
        for url in org_urls("alpha") + campaign_urls("alpha", campaign):
            response = client.get(url)
            assert response.status_code == 200, (user, url)


@pytest.mark.django_db
def test_outsider_gets_404_everywhere(people, make_campaign):
    campaign = make_campaign(["a", "b"])
    complete_tasks(campaign, n=1)
    client = client_for(people.outsider)
    for url in org_urls("alpha") + campaign_urls("alpha", campaign):
        assert client.get(url).status_code == 404, url
    # Their own organization's slug with our campaign's id is a 404 as well.
    for url in campaign_urls("beta", campaign):
        assert client.get(url).status_code == 404, url
    for action in ("start", "pause", "resume", "cancel", "regenerate"):
        url = reverse("campaigns:campaign_action", args=["alpha", campaign.pk, action])
        assert client.post(url).status_code == 404
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(people, make_campaign):
    campaign = make_campaign(["a", "b"])
    complete_tasks(campaign, n=1)
    client = Client()
    for url in org_urls("alpha") + campaign_urls("alpha", campaign):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("account_login")), url
    url = reverse("campaigns:campaign_action", args=["alpha", campaign.pk, "pause"])
    assert client.post(url).status_code == 302
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING


@pytest.mark.django_db
def test_campaigns_tab_appears_on_organization_pages(people):
    response = client_for(people.owner).get(reverse("accounts:org_home", args=["alpha"]))
    assert reverse("campaigns:campaign_list", args=["alpha"]).encode() in response.content


@pytest.mark.django_db
def test_kernels_tab_on_organization_pages_marks_the_current_one(people):
    client = client_for(people.teammate)
    kernels = reverse("campaigns:kernel_list", args=["alpha"])
    pages = [
        (reverse("accounts:org_home", args=["alpha"]), "Overview"),
        (reverse("campaigns:campaign_list", args=["alpha"]), "Campaigns"),
        (kernels, "Kernels"),
        (reverse("accounts:org_members", args=["alpha"]), "Members"),
    ]
    for url, current in pages:
        html = client.get(url).content.decode()
        nav = html[html.index('<nav aria-label="Organization">') :]
        nav = nav[: nav.index("</nav>")]
        assert f'<a href="{kernels}"' in nav, url
        assert re.findall(r'aria-current="page">([^<]+)</a>', nav) == [current], url


# --- the dashboard list ----------------------------------------------------------------


@pytest.mark.django_db
def test_campaign_list_shows_state_and_progress(people, make_campaign):
    campaign = make_campaign(["1", "2", "3", "4"])
    complete_tasks(campaign, n=1)
    make_campaign(["x"], org=people.other_org)  # never listed for alpha
    response = client_for(people.teammate).get(reverse("campaigns:campaign_list", args=["alpha"]))
    html = response.content.decode()
    assert "echo campaign" in html
    assert 'class="badge badge-running"' in html
    assert "width: 25%" in html
    assert html.count("<tr data-id=") == 1


# --- kernels ----------------------------------------------------------------


@pytest.mark.django_db
def test_kernel_upload_and_plain_errors(people):
    client = client_for(people.teammate)
    url = reverse("campaigns:kernel_list", args=["alpha"])
    wasm = io.BytesIO(kernel_bytes("primes"))
    wasm.name = "primes.wasm"
    response = client.post(url, {"file": wasm, "kind": "wasm"})
    assert response.status_code == 302
    kernel = people.org.kernels.get()
    assert kernel.name == "primes" and kernel.created_by == people.teammate

    # A module using threads: the service's sentence, shown as is.
    threads = io.BytesIO(wasmtime.wat2wasm('(module (memory (export "memory") 1 2 shared))'))
    threads.name = "threads.wasm"
    response = client.post(url, {"file": threads, "kind": "wasm"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="upload-errors"' in html
    assert "The kernel was rejected" in html and "threads are not supported" in html
    garbage = io.BytesIO(b"not wasm at all")
    garbage.name = "x.wasm"
    html = client.post(url, {"file": garbage, "kind": "wasm"}).content.decode()
    assert "The kernel was rejected: the module does not compile" in html
    empty = client.post(url, {"kind": "wasm"}).content.decode()
    assert "This field is required" in empty
    assert people.org.kernels.count() == 1


@pytest.mark.django_db
def test_the_same_kernel_bytes_under_a_new_name_say_it_was_already_uploaded(people):
    client = client_for(people.owner)
    url = reverse("campaigns:kernel_list", args=["alpha"])
    services.kernel_upload(
        organization=people.org, name="montecarlo", data=kernel_bytes("montecarlo")
    )
    again = io.BytesIO(kernel_bytes("montecarlo"))
    again.name = "pi.wasm"
    response = client.post(url, {"file": again, "name": "pi", "kind": "wasm"}, follow=True)
    assert response.status_code == 200
    assert [m.message for m in response.context["messages"]] == [
        "This file was already uploaded as the kernel “montecarlo”: nothing new was stored,"
        " and the kernel keeps that name."
    ]
    assert "Uploaded the kernel" not in response.content.decode()
    assert [k.name for k in people.org.kernels.all()] == ["montecarlo"]
    # A new file still says it was uploaded.
    echo = io.BytesIO(kernel_bytes("echo"))
    echo.name = "echo.wasm"
    response = client.post(url, {"file": echo, "kind": "wasm"}, follow=True)
    assert "Uploaded the kernel “echo”." in response.content.decode()


def test_kernel_page_states_both_limits_and_sizes_in_binary_units(people, settings):
    settings.CCGSC = {
        **settings.CCGSC,
        "KERNEL_MEMORY_CAP": 256 * 1024 * 1024,
        "KERNEL_MAX_BYTES": 16 * 1024 * 1024,
    }
    services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))
    response = client_for(people.owner).get(reverse("campaigns:kernel_list", args=["alpha"]))
    html = response.content.decode()
    assert "memory maximum of at most 256\xa0MiB. The file may be at most 16\xa0MiB." in html
    assert "64\xa0MiB" in html  # the echo kernel's declared memory maximum
    # No decimal units after a number (a bare "KB" may well occur in the CSRF token).
    assert not re.search(r"\d[\s\xa0](?:KB|MB|GB)\b", html)
    # The kind select keeps the width of its longest option (it was cut to "WebAssembly (WAS").
    start = html.index('<select name="kind"')
    wrapper = html[html.rindex("<div", 0, start) : start]
    assert 'style="flex: 0 0 auto"' in wrapper


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0\xa0bytes"),
        (1, "1\xa0byte"),
        (1023, "1023\xa0bytes"),
        (1024, "1\xa0KiB"),
        (1536, "1.5\xa0KiB"),
        (64 * 1024 * 1024, "64\xa0MiB"),
        (int(2.5 * 1024**3), "2.5\xa0GiB"),
        (None, ""),
        ("", ""),
    ],
)
def test_binary_size_filter(size, text):
    assert binary_size(size) == text


# --- campaign creation ----------------------------------------------------------------


def upload(org, name: str):
    return services.kernel_upload(organization=org, name=name, data=kernel_bytes(name))


@pytest.mark.django_db
def test_create_generator_campaign_with_policies_and_start(
    people, django_capture_on_commit_callbacks
):
    kernel, gen = upload(people.org, "primes"), upload(people.org, "primes_gen")
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(people.teammate).post(
            reverse("campaigns:campaign_create", args=["alpha"]),
            {
                "name": "Primes to 1000",
                "kernel": kernel.pk,
                "input_source": "generator",
                "generator": gen.pk,
                "generator_args": "1000 100",
                "args": "",
                "env": "MODE=fast\nEMPTY=",
                "priority": 20,
                "task_timeout": 60,
                "max_attempts": 3,
                "points_per_task": 5,
                "min_quorum": 1,
                "target_replicas": 1,
                "max_error_replicas": 5,
                "max_total_replicas": 4,
                "start_now": "on",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    campaign = Campaign.objects.get(name="Primes to 1000")
    assert response["Location"] == reverse("campaigns:campaign_detail", args=["alpha", campaign.pk])
    assert campaign.state == Campaign.State.RUNNING
    assert campaign.tasks_total == 10
    assert campaign.env == {"MODE": "fast", "EMPTY": ""}
    assert (campaign.priority, campaign.task_timeout, campaign.max_attempts) == (20, 60, 3)
    assert campaign.points_per_task == 5 and campaign.max_total_replicas == 4
    assert campaign.created_by == people.teammate and not campaign.approved


@pytest.mark.django_db
def test_create_task_file_campaign_and_bad_file_message(people):
    kernel = upload(people.org, "echo")
    client = client_for(people.owner)
    url = reverse("campaigns:campaign_create", args=["alpha"])
    base = {
        "name": "From a file",
        "kernel": kernel.pk,
        "input_source": "file",
        "args": '-x "two words"',
        **FORM_POLICIES,
    }
    bad = io.BytesIO(b'"ok"\n{"input": 5}\n')
    bad.name = "tasks.jsonl"
    html = client.post(url, {**base, "task_file": bad}).content.decode()
    assert "The task file was rejected: line 2" in html
    assert not Campaign.objects.filter(name="From a file").exists()

    good = io.BytesIO(b'"one"\n{"input": "two", "args": ["-v"]}\n')
    good.name = "tasks.jsonl"
    static = io.BytesIO(b"shared bytes")
    static.name = "static.bin"
    response = client.post(url, {**base, "task_file": good, "static_data": static})
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="From a file")
    assert campaign.tasks_total == 2 and campaign.state == Campaign.State.DRAFT
    assert campaign.args == ["-x", "two words"]
    assert campaign.static_data is not None and bytes(campaign.static_data.data) == b"shared bytes"


def post_create(user: User, **fields: Any):
    """POST the create form with default policies; returns the response and its messages as
    (level tag, text)."""
    response = client_for(user).post(
        reverse("campaigns:campaign_create", args=["alpha"]),
        {
            "args": "",
            **FORM_POLICIES,
            **fields,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return response, [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def bad_generator_fields(people) -> dict[str, Any]:
    kernel, gen = upload(people.org, "montecarlo"), upload(people.org, "montecarlo_gen")
    return {
        "name": "gen bad args",
        "kernel": kernel.pk,
        "input_source": "generator",
        "generator": gen.pk,
        "generator_args": "not a number",  # montecarlo_gen prints its usage and exits 2
        "start_now": "on",
    }


@pytest.mark.django_db(transaction=True)
def test_creating_a_campaign_whose_generator_fails_at_once_says_so(people):
    # Committed for real: the (eager) generator job runs, and fails, before the view answers.
    _, said = post_create(people.owner, **bad_generator_fields(people))
    campaign = Campaign.objects.get(name="gen bad args")
    assert campaign.state == Campaign.State.FAILED
    assert said == [
        (
            "error",
            "Created the campaign “gen bad args”, but it failed: The generator failed (exit):"
            " The kernel exited with status 2. Check the generator's arguments below and run"
            " it again.",
        )
    ]


@pytest.mark.django_db
def test_creating_a_campaign_whose_generator_is_still_running_promises_nothing(
    people, django_capture_on_commit_callbacks
):
    # The generator job runs only after the view has answered (as with background jobs),
    # and then fails: the message must not have said that the campaign runs.
    with django_capture_on_commit_callbacks(execute=True):
        response, said = post_create(people.owner, **bad_generator_fields(people))
    assert said == [
        (
            "success",
            "Created the campaign “gen bad args” and started it. Its generator is still"
            " writing the tasks; workers get them as they arrive.",
        )
    ]
    assert Campaign.objects.get(name="gen bad args").state == Campaign.State.FAILED
    page = client_for(people.owner).get(response["Location"]).content.decode()
    assert "It is running" not in page and "usage: montecarlo_gen" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (False, "It is a draft with no tasks yet: add them through the API or the ccgsc"),
        (True, "It is running and waits for tasks: add them through the API or the ccgsc"),
    ],
)
def test_creating_an_api_campaign_says_how_tasks_arrive(people, start, expected):
    kernel = upload(people.org, "echo")
    fields = {"name": "by api", "kernel": kernel.pk, "input_source": "api"}
    _, said = post_create(people.owner, **fields, **({"start_now": "on"} if start else {}))
    ((level, text),) = said
    assert level == "success" and expected in text


@pytest.mark.django_db
def test_create_form_errors_are_shown(people):
    kernel = upload(people.org, "echo")
    other_kernel = upload(people.other_org, "primes")
    client = client_for(people.owner)
    url = reverse("campaigns:campaign_create", args=["alpha"])
    html = client.post(
        url,
        {
            "name": "x",
            "kernel": other_kernel.pk,  # another organization's kernel is not a choice
            "input_source": "generator",
            "priority": 10,
            "task_timeout": 300,
            "max_attempts": 5,
            "points_per_task": 10,
            "min_quorum": 3,
            "target_replicas": 2,
            "max_error_replicas": 5,
            "max_total_replicas": 10,
            "args": '"unclosed',
        },
    ).content.decode()
    assert "Select a valid choice" in html
    assert "Choose the generator kernel" in html
    assert "Issue at least as many replicas as the quorum" in html
    assert "cannot be parsed" in html
    assert not Campaign.objects.exists()
    # The environment follows the rules of the API and task files (campaigns.inputs).
    html = client.post(
        url, {"name": "x", "kernel": kernel.pk, "input_source": "api", "env": "A=1\n=2"}
    ).content.decode()
    assert "Line 2: write NAME=value." in html
    assert not Campaign.objects.exists()
    # The kernel choices are this organization's only.
    page = client.get(url).content.decode()
    # (Within the kernel field: a primary key may equal another field's value, e.g. 300 s.)
    start = page.index('<select name="kernel"')
    choices = page[start : page.index("</select>", start)]
    assert f'value="{kernel.pk}"' in choices and f'value="{other_kernel.pk}"' not in choices


# --- lifecycle buttons ----------------------------------------------------------------


@pytest.mark.django_db
def test_lifecycle_buttons_for_a_teammate(people, make_campaign):
    campaign = make_campaign(["a", "b"], start=False)
    client = client_for(people.teammate)

    def act(action: str) -> str:
        url = reverse("campaigns:campaign_action", args=["alpha", campaign.pk, action])
        response = client.post(url, follow=True)
        assert response.status_code == 200
        campaign.refresh_from_db()
        return response.content.decode()

    assert "Started" in act("start") and campaign.state == Campaign.State.RUNNING
    assert "Paused" in act("pause") and campaign.state == Campaign.State.PAUSED
    html = act("pause")
    assert "A paused campaign cannot be paused." in html  # the service's message
    assert "Resumed" in act("resume") and campaign.state == Campaign.State.RUNNING
    assert "Cancelled" in act("cancel") and campaign.state == Campaign.State.CANCELLED
    assert "A cancelled campaign cannot be started." in act("start")
    bogus = reverse("campaigns:campaign_action", args=["alpha", campaign.pk, "explode"])
    assert client.post(bogus).status_code == 404
    get = reverse("campaigns:campaign_action", args=["alpha", campaign.pk, "start"])
    assert client.get(get).status_code == 405


@pytest.mark.django_db
def test_regenerate_a_failed_generator(people, django_capture_on_commit_callbacks):
    kernel, gen = upload(people.org, "primes"), upload(people.org, "primes_gen")
    with django_capture_on_commit_callbacks(execute=True):
        campaign = services.campaign_create(
            organization=people.org,
            name="bad gen",
            kernel=kernel,
            input_source=Campaign.InputSource.GENERATOR,
            generator=gen,
            generator_args=["10", "0"],  # CHUNK 0: the generator refuses
        )
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.FAILED
    client = client_for(people.owner)
    page = client.get(reverse("campaigns:campaign_detail", args=["alpha", campaign.pk]))
    html = page.content.decode()
    assert "The generator failed" in html and 'id="regenerate"' in html
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("campaigns:campaign_action", args=["alpha", campaign.pk, "regenerate"]),
            {"generator_args": "100 10"},
            follow=True,
        )
    assert "Regenerating" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DRAFT and campaign.tasks_total == 10
    assert campaign.generator_args == ["100", "10"]


# --- the campaign page ----------------------------------------------------------------


@pytest.mark.django_db
def test_campaign_page_shows_progress_failures_and_approval(people, make_campaign):
    campaign = make_campaign(["a", "b", "c", "d"], approved=False, max_attempts=1)
    complete_tasks(campaign, n=2)
    fail_one(campaign, stderr="kernel: division by zero at line 7\n")
    client = client_for(people.teammate)
    html = client.get(reverse("campaigns:campaign_detail", args=["alpha", campaign.pk])).content
    page = html.decode()
    assert "width: 75%" in page  # 2 done + 1 failed of 4
    assert "awaiting approval" in page
    assert "division by zero at line 7" in page
    assert 'id="throughput-history"' in page and 'id="throughput-chart"' in page
    assert f"/ws/campaigns/{campaign.pk}/" in page
    for fmt in ("jsonl", "csv", "msgpack"):
        assert f"/api/v1/campaigns/{campaign.pk}/results?format={fmt}" in page
    # the history has the two results returned a moment ago
    marker = 'id="throughput-history" type="application/json">'
    start = page.index(marker) + len(marker)
    history = json.loads(page[start : page.index("</script>", start)])
    assert sum(rate for _, rate in history) * 5 == pytest.approx(2)

    Campaign.objects.filter(pk=campaign.pk).update(approved=True)
    again = client.get(reverse("campaigns:campaign_detail", args=["alpha", campaign.pk]))
    assert "approved for all volunteers" in again.content.decode()


@pytest.mark.django_db
def test_live_json_snapshot(people, make_campaign):
    campaign = make_campaign(["a", "b", "c"])
    session = WorkerSession.objects.create(kind="native", slots=2)
    scheduler.work_available()
    scheduler.lease(scheduler.SessionInfo(id=session.pk), 2)
    response = client_for(people.owner).get(
        reverse("campaigns:campaign_live", args=["alpha", campaign.pk])
    )
    snapshot = response.json()["snapshot"]
    assert snapshot["state"] == "running"
    assert snapshot["tasks_total"] == 3 and snapshot["leased"] == 2 and snapshot["workers"] == 1
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_worker_sessions_endpoint(people, make_campaign):
    campaign = make_campaign([str(i) for i in range(6)])
    busy = complete_tasks(campaign, n=2)
    WorkerSession.objects.filter(pk=busy.pk).update(tasks_done=2, busy_ms=900, idle_ms=100)
    holder = WorkerSession.objects.create(kind="browser", slots=4, user=people.outsider)
    scheduler.lease(scheduler.SessionInfo(id=holder.pk, kind="browser"), 3)
    WorkerSession.objects.create(kind="browser", slots=1, idle_ms=5000)  # never did anything
    data = client_for(people.owner).get(reverse("campaign-workers", args=["alpha", campaign.pk]))
    body = data.json()
    rows = {row["id"]: row for row in body["campaign"]["sessions"]}
    assert set(rows) == {busy.pk, holder.pk}
    assert rows[busy.pk]["who"] == "your organization" and rows[busy.pk]["recent_ok"] == 2
    assert rows[busy.pk]["idle_share"] == 0.1
    assert rows[holder.pk]["who"] == "signed-in volunteer"  # never the volunteer's identity
    assert rows[holder.pk]["in_flight"] == 3
    assert "out@beta.test" not in data.content.decode()
    assert (body["campaign"]["value"], body["campaign"]["non_value"]) == (1, 1)
    pool = body["pool"]
    assert pool["sessions"] == 3 and pool["value"] == 1 and pool["non_value"] == 2
    assert pool["downtime_s"] == 5.1 and pool["browser"] == 2 and pool["native"] == 1


# --- results browser ----------------------------------------------------------------


@pytest.mark.django_db
def test_results_browser_previews_filters_and_download(people, make_campaign):
    campaign = make_campaign(["text", "bin", "c"], max_attempts=1)
    complete_tasks(campaign, outputs={0: b"hello world\n", 1: bytes(range(250, 256)) + b"\0"}, n=2)
    fail_one(campaign, stderr="oops on stderr")
    client = client_for(people.teammate)
    url = reverse("campaigns:campaign_results", args=["alpha", campaign.pk])
    html = client.get(url).content.decode()
    assert "hello world" in html
    assert "fa fb fc fd fe ff 00" in html and "hex" in html
    assert "oops on stderr" in html
    errors = client.get(url, {"show": "errors"}).content.decode()
    assert "oops on stderr" in errors and "hello world" not in errors
    only = client.get(url, {"seq": 0}).content.decode()
    assert "hello world" in only and "fa fb" not in only
    result = Result.objects.get(campaign=campaign, task__seq=1, outcome=Result.Outcome.SUCCESS)
    download = client.get(
        reverse("campaigns:result_output", args=["alpha", campaign.pk, result.pk])
    )
    assert download.content == bytes(range(250, 256)) + b"\0"
    assert download["Content-Type"] == "application/octet-stream"
    assert "attachment" in download["Content-Disposition"]
    # A result of another organization's campaign through ours: 404.
    other = make_campaign(["z"], org=people.other_org)
    complete_tasks(other)
    foreign = Result.objects.get(campaign=other)
    url = reverse("campaigns:result_output", args=["alpha", campaign.pk, foreign.pk])
    assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_results_browser_paginates(people, make_campaign):
    campaign = make_campaign([str(i) for i in range(120)])
    complete_tasks(campaign, n=120)
    client = client_for(people.owner)
    url = reverse("campaigns:campaign_results", args=["alpha", campaign.pk])
    first = client.get(url).content.decode()
    assert first.count("<tr>") == 51  # header + 50 rows
    assert "120 of 120 tasks done" in first and "after=" not in first
    seqs = [int(x) for x in re.findall(r'<td class="num mono">#(\d+)</td>', first)]
    older = re.search(r"before=(\d+)", first)
    assert older is not None
    second = client.get(url, {"before": older.group(1)}).content.decode()
    third_cursor = re.search(r"before=(\d+)", second)
    assert third_cursor is not None and second.count("<tr>") == 51
    last = client.get(url, {"before": third_cursor.group(1)}).content.decode()
    assert last.count("<tr>") == 21 and "before=" not in last
    # Back from the second page: the first page again, newest first.
    newer = re.search(r"after=(\d+)", second)
    assert newer is not None
    again = client.get(url, {"after": newer.group(1)}).content.decode()
    assert [int(x) for x in re.findall(r'<td class="num mono">#(\d+)</td>', again)] == seqs
    assert "after=" not in again and "before=" in again
    # A cursor that is not an id is the first page.
    assert client.get(url, {"before": "x"}).content.decode().count("<tr>") == 51


# --- demo pages ----------------------------------------------------------------


def _demo(people, kernel: str, inputs: list[str], approved: bool = True) -> Campaign:
    k = upload(people.org, kernel)
    campaign = services.campaign_create(
        organization=people.org, name=f"{kernel} demo", kernel=k, approved=approved
    )
    from campaigns.inputs import TaskSpec

    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=i.encode()) for i in inputs])
    services.campaign_start(campaign=campaign)
    campaign.refresh_from_db()
    return campaign


@pytest.mark.django_db
def test_demo_pages_are_public_for_approved_campaigns(people):
    primes = _demo(people, "primes", ["0 100", "100 200"])
    mandel = _demo(people, "mandelbrot", ["40 30 0 0 40 30 100"])
    hidden = _demo(people, "montecarlo", ["1 1000"], approved=False)
    anon = Client()
    assert "primes-list" in anon.get(reverse("campaigns:demo", args=[primes.pk])).content.decode()
    assert (
        "mandelbrot-canvas"
        in anon.get(reverse("campaigns:demo", args=[mandel.pk])).content.decode()
    )
    assert anon.get(reverse("campaigns:demo", args=[hidden.pk])).status_code == 404
    assert anon.get(reverse("campaigns:demo_feed", args=[hidden.pk])).status_code == 404
    assert (
        client_for(people.outsider).get(reverse("campaigns:demo", args=[hidden.pk])).status_code
        == 404
    )
    # Members see their own unapproved campaign's demo.
    assert (
        client_for(people.teammate).get(reverse("campaigns:demo", args=[hidden.pk])).status_code
        == 200
    )
    running = anon.get(reverse("campaigns:demo", args=[primes.pk])).content.decode()
    assert "Lend your CPU to it" in running
    # Only native workers ran here: the page claims no browsers.
    complete_tasks(primes)
    html = anon.get(reverse("campaigns:demo", args=[primes.pk])).content.decode()
    assert "computed by this platform's workers" in html
    assert "volunteers' browsers" not in html
    assert "Lend your CPU to it" not in html  # nothing left to lend it for
    # Without a reducer, the Monte Carlo page shows no reducer's answer.
    member_view = client_for(people.teammate).get(reverse("campaigns:demo", args=[hidden.pk]))
    assert "pi-estimate" in member_view.content.decode()
    assert "The reducer's answer" not in member_view.content.decode()
    # A campaign whose kernel is no demo kernel has no demo page.
    plain = _demo(people, "echo", ["x"])
    assert anon.get(reverse("campaigns:demo", args=[plain.pk])).status_code == 404


@pytest.mark.django_db
def test_demo_feed_pages_through_results_in_return_order(people, monkeypatch):
    from campaigns import selectors

    # Results count as settled at once here (tests/test_demo_feed.py tests the settling).
    monkeypatch.setattr(selectors, "FEED_SETTLE", timedelta(0))
    campaign = _demo(people, "primes", [f"{i * 10} {i * 10 + 10}" for i in range(30)])
    outputs: dict[int, bytes] = {}
    complete_tasks(campaign, n=12)
    complete_tasks(campaign, n=12)
    anon = Client()
    url = reverse("campaigns:demo_feed", args=[campaign.pk])
    seen: list[int] = []
    cursor = ""
    for _ in range(10):
        body: dict[str, Any] = anon.get(url, {"cursor": cursor}).json()
        seen += [r["seq"] for r in body["results"]]
        if not body["more"]:
            break
        cursor = body["cursor"]
    # feed pages are FEED_PAGE long; here all 24 fit one page, then nothing new
    assert sorted(seen) == list(range(24))
    assert body["campaign"]["tasks_done"] == 24
    again = anon.get(url, {"cursor": body["cursor"]}).json()
    assert again["results"] == []
    complete_tasks(campaign, n=6)
    new = anon.get(url, {"cursor": body["cursor"]}).json()
    assert sorted(r["seq"] for r in new["results"]) == list(range(24, 30))
    first = new["results"][0]
    assert base64.b64decode(first["input"]).decode().count(" ") == 1
    assert outputs == {}


@pytest.mark.django_db
def test_demo_feed_small_pages(people, monkeypatch):
    from campaigns import selectors

    campaign = _demo(people, "primes", [f"{i} {i + 1}" for i in range(9)])
    complete_tasks(campaign, n=9)
    seen, cursor = [], None
    while True:
        body = selectors.demo_feed(campaign, cursor, limit=2)
        seen += [r["seq"] for r in body["results"]]
        cursor = body["cursor"]
        if not body["results"]:
            break
    assert sorted(seen) == list(range(9)) and len(seen) == 9


@pytest.mark.django_db
def test_primes_feed_tail_and_server_side_count(people, monkeypatch):
    from django.core.cache import cache

    from campaigns import selectors
    from tests.test_reducer import run_kernel

    monkeypatch.setattr(selectors, "FEED_SETTLE", timedelta(0))  # as above
    cache.clear()
    inputs = [f"{i * 100} {i * 100 + 100}" for i in range(10)]
    campaign = _demo(people, "primes", inputs)
    outputs = {seq: run_kernel("primes", i.encode()) for seq, i in enumerate(inputs)}
    complete_tasks(campaign, outputs=outputs, n=6)
    anon = Client()
    url = reverse("campaigns:demo_feed", args=[campaign.pk])
    body = anon.get(url, {"tail": 3}).json()
    assert len(body["results"]) == 3 and body["more"] is False
    assert body["summary"]["primes"] == sum(outputs[s].count(b"\n") for s in range(6))
    complete_tasks(campaign, outputs=outputs, n=4)
    later = anon.get(url, {"cursor": body["cursor"]}).json()
    assert sorted(r["seq"] for r in later["results"]) == [6, 7, 8, 9]
    assert later["summary"]["primes"] == 168  # primes below 1000


# --- admin --------------------------------------------------------------------------------------


@pytest.fixture
def admin_client_(people) -> Client:
    admin = User.objects.create_superuser("root@ccgsc.test", "pw-root-123")
    return client_for(admin)


@pytest.mark.django_db
def test_admin_pages_for_every_model(people, make_campaign, admin_client_):
    campaign = make_campaign(["a", "b"], approved=False, max_attempts=1)
    complete_tasks(campaign, n=1)
    fail_one(campaign)
    session = WorkerSession.objects.first()
    assert session is not None
    task = Task.objects.filter(campaign=campaign).first()
    result = Result.objects.filter(campaign=campaign, outcome=Result.Outcome.SUCCESS).first()
    assert task is not None and result is not None
    blob = campaign.kernel.blob
    pages = {
        "campaigns_blob": blob.pk,
        "campaigns_kernel": campaign.kernel.pk,
        "campaigns_campaign": campaign.pk,
        "campaigns_task": task.pk,
        "campaigns_result": result.pk,
        "workers_workersession": session.pk,
    }
    for name, pk in pages.items():
        assert admin_client_.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
        page = admin_client_.get(reverse(f"admin:{name}_change", args=[pk]))
        assert page.status_code == 200, name
    blob_page = admin_client_.get(reverse("admin:campaigns_blob_change", args=[blob.pk]))
    assert b"asm" not in blob_page.content  # never the module bytes (\0asm magic)
    filtered = admin_client_.get(
        reverse("admin:campaigns_campaign_changelist"),
        {"state__exact": "completed", "approved__exact": "0"},
    )
    assert campaign.name in filtered.content.decode()
    # Results are read-only, even for superusers.
    post = admin_client_.post(reverse("admin:campaigns_result_change", args=[result.pk]), {})
    assert post.status_code == 403
    session_page = admin_client_.get(
        reverse("admin:workers_workersession_change", args=[session.pk])
    )
    assert b"secret_hash" not in session_page.content


@pytest.mark.django_db
def test_admin_approves_campaigns(
    people, make_campaign, admin_client_, django_capture_on_commit_callbacks
):
    from campaigns import signals

    campaign = make_campaign(["a"], approved=False)
    detail = reverse("campaigns:campaign_detail", args=["alpha", campaign.pk])
    # Until then, the page says how to run it on the organization's own workers.
    before = client_for(people.owner).get(detail).content.decode()
    assert 'id="own-workers"' in before
    assert "ccgsc-worker --server http://testserver --token TOKEN" in before
    woken: list[int] = []

    def on_work(sender, campaign_id, **kwargs):
        woken.append(campaign_id)

    signals.work_available.connect(on_work)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client_.post(
                reverse("admin:campaigns_campaign_changelist"),
                {"action": "approve", "_selected_action": [campaign.pk]},
                follow=True,
            )
    finally:
        signals.work_available.disconnect(on_work)
    assert "Approved 1 campaign(s)." in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.approved and woken == [campaign.pk]
    # The owners see it on their page.
    page = client_for(people.owner).get(detail)
    assert "approved for all volunteers" in page.content.decode()
    assert 'id="own-workers"' not in page.content.decode()
    assert 'id="add-tasks"' not in page.content.decode()  # it has its task
    # An API campaign without tasks says how to add them.
    empty = make_campaign([], start=False)
    html = (
        client_for(people.owner)
        .get(reverse("campaigns:campaign_detail", args=["alpha", empty.pk]))
        .content.decode()
    )
    assert 'id="add-tasks"' in html
    assert f"http://testserver/api/v1/campaigns/{empty.pk}/tasks" in html
    assert f"ccgsc campaign add-tasks {empty.pk} tasks.jsonl" in html
    admin_client_.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "withdraw_approval", "_selected_action": [campaign.pk]},
    )
    campaign.refresh_from_db()
    assert not campaign.approved


@pytest.mark.django_db
def test_admin_is_for_staff_only(people):
    response = client_for(people.owner).get(reverse("admin:campaigns_campaign_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_demo_feed_caps_bytes(people, monkeypatch):
    from campaigns import selectors

    campaign = _demo(people, "primes", [str(i) for i in range(4)])
    complete_tasks(campaign, outputs={0: b"a" * 100, 1: b"b" * 100, 2: b"c" * 100, 3: b"d" * 900})
    monkeypatch.setattr(selectors, "FEED_PAGE_BYTES", 250)
    monkeypatch.setattr(selectors, "DEMO_OUTPUT_MAX_BYTES", 500)
    first = selectors.demo_feed(campaign, None)
    assert len(first["results"]) == 2 and first["more"] is True
    second = selectors.demo_feed(campaign, first["cursor"])
    assert len(second["results"]) == 1 and second["more"] is False
    seen = {r["seq"] for r in first["results"] + second["results"]}
    assert seen == {0, 1, 2}  # the 900-byte output is no demo result
    assert len(selectors.demo_feed(campaign, None, tail=10)["results"]) == 2


@pytest.mark.django_db
def test_landing_page_links_to_demo_pages(people):
    demo = _demo(people, "mandelbrot", ["40 30 0 0 40 30 100"])
    plain = _demo(people, "echo", ["x"])
    anon = Client()
    url = reverse("campaigns:demo", args=[demo.pk])
    assert url in anon.get("/").content.decode()
    rows = {c["id"]: c for c in anon.get(reverse("campaigns:public-campaigns")).json()["campaigns"]}
    assert rows[demo.pk]["demo_url"] == url and rows[plain.pk]["demo_url"] is None
