"""operations/: the status page, the admin health panel, /metrics and structured logs."""

from __future__ import annotations

import json
import logging
import os

import pytest
from django.test import Client

from campaigns.models import Campaign, Task
from ccgsc.logs import JsonFormatter
from operations import health, periodic
from operations.models import JobRun, ProcessHeartbeat
from tests.conftest import ok_item
from workers import scheduler, sweeper
from workers.models import WorkerSession


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _run(campaign: Campaign, n: int = 100) -> list[scheduler.Lease]:
    """Lease and answer up to n tasks through the real scheduler (one native session)."""
    session = WorkerSession.objects.create(
        kind="native", slots=n, organization=campaign.organization
    )
    info = scheduler.SessionInfo(
        id=session.pk, kind="native", organization_id=campaign.organization_id
    )
    scheduler.work_available()
    leases = scheduler.lease(info, n)
    scheduler.submit_results(info, [ok_item(x, x.input) for x in leases])
    return leases


@pytest.fixture
def staff(people):
    people.owner.is_staff = True
    people.owner.save()
    return people.owner


# --- status page --------------------------------------------------------------------------------


def test_status_page_renders_the_live_figures_and_components_in_embedded_mode(
    people, make_campaign, settings
):
    settings.REDIS_URL = None  # as in the embedded mode (CI runs with Redis)
    make_campaign([1, 2])
    WorkerSession.objects.create(kind="browser", slots=2)
    response = _client().get("/status/")
    assert response.status_code == 200
    html = response.content.decode()
    # The same figures as the JSON API, server-rendered, with the fields landing.js refreshes.
    assert 'id="status" data-url="/api/v1/status"' in html
    assert 'data-field="campaigns_running">1<' in html
    assert 'data-field="workers.browser">1<' in html
    # Embedded mode: Redis and Celery are "not used", which is not an outage.
    assert 'data-check="Redis" data-state="off"' in html
    assert 'data-check="Background jobs" data-state="off"' in html
    assert 'data-check="Database" data-state="ok"' in html
    # Public: no internals (versions, hosts) and no staff link.
    assert "sqlite" not in html.lower()
    assert "Health panel" not in html


def test_the_json_status_api_is_kept(db):
    data = _client().get("/api/v1/status").json()
    assert set(data) >= {"workers", "tasks_done", "tasks_per_second", "campaigns_running"}


def test_footer_status_link_opens_the_page(db):
    html = _client().get("/").content.decode()
    assert '<a href="/status/">Status</a>' in html


def test_a_down_component_says_so(db, monkeypatch, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    report = health.report(detailed=False)
    redis = next(c for c in report.checks if c.name == "Redis")
    assert redis.state == "down"
    assert report.state == "down"


# --- admin health panel -------------------------------------------------------------------------


def test_health_panel_is_for_staff_only(people):
    assert _client().get("/admin/health/").status_code == 302  # to the admin login
    response = _client(people.teammate).get("/admin/health/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_health_panel_shows_queues_workers_and_processes(staff, make_campaign, settings):
    settings.REDIS_URL = None
    campaign = make_campaign([1, 2, 3, 4, 5])
    session = WorkerSession.objects.create(
        kind="native", slots=2, organization=campaign.organization
    )
    info = scheduler.SessionInfo(
        id=session.pk, kind="native", organization_id=campaign.organization_id
    )
    scheduler.work_available()
    assert len(scheduler.lease(info, 2)) == 2
    WorkerSession.objects.create(kind="browser", slots=1, transport="http")
    health.heartbeat()
    sweeper.tick()  # the deployment's sweeper records its sweep
    response = _client(staff).get("/admin/health/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<td data-queue="pending">3</td>' in html
    assert '<td data-queue="leased">2</td>' in html
    assert '<td data-queue="awaiting_validation">0</td>' in html
    assert 'data-workers="native_ws"' in html and 'data-workers="browser_http"' in html
    assert f'data-pid="{os.getpid()}"' in html
    row = ProcessHeartbeat.objects.get(pid=os.getpid())
    assert row.rss_bytes > 10 * 2**20 and row.cpu_seconds > 0 and row.threads >= 1
    assert 'data-check="Lease sweeper" data-state="ok"' in html
    assert "embedded mode" in html


def test_admin_lists_deliveries_read_only(staff):
    staff.is_superuser = True
    staff.save()
    client = _client(staff)
    assert client.get("/admin/operations/delivery/").status_code == 200
    assert client.get("/admin/operations/delivery/add/").status_code == 403
    assert 'href="/admin/operations/processheartbeat/"' in client.get("/admin/").content.decode()


def test_admin_index_links_to_the_panel(staff):
    response = _client(staff).get("/admin/operations/processheartbeat/")
    assert response.status_code == 302 and response["Location"] == "/admin/health/"


def test_sweeper_state_follows_its_last_sweep(db):
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    cache.delete(sweeper.LAST_SWEEP_KEY)
    assert health.check_sweeper().state == "off"  # no worker connected yet: not started
    cache.set(
        sweeper.LAST_SWEEP_KEY,
        {"at": (timezone.now() - timedelta(seconds=25)).isoformat(), "by": "h:1"},
    )
    check = health.check_sweeper()
    assert check.state == "down" and "25" in check.detail and "h:1" in check.detail
    sweeper.tick()
    assert health.check_sweeper().state == "ok"


def test_redis_check_reports_version_and_memory(db, settings, monkeypatch):
    import redis

    class FakeRedis:
        def ping(self):
            return True

        def info(self, section):
            return {"redis_version": "7.2.4", "used_memory_human": "1.5M"}

        def close(self):
            pass

    settings.REDIS_URL = "redis://example.invalid:6379/0"
    monkeypatch.setattr(redis.Redis, "from_url", lambda url, **kw: FakeRedis())
    check = health.check_redis()
    assert check.state == "ok" and check.detail == "Redis 7.2.4, 1.5M used"


def test_celery_check_pings_workers_with_a_short_timeout(db, settings, monkeypatch):
    from ccgsc.celery import app

    settings.USE_CELERY_BROKER = True
    calls = []

    def ping(timeout):
        calls.append(timeout)
        return [{"celery@a": {"ok": "pong"}}, {"celery@b": {"ok": "pong"}}]

    monkeypatch.setattr(app.control, "ping", ping)
    check = health.check_celery()
    assert check.state == "ok" and check.summary == "2 Celery workers answering"
    assert calls == [health.CHECK_TIMEOUT]
    monkeypatch.setattr(app.control, "ping", lambda timeout: [])
    assert health.check_celery().state == "down"


# --- once per deployment ------------------------------------------------------------------------


def test_a_periodic_job_is_claimed_once_per_period(db):
    from datetime import timedelta

    period = timedelta(minutes=5)
    assert periodic.claim("x", period) is True
    # A second process (or the same one) within the period: no.
    assert periodic.claim("x", period) is False
    JobRun.objects.filter(name="x").update(
        last_run_at=JobRun.objects.get(name="x").last_run_at - period
    )
    assert periodic.claim("x", period) is True


# --- metrics ------------------------------------------------------------------------------------


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_need_staff_or_the_token(people, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert _client().get("/metrics").status_code == 404
    assert _client(people.teammate).get("/metrics").status_code == 404
    wrong = _client().get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 404
    ok = _client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain")


def test_metrics_without_a_token_setting_refuse_any_bearer(db, settings):
    settings.METRICS_TOKEN = ""
    assert _client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


def test_metrics_count_leases_results_and_validations(staff, make_campaign):
    client = _client(staff)
    before = client.get("/metrics").content.decode()
    campaign = make_campaign([1, 2, 3])
    _run(campaign)
    after = client.get("/metrics").content.decode()

    def delta(name: str) -> float:
        return _sample(after, name) - _sample(before, name)

    assert delta("ccgsc_tasks_leased_total") == 3
    assert delta('ccgsc_results_returned_total{disposition="accepted"}') == 3
    assert delta('ccgsc_results_validated_total{verdict="valid"}') == 3
    assert delta('ccgsc_tasks_finished_total{state="done"}') == 3
    assert delta("ccgsc_lease_seconds_count") >= 1
    assert delta("ccgsc_result_batch_seconds_count") == 1
    assert 'ccgsc_sessions_connected{kind="native",transport="ws"} 1.0' in after
    assert 'ccgsc_queue_depth{queue="campaigns_running"}' in after


def test_metrics_count_quorum_verdicts(staff, make_campaign, people):
    from accounts.models import User

    client = _client(staff)
    before = client.get("/metrics").content.decode()
    campaign = make_campaign([1], min_quorum=2, target_replicas=2)
    # Two distinct users agree: both replicas become valid through rewards.validation.apply.
    for email in ("a@x.test", "b@x.test"):
        user = User.objects.create_user(email, "pw-123456789")
        session = WorkerSession.objects.create(kind="browser", slots=1, user=user)
        info = scheduler.SessionInfo(id=session.pk, kind="browser", user_id=user.pk)
        scheduler.work_available()
        leases = scheduler.lease(info, 1)
        assert len(leases) == 1
        scheduler.submit_results(info, [ok_item(leases[0], b"same")])
    after = client.get("/metrics").content.decode()
    name = 'ccgsc_results_validated_total{verdict="valid"}'
    assert _sample(after, name) - _sample(before, name) == 2
    assert Task.objects.get(campaign=campaign).state == Task.State.DONE


def test_metrics_add_up_processes_in_multiprocess_mode(staff, tmp_path, monkeypatch):
    """With PROMETHEUS_MULTIPROC_DIR, /metrics reads every process's files: a counter written
    by another process (a subprocess here) is included."""
    import subprocess
    import sys

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    subprocess.run(
        [sys.executable, "-c", "from ccgsc import metrics; metrics.TASKS_LEASED.inc(7)"],
        check=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    text = _client(staff).get("/metrics").content.decode()
    assert _sample(text, "ccgsc_tasks_leased_total") == 7


# --- logs ---------------------------------------------------------------------------------------


def test_json_log_lines(capsys):
    record = logging.LogRecord("ccgsc.test", logging.WARNING, __file__, 1, "lease %s", (7,), None)
    record.campaign = 3
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["message"] == "lease 7"
    assert data["logger"] == "ccgsc.test" and data["campaign"] == 3 and "time" in data


def test_log_format_setting_is_strict(monkeypatch):
    import subprocess
    import sys

    env = {**os.environ, "LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "ccgsc.settings"}
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True
    )
    assert proc.returncode != 0 and b"LOG_FORMAT must be plain or json" in proc.stderr
    env["LOG_FORMAT"] = "json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, logging; django.setup(); logging.getLogger('x').warning('hi');"
            " from ccgsc.celery import app; assert not app.conf.worker_hijack_root_logger",
        ],
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.decode().strip().splitlines()[-1])["message"] == "hi"


# --- a real server process ----------------------------------------------------------------------


@pytest.mark.live
def test_a_daphne_process_reports_itself_and_serves_metrics(transactional_db):
    """The heartbeat thread ccgsc/asgi.py starts in each server process writes its row; the
    process serves /status/ and, with the token, /metrics."""
    import urllib.request

    from tests.live import start_server
    from tests.waiting import wait_for

    platform = start_server(HEARTBEAT="true", METRICS_TOKEN="live-metrics-token")
    try:
        wait_for(
            lambda: ProcessHeartbeat.objects.filter(pid=platform.proc.pid).exists(),
            timeout=30,
            what="a heartbeat from the server process",
        )
        with urllib.request.urlopen(f"{platform.url}/status/", timeout=10) as r:
            html = r.read().decode()
        assert 'data-check="Database" data-state="ok"' in html
        request = urllib.request.Request(
            f"{platform.url}/metrics", headers={"Authorization": "Bearer live-metrics-token"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert b"ccgsc_tasks_leased_total" in r.read()
        # The deployment-wide jobs ran from that thread too (each claims its JobRun row).
        wait_for(
            lambda: JobRun.objects.filter(name="stall_check").exists(),
            timeout=30,
            what="the periodic jobs to run",
        )
    finally:
        platform.stop()
