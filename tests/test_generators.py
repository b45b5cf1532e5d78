"""Campaign inputs: generator kernels in the sandbox (through a real Celery worker process
when a broker is configured, as under CI), task files, and their failure modes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from django.db import connection

from campaigns import services
from campaigns.models import Campaign, Result, Task
from tests.conftest import kernel_bytes
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def upload(people, name):
    return services.kernel_upload(organization=people.org, name=name, data=kernel_bytes(name))


def generator_campaign(people, generator, args, **kw):
    return services.campaign_create(
        organization=people.org,
        name=f"from {generator}",
        kernel=upload(people, "echo"),
        input_source=Campaign.InputSource.GENERATOR,
        generator=upload(people, generator),
        generator_args=args,
        **kw,
    )


def wait_for_input(campaign, timeout=120.0):
    def generated():
        campaign.refresh_from_db()
        return campaign.input_state != Campaign.InputState.GENERATING

    wait_for(generated, timeout=timeout, what="the generator to finish")
    return campaign


@pytest.fixture
def jobs(request, settings):
    """Where generator jobs run: a real Celery worker process when REDIS_URL is configured
    (CI), otherwise in-process (embedded mode). Yields the worker process or None. Sandbox
    limits from a `sandbox` marker apply to both."""
    marker = request.node.get_closest_marker("sandbox")
    overrides = {k.upper(): v for k, v in (marker.kwargs if marker else {}).items()}
    settings.CCGSC = {**settings.CCGSC, **overrides}
    if not settings.REDIS_URL:
        yield None
        return
    request.getfixturevalue("transactional_db")
    settings.USE_CELERY_BROKER = True
    env = dict(os.environ)
    db = connection.settings_dict
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        if connection.vendor == "postgresql"
        else env.get("DATABASE_URL", "")
    )
    env.update({k: str(v) for k, v in overrides.items()})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ccgsc",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.django_db(transaction=True)
def test_primes_generator_makes_the_expected_tasks(people, jobs):
    c = wait_for_input(generator_campaign(people, "primes_gen", ["1000000", "10000"]))
    assert c.input_state == Campaign.InputState.READY, c.error
    inputs = [
        bytes(i)
        for i in Task.objects.filter(campaign=c).order_by("seq").values_list("input", flat=True)
    ]
    assert len(inputs) == c.tasks_total == 100
    assert inputs[0] == b"0 10000" and inputs[-1] == b"990000 1000000"
    assert Result.objects.filter(campaign=c, state=Result.State.UNSENT).count() == 100


@pytest.mark.django_db(transaction=True)
def test_hundred_thousand_tasks_each_inserted_once(people, jobs):
    c = wait_for_input(generator_campaign(people, "primes_gen", ["100000", "1"]))
    assert c.input_state == Campaign.InputState.READY, c.error
    assert c.tasks_total == 100_000
    tasks = Task.objects.filter(campaign=c)
    assert tasks.count() == 100_000
    assert tasks.values("input").distinct().count() == 100_000
    assert Result.objects.filter(campaign=c).count() == 100_000


@pytest.mark.django_db(transaction=True)
@pytest.mark.sandbox(sandbox_timeout_seconds=2, sandbox_output_max_bytes=1 << 20)
@pytest.mark.parametrize(
    ("generator", "kind"),
    [
        ("loop", "timeout"),
        ("membomb", "out_of_memory"),
        ("flood", "output_too_large"),
        ("trap", "trap"),
    ],
)
def test_hostile_generator_fails_the_campaign_and_the_worker_survives(
    people, jobs, generator, kind
):
    c = wait_for_input(generator_campaign(people, generator, []))
    assert c.state == Campaign.State.FAILED and c.input_state == Campaign.InputState.FAILED
    # The sandbox's limit stopped it, and says which (not a wall-clock guess of the test's:
    # the job queue of a loaded machine may take its time to get to the job).
    assert kind in c.error
    assert Task.objects.filter(campaign=c).count() == 0 and c.tasks_total == 0
    # The same worker (process) still runs the next job.
    good = wait_for_input(generator_campaign(people, "montecarlo_gen", ["10", "1000"]))
    assert good.tasks_total == 10
    if jobs is not None:
        assert jobs.poll() is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.sandbox(sandbox_output_max_bytes=16384)
def test_failed_generator_can_be_retried_with_new_arguments(people, jobs):
    # 10,000 frames do not fit the output cap; the owner retries with fewer.
    c = wait_for_input(generator_campaign(people, "primes_gen", ["100000", "10"]))
    assert c.state == Campaign.State.FAILED and "output_too_large" in c.error
    assert Task.objects.filter(campaign=c).count() == 0
    with pytest.raises(services.ServiceError, match="input failed"):
        services.campaign_start(campaign=c)
    services.campaign_regenerate(campaign=c, generator_args=["1000", "10"])
    c = wait_for_input(c)
    assert (c.state, c.input_state, c.tasks_total) == (
        Campaign.State.DRAFT,
        Campaign.InputState.READY,
        100,
    )
    assert services.campaign_start(campaign=c).state == Campaign.State.RUNNING


# Three good frames, then a length that promises more bytes than follow.
TRUNCATED_GENERATOR = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1)
  (data (i32.const 64) "\\01\\00\\00\\00a\\01\\00\\00\\00b\\01\\00\\00\\00c\\09\\00\\00\\00xy")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 21))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


@pytest.mark.django_db(transaction=True)
def test_generator_failing_midway_leaves_no_tasks_behind(people, settings):
    import wasmtime

    settings.CCGSC = {**settings.CCGSC, "GENERATOR_BATCH": 1}
    generator = services.kernel_upload(
        organization=people.org,
        name="truncated",
        data=bytes(wasmtime.wat2wasm(TRUNCATED_GENERATOR)),
    )
    c = services.campaign_create(
        organization=people.org,
        name="midway",
        kernel=upload(people, "echo"),
        input_source=Campaign.InputSource.GENERATOR,
        generator=generator,
    )
    c.refresh_from_db()
    assert c.state == Campaign.State.FAILED
    assert "malformed" in c.error and "ends inside task 3" in c.error
    assert Task.objects.filter(campaign=c).count() == 0 and c.tasks_total == 0
    assert Result.objects.filter(campaign=c).count() == 0


def test_task_file_jsonl_and_msgpack(people):
    kernel = upload(people, "echo")
    lines = [
        json.dumps({"input": "a"}),
        json.dumps("b"),
        "",
        json.dumps({"input_b64": "Yw==", "args": ["-v"]}),
    ]
    c = services.campaign_create(
        organization=people.org,
        name="file",
        kernel=kernel,
        input_source="file",
        task_file=io.BytesIO("\n".join(lines).encode()),
    )
    tasks = list(Task.objects.filter(campaign=c).order_by("seq"))
    assert [bytes(t.input) for t in tasks] == [b"a", b"b", b"c"] and tasks[2].args == ["-v"]
    packed = b"".join(
        msgpack.packb(o) for o in [b"\x00\x01", {"input": b"\xff", "env": {"K": "V"}}]
    )
    c2 = services.campaign_create(
        organization=people.org,
        name="mp",
        kernel=kernel,
        input_source="file",
        task_file=io.BytesIO(packed),
        task_file_format="msgpack",
    )
    tasks = list(Task.objects.filter(campaign=c2).order_by("seq"))
    assert [bytes(t.input) for t in tasks] == [b"\x00\x01", b"\xff"] and tasks[1].env == {"K": "V"}


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        (b'{"input": "a"}\n{oops\n', "jsonl", "line 2: not valid JSON"),
        (b'{"input": 5}\n', "jsonl", "line 1: `input` must be a string"),
        (b'{"input": "a", "extra": 1}\n', "jsonl", "unknown field(s) extra"),
        (msgpack.packb({"input": "a"}) + b"\x92\x01", "msgpack", "ends in the middle"),
    ],
)
def test_bad_task_file_is_refused_with_its_position_and_nothing_kept(people, content, fmt, message):
    kernel = upload(people, "echo")
    with pytest.raises(services.ServiceError, match="The task file was rejected") as err:
        services.campaign_create(
            organization=people.org,
            name="bad",
            kernel=kernel,
            input_source="file",
            task_file=io.BytesIO(content),
            task_file_format=fmt,
        )
    assert message in str(err.value)
    assert not Campaign.objects.filter(name="bad").exists()
    assert Task.objects.count() == 0
