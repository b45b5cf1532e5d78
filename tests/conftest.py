"""Shared fixtures: the people every tenancy test needs, and suite-wide settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.test import TransactionTestCase

from accounts.models import Membership, Organization, User
from tests.live import live_platform  # noqa: F401  (fixture: a real daphne + native workers)
from workers import protocol

# Server processes' heartbeat thread (operations.health.start_heartbeat, started by ccgsc/asgi.py)
# would write to the tests' database from a thread of its own, here (tests import the ASGI app)
# and in the live servers (which inherit this environment); tests that want it ask for it.
os.environ["HEARTBEAT"] = "false"
# Native workers the tests start look for no GPU adapter (a second or two each) unless a test
# asks for one (--gpu software: tests/test_gpu_native.py).
os.environ["CCGSC_GPU"] = "off"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test databases, and at the end of the session the PostgreSQL sessions
    still attached to ours closed first (connections of async tests' executor threads, which
    Django never closes), so that the test database can be dropped."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def _deadlocked(error: BaseException | None) -> bool:
    while error is not None:
        if getattr(error, "sqlstate", None) == "40P01":
            return True
        error = error.__cause__ or error.__context__
    return False


def _flush_retrying_deadlocks(original):
    """Transactional tests end with a TRUNCATE of every table, taking their locks in an order
    that varies per process (Django lists the tables from a set). A live daphne the test
    started may still be closing a session in a transaction over several of those tables (the
    browser just went away); PostgreSQL then breaks the deadlock by cancelling one side, and if
    that is the TRUNCATE, the test data would leak into the next test. So: try again."""

    def teardown(self, *args, **kwargs):
        for attempt in range(4):
            try:
                return original(self, *args, **kwargs)
            except Exception as error:
                if attempt == 3 or not _deadlocked(error):
                    raise

    return teardown


setattr(  # noqa: B010  (a private method django-stubs does not declare)
    TransactionTestCase,
    "_fixture_teardown",
    _flush_retrying_deadlocks(getattr(TransactionTestCase, "_fixture_teardown")),  # noqa: B009
)


@pytest.fixture(autouse=True)
def hooks():
    """The extension points' registry (ccgsc.hooks) as the apps registered it, put back after
    every test: a test may clear a point or add to it freely (`hooks.decide_returned.clear()`)."""
    from ccgsc.hooks import registry

    saved = registry.copy()
    yield registry
    registry.restore(saved)


@pytest.fixture(autouse=True)
def _sweeper_lets_go():
    """After every test, this process's sweeper (started by any in-process consumer) gives its
    lock up: it would otherwise keep it from the server processes of later tests on the same
    database, whose leases then never expire."""
    yield
    from workers import sweeper

    sweeper.let_go()


@pytest.fixture(autouse=True)
def _eager_jobs(settings):
    # Background jobs run synchronously in tests, also under CI where a broker is configured;
    # the tests that exercise a real Celery worker process opt in with `celery_worker`.
    settings.CELERY_EMBEDDED = "eager"
    settings.USE_CELERY_BROKER = False


@dataclass
class People:
    """An owner and a teammate in `org`, an outsider who owns `other_org`."""

    org: Organization
    owner: User
    teammate: User
    other_org: Organization
    outsider: User


@pytest.fixture
def people(db) -> People:
    org = Organization.objects.create(name="Alpha Lab", slug="alpha")
    other = Organization.objects.create(name="Beta Corp", slug="beta")
    owner = User.objects.create_user("owner@alpha.test", "pw-owner-123")
    teammate = User.objects.create_user("mate@alpha.test", "pw-mate-123")
    outsider = User.objects.create_user("out@beta.test", "pw-out-123")
    Membership.objects.create(user=owner, organization=org, role=Membership.Role.OWNER)
    Membership.objects.create(user=teammate, organization=org, role=Membership.Role.MEMBER)
    Membership.objects.create(user=outsider, organization=other, role=Membership.Role.OWNER)
    return People(org=org, owner=owner, teammate=teammate, other_org=other, outsider=outsider)


KERNELS_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "kernels" / "build"


def kernel_bytes(name: str) -> bytes:
    return (KERNELS_DIR / f"{name}.wasm").read_bytes()


@pytest.fixture
def make_campaign(people):
    """Create a campaign of `inputs` in people.org running `kernel` (a reference kernel name)."""
    from campaigns import services
    from campaigns.inputs import TaskSpec

    def make(inputs=(), *, kernel="echo", start=True, approved=True, org=None, **policies):
        org = org or people.org
        k = services.kernel_upload(organization=org, name=kernel, data=kernel_bytes(kernel))
        campaign = services.campaign_create(
            organization=org, name=f"{kernel} campaign", kernel=k, approved=approved, **policies
        )
        if inputs:
            services.tasks_add(
                campaign=campaign,
                specs=[
                    TaskSpec(input=i if isinstance(i, bytes) else str(i).encode()) for i in inputs
                ],
            )
        if start:
            services.campaign_start(campaign=campaign)
        campaign.refresh_from_db()
        return campaign

    return make


@pytest.fixture
def cached_directory(monkeypatch):
    """The scheduler's directory of running campaigns stays cached for the test: query counts
    are pinned per batch, and on a loaded machine the directory's one-second lifetime can run
    out mid-test and add a reload (CI once counted 13 for 12)."""
    from workers import scheduler

    monkeypatch.setattr(scheduler, "DIRECTORY_TTL", 3600.0)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The real hasher costs ~0.5 s per user; tests check behaviour, not hash strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def ok_item(lease, out=b"x", ms=5):
    """A successful result item as scheduler.submit_results takes it (lease: a Lease)."""
    return protocol.ResultItem(lease=lease.lease, ok=True, output=out, exit=0, ms=ms)


def fail_item(lease, err="exit", code=1, stderr="boom"):
    """A failed result item as scheduler.submit_results takes it (lease: a Lease)."""
    return protocol.ResultItem(
        lease=lease.lease, ok=False, exit=code, err=err, stderr=stderr.encode(), ms=3
    )
