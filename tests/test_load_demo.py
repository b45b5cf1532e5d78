"""`make run` loads the demo each time: however often it runs, there is one campaign per demo,
and a finished demo is replaced by a fresh run."""

from __future__ import annotations

import io
from collections import Counter

from django.core.management import call_command

from accounts.tenancy import Actor
from campaigns import selectors
from campaigns.management.commands.load_demo import DEMOS
from campaigns.models import Campaign, Kernel, Task


def load(capture) -> str:
    out = io.StringIO()
    with capture(execute=True):
        call_command("load_demo", stdout=out)
    return out.getvalue()


def test_load_demo_twice_keeps_one_campaign_per_demo(db, django_capture_on_commit_callbacks):
    load(django_capture_on_commit_callbacks)
    first = set(Campaign.objects.values_list("pk", flat=True))
    assert len(first) == len(DEMOS) == 5
    load(django_capture_on_commit_callbacks)
    assert set(Campaign.objects.values_list("pk", flat=True)) == first

    # A demo that finished is run again, not listed twice.
    done = Campaign.objects.get(name="Primes below 20,000,000")
    Campaign.objects.filter(pk=done.pk).update(state=Campaign.State.COMPLETED)
    out = load(django_capture_on_commit_callbacks)
    names = Counter(Campaign.objects.values_list("name", flat=True))
    assert set(names.values()) == {1}, names
    assert not Campaign.objects.filter(pk=done.pk).exists()
    assert Campaign.objects.get(name=done.name).state == Campaign.State.RUNNING
    assert "removed an older run of Primes below 20,000,000" in out


def test_load_demo_removes_duplicates_left_by_older_versions(
    db, django_capture_on_commit_callbacks
):
    load(django_capture_on_commit_callbacks)
    mandelbrot = Campaign.objects.get(name="Mandelbrot 400x300")
    # What an older load_demo left after a finished run: the finished copy beside a new one.
    Campaign.objects.filter(pk=mandelbrot.pk).update(state=Campaign.State.COMPLETED)
    load(django_capture_on_commit_callbacks)
    Campaign.objects.create(
        organization=mandelbrot.organization,
        name=mandelbrot.name,
        kernel=mandelbrot.kernel,
        state=Campaign.State.COMPLETED,
    )
    load(django_capture_on_commit_callbacks)
    assert Campaign.objects.filter(name=mandelbrot.name).count() == 1


def test_load_demo_runs_the_deep_zoom_on_gpus_and_on_cpus(db, django_capture_on_commit_callbacks):
    load(django_capture_on_commit_callbacks)
    gpu = Campaign.objects.select_related("kernel").get(name="Mandelbrot deep zoom (GPU)")
    cpu = Campaign.objects.select_related("kernel").get(name="Mandelbrot deep zoom (CPU)")
    assert (gpu.kernel.kind, cpu.kernel.kind) == (Kernel.Kind.GPU, Kernel.Kind.WASM)
    assert (gpu.kernel.manifest or {}).get("output_bytes") == 64 * 64 * 4
    assert gpu.state == cpu.state == Campaign.State.RUNNING
    assert gpu.tasks_total == cpu.tasks_total == 48  # 512 x 384 in 64 x 64 tiles
    inputs = [
        list(Task.objects.filter(campaign=c).order_by("seq").values_list("input", flat=True))
        for c in (gpu, cpu)
    ]
    assert [bytes(i) for i in inputs[0]] == [bytes(i) for i in inputs[1]]
    # Each is the other's twin on its demo page; other demos have none.
    anonymous = Actor()
    assert selectors.demo_kind(gpu) == selectors.demo_kind(cpu) == "mandelbrot_deep"
    assert selectors.demo_twin(anonymous, gpu) == cpu
    assert selectors.demo_twin(anonymous, cpu) == gpu
    primes = Campaign.objects.get(name="Primes below 20,000,000")
    assert selectors.demo_twin(anonymous, primes) is None
