"""Synchronous runs (POST /api/v1/run, GET /api/v1/runs/{id}): one task through the ordinary
lease path, ahead of batch work, answered to the caller; end to end with a real native worker."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from accounts import services as account_services
from campaigns import runs, services
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Result, Task
from campaigns.services import runs as run_services
from tests.conftest import fail_item as fail
from tests.conftest import kernel_bytes
from tests.conftest import ok_item as ok
from workers import scheduler, sweeper
from workers.models import WorkerSession
from workers.scheduler import SessionInfo

API = "/api/v1"


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()
    with scheduler._directory.lock:
        scheduler._directory.passes.clear()


@pytest.fixture
def echo(people):
    return services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))


def token_client(organization) -> Client:
    _, raw = account_services.token_issue(organization=organization, name="t", created_by=None)
    return Client(headers={"Authorization": f"Bearer {raw}"})


def post_run(client: Client, **body):
    return client.post(f"{API}/run", json.dumps(body), content_type="application/json")


def native_session(organization) -> SessionInfo:
    s = WorkerSession.objects.create(kind="native", organization=organization)
    return SessionInfo(id=s.pk, organization_id=organization.pk)


def test_a_run_not_taken_in_time_is_202_with_where_to_fetch_it(people, echo):
    client = token_client(people.org)
    r = post_run(client, kernel=echo.sha256, input="hello", args=["-n"], env={"A": "1"}, wait=0)
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["state"] == "queued" and body["stdout"] is None and body["ok"] is None
    assert r["Location"] == body["url"] == f"{API}/runs/{body['id']}"
    task = Task.objects.get(pk=body["id"])
    assert (bytes(task.input), task.args, task.env) == (b"hello", ["-n"], {"A": "1"})
    assert task.state == Task.State.PENDING and task.error_count == 0 and task.failure == ""
    campaign = Campaign.objects.get(pk=body["campaign"])
    assert campaign.interactive and campaign.state == Campaign.State.RUNNING
    assert campaign.name == "Synchronous runs of echo" and campaign.tasks_total == 1
    # The next run of the same kernel goes to the same campaign; a quorum gets its own.
    again = post_run(client, kernel=echo.sha256, wait=0).json()
    assert again["campaign"] == campaign.pk and Task.objects.get(pk=again["id"]).seq == 1
    verified = post_run(client, kernel=echo.sha256, quorum=2, wait=0).json()
    assert verified["campaign"] != campaign.pk and verified["verification"]["quorum"] == 2
    assert Result.objects.filter(task_id=verified["id"], state=Result.State.UNSENT).count() == 2
    fetched = client.get(body["url"])
    assert fetched.status_code == 200 and fetched.json()["state"] == "queued"


def test_a_run_whose_quorum_exceeds_the_connected_volunteers_says_why(people, echo):
    """Issue 12: a 202 after `wait` for a run that cannot be decided as things are says why."""
    native_session(people.org)  # one volunteer connected; the quorum needs two
    client = token_client(people.org)
    body = post_run(client, kernel=echo.sha256, quorum=2, wait=0).json()
    assert body["state"] == "queued"
    assert "needs 2 agreeing results from distinct volunteers" in body["stalled"]
    assert "1 connected volunteer can run it" in body["stalled"]
    assert client.get(body["url"]).json()["stalled"] == body["stalled"]
    # Nothing to say when a run can be decided.
    assert post_run(client, kernel=echo.sha256, wait=0).json()["stalled"] == ""


def test_runs_are_leased_before_batch_work_and_answer_once_decided(people, echo, make_campaign):
    batch = make_campaign([f"batch {i}" for i in range(20)], priority=1000)
    client = token_client(people.org)
    payload = base64.b64encode(b"\xff\x00").decode()
    run = post_run(client, kernel=echo.sha256, input_b64=payload, wait=0)
    assert run.status_code == 202  # no worker yet
    worker = native_session(people.org)
    # However much the batch campaign's share, the run is served first.
    first = scheduler.lease(worker, 1)
    assert [x.task for x in first] == [run.json()["id"]]
    assert first[0].campaign != batch.pk
    fetched = client.get(f"{API}/runs/{run.json()['id']}")
    assert fetched.json()["state"] == "running"
    scheduler.submit_results(worker, [ok(first[0], out=b"\xff\x00")])
    done = client.get(f"{API}/runs/{run.json()['id']}?wait=5").json()
    assert done["state"] == "done" and done["ok"] is True and done["exit_code"] == 0
    assert (done["stdout"], done["stdout_encoding"]) == ("/wA=", "base64")
    assert done["verification"] == {"quorum": 1, "basis": "single", "agreed_with": None}
    assert done["queued_ms"] is not None and done["finished_at"] is not None
    # The campaign of runs does not complete when its last task is done: it waits for more.
    campaign = Campaign.objects.get(pk=done["campaign"])
    assert campaign.state == Campaign.State.RUNNING and campaign.tasks_done == 1
    # A decided run answers at once, 200, also to POST's wait (nothing left to wait for).
    assert client.get(f"{API}/runs/{done['id']}?wait=60").status_code == 200


def test_a_failing_run_answers_with_the_kernels_error(people, echo, settings):
    client = token_client(people.org)
    run = post_run(client, kernel=echo.sha256, wait=0).json()
    Campaign.objects.filter(pk=run["campaign"]).update(max_attempts=1)
    scheduler.work_available()
    worker = native_session(people.org)
    (lease,) = scheduler.lease(worker, 1)
    scheduler.submit_results(worker, [fail(lease, code=3, stderr="bad input")])
    done = client.get(f"{API}/runs/{run['id']}").json()
    assert done["state"] == "failed" and done["ok"] is False and done["exit_code"] == 3
    assert "bad input" in done["stderr"] and "1 failed attempt" in done["failure"]
    assert done["stdout"] is None and done["verification"]["basis"] is None


def test_runs_are_their_organizations_own(people, echo):
    outsider = token_client(people.other_org)
    r = post_run(outsider, kernel=echo.sha256, wait=0)
    assert r.status_code == 404 and "echo" not in r.content.decode()
    run = post_run(token_client(people.org), kernel=echo.sha256, wait=0).json()
    assert outsider.get(f"{API}/runs/{run['id']}").status_code == 404
    member = Client()
    member.force_login(people.teammate)
    assert member.get(f"{API}/runs/{run['id']}").status_code == 200
    assert Client().post(f"{API}/run", "{}", content_type="application/json").status_code == 401
    # A batch campaign's task is not a run.
    batch = services.campaign_create(organization=people.org, name="b", kernel=echo)
    services.tasks_add(campaign=batch, specs=[TaskSpec(input=b"x")])
    task = Task.objects.get(campaign=batch)
    assert token_client(people.org).get(f"{API}/runs/{task.pk}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kernel": "nothex"}, "kernel"),
        ({"kernel": "0" * 64, "input": "a", "input_b64": "YQ=="}, "input_b64"),
        ({"kernel": "0" * 64, "input_b64": "not base64!"}, "input_b64"),
        ({"kernel": "0" * 64, "wait": 61}, "wait"),
        ({"kernel": "0" * 64, "quorum": 0}, "quorum"),
        ({"kernel": "0" * 64, "args": ["a\x00b"]}, "args"),
    ],
)
def test_bad_run_requests_say_which_field(people, body, field):
    r = post_run(token_client(people.org), **body)
    assert r.status_code == 400 and field in r.json()["error"]["fields"], r.content


def test_an_unknown_kernel_is_404_and_the_original_hash_names_a_rewritten_one(people):
    client = token_client(people.org)
    assert post_run(client, kernel="0" * 64, wait=0).status_code == 404
    nomax = kernel_bytes("nomax")
    kernel = services.kernel_upload(organization=people.org, name="nomax", data=nomax)
    assert kernel.original_sha256 and kernel.original_sha256 != kernel.sha256
    r = post_run(client, kernel=kernel.original_sha256, wait=0)
    assert r.status_code == 202 and r.json()["kernel"] == kernel.sha256


def test_wait_on_fetch_is_checked(people, echo):
    client = token_client(people.org)
    run = post_run(client, kernel=echo.sha256, wait=0).json()
    for bad in ("-1", "61", "x", "nan"):
        assert client.get(f"{API}/runs/{run['id']}?wait={bad}").status_code == 400


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.live
def test_a_run_is_answered_by_a_real_native_worker(live_platform, people):
    primes = services.kernel_upload(organization=people.org, name="p", data=kernel_bytes("primes"))
    echo = services.kernel_upload(organization=people.org, name="e", data=kernel_bytes("echo"))
    _, token = account_services.token_issue(organization=people.org, name="w", created_by=None)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live_platform.url, headers=headers, timeout=60) as http:
        # No worker yet: the run is queued, and fetched once a worker has taken it.
        queued = http.post("/api/v1/run", json={"kernel": echo.sha256, "input": "early", "wait": 0})
        assert queued.status_code == 202 and queued.json()["state"] == "queued"
        live_platform.worker("--token", token, slots=1)
        later = http.get(queued.headers["Location"], params={"wait": 30}).json()
        assert later["state"] == "done" and later["stdout"] == "early"
        # With a worker waiting: the answer comes in the POST's own response.
        r = http.post("/api/v1/run", json={"kernel": primes.sha256, "input": "0 30", "wait": 30})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True and body["state"] == "done"
        assert body["stdout"].split() == ["2", "3", "5", "7", "11", "13", "17", "19", "23", "29"]
        assert body["verification"]["basis"] == "single" and body["runtime_ms"] is not None
        r = http.post(
            "/api/v1/run", json={"kernel": echo.sha256, "input": "héllo\n", "args": ["x"]}
        )
        assert r.status_code == 200 and r.json()["stdout"] == "héllo\n"
    result = Result.objects.get(task_id=body["id"])
    assert result.session_id is not None and result.validation == Result.Validation.VALID
    # Executed by the worker's session, not in the web process.
    assert WorkerSession.objects.get(pk=result.session_id).kind == "native"
    assert runs.run_view(body["id"]) is not None


# --- a worker that goes silent holding a run ------------------------------------------------------


def _queued_run(organization, kernel) -> int:
    return run_services.run_submit(
        organization=organization, kernel=kernel, spec=TaskSpec(input=b"")
    ).pk


def _lease_and_go_silent(organization, task_id: int) -> SessionInfo:
    """A worker leases the run and is never heard from again: its lease expires."""
    worker = native_session(organization)
    (lease,) = scheduler.lease(worker, 1)
    assert lease.task == task_id
    Result.objects.filter(pk=lease.lease).update(deadline=timezone.now() - timedelta(seconds=1))
    assert scheduler.reclaim_expired() == 1
    # As its connection learns when told of the expiry (workers/connection.py).
    return dataclasses.replace(worker, expired=True)


async def _waiting(task_id: int, monkeypatch, seconds: float = 30.0) -> asyncio.Task[bool]:
    """A request waiting on the run, returned once it has subscribed and read the run (what
    happens to the run from then on must wake it)."""
    looked = asyncio.Event()
    loop = asyncio.get_running_loop()
    decided = runs._decided

    def spy(tid: int) -> bool:
        answer = decided(tid)
        loop.call_soon_threadsafe(looked.set)
        return answer

    monkeypatch.setattr(runs, "_decided", spy)
    waiter = asyncio.ensure_future(runs.wait_decided(task_id, seconds))
    await asyncio.wait_for(looked.wait(), 10)
    return waiter


@pytest.mark.django_db(transaction=True)
async def test_a_run_failed_by_silent_workers_answers_its_waiting_caller_at_once(
    people, echo, monkeypatch
):
    task_id = await sync_to_async(_queued_run)(people.org, echo)
    task = await Task.objects.aget(pk=task_id)
    await Campaign.objects.filter(pk=task.campaign_id).aupdate(max_attempts=1)
    scheduler.work_available()
    waiter = await _waiting(task_id, monkeypatch)
    # Sessions of EXPIRY_MIN_NETWORKS distinct networks (max_attempts, when more) let it
    # expire: the run fails.
    for _ in range(scheduler.EXPIRY_MIN_NETWORKS - 1):
        await sync_to_async(_lease_and_go_silent)(people.org, task_id)
        view = await sync_to_async(runs.run_view)(task_id)
        assert view is not None and view.state == "queued"  # again, for another worker
    assert not waiter.done()
    await sync_to_async(_lease_and_go_silent)(people.org, task_id)
    # Told when the sweeper failed it, not when the caller's 30 s wait ran out.
    assert await asyncio.wait_for(waiter, 10) is True
    view = await sync_to_async(runs.run_view)(task_id)
    assert view is not None and view.state == "failed" and view.ok is None
    assert "lease expired on 3 worker session(s)" in view.failure


@pytest.mark.django_db(transaction=True)
async def test_a_run_whose_worker_went_silent_is_answered_by_the_next_worker(
    people, echo, monkeypatch
):
    task_id = await sync_to_async(_queued_run)(people.org, echo)
    waiter = await _waiting(task_id, monkeypatch)
    silent = await sync_to_async(_lease_and_go_silent)(people.org, task_id)
    # The silent worker never gets it back; another one does, and its answer is the run's.
    assert await sync_to_async(scheduler.lease)(silent, 1) == []
    other = await sync_to_async(native_session)(people.org)
    (lease,) = await sync_to_async(scheduler.lease)(other, 1)
    assert lease.task == task_id
    await sync_to_async(scheduler.submit_results)(other, [ok(lease, out=b"second")])
    assert await asyncio.wait_for(waiter, 10) is True
    view = await sync_to_async(runs.run_view)(task_id)
    assert view is not None and (view.state, view.stdout) == ("done", b"second")


def test_a_runs_lease_lasts_its_kernels_time_limit_and_a_short_grace(people, echo):
    task_id = _queued_run(people.org, echo)
    (lease,) = scheduler.lease(native_session(people.org), 1)
    row = Result.objects.get(pk=lease.lease)
    assert row.deadline is not None and row.leased_at is not None
    held = (row.deadline - row.leased_at).total_seconds()
    assert held == runs.RUN_TASK_TIMEOUT + runs.RUN_LEASE_GRACE
    assert held + 2 * sweeper.SWEEP_SECONDS <= runs.SILENT_WORKER_SECONDS
    assert lease.task == task_id


# --- how a waiting caller is woken ----------------------------------------------------------------


def _answered(organization, task_id: int, out: bytes) -> None:
    worker = native_session(organization)
    (lease,) = scheduler.lease(worker, 1)
    assert lease.task == task_id
    scheduler.submit_results(worker, [ok(lease, out=out)])


@pytest.mark.django_db(transaction=True)
async def test_a_caller_in_the_workers_process_is_woken_without_the_channel_layer(
    people, echo, monkeypatch
):
    task_id = await sync_to_async(_queued_run)(people.org, echo)
    waiter = await _waiting(task_id, monkeypatch)
    sent: list[list[int]] = []

    async def no_layer(layer, task_ids):
        sent.append(task_ids)

    monkeypatch.setattr(run_services, "_send_all", no_layer)
    await sync_to_async(_answered)(people.org, task_id, b"here")
    assert await asyncio.wait_for(waiter, 10) is True
    assert sent == [[task_id]]  # told to the other processes all the same
    assert runs._here == {}  # nothing left registered


@pytest.mark.django_db(transaction=True)
async def test_a_caller_in_another_process_than_the_worker_is_woken_through_the_layer(
    people, echo, monkeypatch
):
    task_id = await sync_to_async(_queued_run)(people.org, echo)
    waiter = await _waiting(task_id, monkeypatch)
    # As if the result were recorded in another server process: its wake_here knows nobody.
    monkeypatch.setattr(run_services, "wake_here", lambda task_ids: None)
    await sync_to_async(_answered)(people.org, task_id, b"there")
    assert await asyncio.wait_for(waiter, 10) is True
    view = await sync_to_async(runs.run_view)(task_id)
    assert view is not None and view.stdout == b"there"
