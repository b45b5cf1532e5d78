"""Shared fixtures: the people every tenancy test needs, and suite-wide settings."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from accounts.models import Membership, Organization, User
from tests.live import live_platform  # noqa: F401  (fixture: a real daphne + native workers)


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


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The real hasher costs ~0.5 s per user; tests check behaviour, not hash strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def ok_item(lease, out=b"x", ms=5):
    """A successful result item as scheduler.submit_results takes it (lease: a Lease)."""
    return {
        "lease": lease.lease,
        "ok": True,
        "output": out,
        "exit": 0,
        "err": None,
        "stderr": "",
        "ms": ms,
    }


def fail_item(lease, err="exit", code=1, stderr="boom"):
    """A failed result item as scheduler.submit_results takes it (lease: a Lease)."""
    return {
        "lease": lease.lease,
        "ok": False,
        "output": b"",
        "exit": code,
        "err": err,
        "stderr": stderr,
        "ms": 3,
    }
