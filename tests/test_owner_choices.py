"""The campaign owner's explicit choices about verification — adaptive replication (off by
default, its risk stated where it is switched on) and a quorum that must include a signed-in
volunteer — through the web form, the REST API (and its schema) and the command line; and the
owner's validation page saying why each result was accepted, and why a result outvoted only by
results that are not independent of each other was not marked invalid."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse

from campaigns import services
from campaigns.cli import __main__ as cli
from campaigns.models import Campaign, Result
from tests.conftest import kernel_bytes
from tests.conftest import ok_item as ok
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo

API = "/api/v1"
V = Result.Validation

FORM = {
    "name": "High stakes",
    "input_source": "api",
    "args": "",
    "env": "",
    "priority": 10,
    "task_timeout": 300,
    "max_attempts": 5,
    "points_per_task": 10,
    "min_quorum": 2,
    "target_replicas": 2,
    "max_error_replicas": 5,
    "max_total_replicas": 10,
}


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def echo(people):
    return services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))


# --- the web form --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_form_states_the_risk_and_both_choices_are_off_by_default(people):
    echo(people)
    html = client_for(people.owner).get(reverse("campaigns:campaign_create", args=["alpha"]))
    text = html.content.decode()
    assert 'name="adaptive_replication"' in text and 'name="quorum_needs_account"' in text
    assert not re.search(r'name="adaptive_replication"[^>]*checked', text)
    risk = re.search(r'id="adaptive-risk">(.*?)</p>', text, re.S)
    assert risk is not None and "turns hostile" in unescape(risk.group(1))
    kernel = echo(people)
    response = client_for(people.owner).post(
        reverse("campaigns:campaign_create", args=["alpha"]), {**FORM, "kernel": kernel.pk}
    )
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="High stakes")
    assert (campaign.adaptive_replication, campaign.quorum_needs_account) == (False, False)


@pytest.mark.django_db
def test_the_form_switches_both_on_and_the_campaign_page_says_so(people):
    kernel = echo(people)
    owner = client_for(people.owner)
    response = owner.post(
        reverse("campaigns:campaign_create", args=["alpha"]),
        {**FORM, "kernel": kernel.pk, "adaptive_replication": "on", "quorum_needs_account": "on"},
    )
    assert response.status_code == 302
    campaign = Campaign.objects.get(name="High stakes")
    assert campaign.adaptive_replication and campaign.quorum_needs_account
    page = owner.get(response["Location"]).content.decode()
    assert "every quorum includes a signed-in volunteer" in page
    adaptive = re.search(r'id="adaptive-replication">(.*?)</dd>', page, re.S)
    assert adaptive is not None and "<strong>on</strong>" in adaptive.group(1)


@pytest.mark.django_db
def test_adaptive_replication_without_a_quorum_is_refused(people):
    kernel = echo(people)
    response = client_for(people.owner).post(
        reverse("campaigns:campaign_create", args=["alpha"]),
        {
            **FORM,
            "kernel": kernel.pk,
            "min_quorum": 1,
            "target_replicas": 1,
            "adaptive_replication": "on",
        },
    )
    assert response.status_code == 200
    assert "it needs a quorum of at least 2" in unescape(response.content.decode())
    assert not Campaign.objects.filter(name="High stakes").exists()


# --- the REST API and its schema ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_takes_and_shows_both_choices(people):
    kernel = echo(people)
    owner = client_for(people.owner)
    body = {"name": "api", "kernel": kernel.pk, "min_quorum": 2, "target_replicas": 2}
    plain = owner.post(f"{API}/campaigns", body, content_type="application/json")
    assert plain.status_code == 201, plain.content
    assert (plain.json()["adaptive_replication"], plain.json()["quorum_needs_account"]) == (
        False,
        False,
    )
    chosen = owner.post(
        f"{API}/campaigns",
        {**body, "adaptive_replication": True, "quorum_needs_account": True},
        content_type="application/json",
    )
    assert chosen.status_code == 201, chosen.content
    data = chosen.json()
    assert data["adaptive_replication"] is True and data["quorum_needs_account"] is True
    campaign = Campaign.objects.get(pk=data["id"])
    assert campaign.adaptive_replication and campaign.quorum_needs_account
    refused = owner.post(
        f"{API}/campaigns",
        {"name": "q1", "kernel": kernel.pk, "adaptive_replication": True},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert "quorum of at least 2" in refused.json()["error"]["message"]


@pytest.mark.django_db
def test_the_schema_documents_both_choices(people):
    schema = json.loads(client_for(people.owner).get(f"{API}/schema/?format=json").content)
    components = schema["components"]["schemas"]
    create = components["CampaignCreateInputRequest"]["properties"]
    for name in ("adaptive_replication", "quorum_needs_account"):
        assert create[name]["type"] == "boolean"
        assert name in components["CampaignOutput"]["properties"]
    assert "Risk" in create["adaptive_replication"]["description"]


# --- the command line ----------------------------------------------------------------------------


def test_the_cli_sends_the_choices_only_when_given():
    parse = cli.build_parser().parse_args
    args = parse(["campaign", "create", "--name", "x", "--kernel", "1", "--quorum", "2"])
    assert cli.policy_fields(args) == {"min_quorum": 2, "target_replicas": 2}
    args = parse(
        [
            "campaign", "create", "--name", "x", "--kernel", "1", "--quorum", "2",
            "--adaptive-replication", "--quorum-needs-account",
        ]
    )  # fmt: skip
    assert cli.policy_fields(args) == {
        "min_quorum": 2,
        "target_replicas": 2,
        "adaptive_replication": True,
        "quorum_needs_account": True,
    }
    args = parse(["run", "k.wasm", "--args-list", "1", "--quorum", "3", "--quorum-needs-account"])
    assert cli.policy_fields(args)["quorum_needs_account"] is True
    text = cli.campaign_text(
        {
            "id": 1, "name": "x", "state": "draft", "tasks_done": 0, "tasks_total": 0,
            "tasks_failed": 0, "input_source": "api", "input_state": "none", "min_quorum": 2,
            "quorum_needs_account": True, "adaptive_replication": True,
        }
    )  # fmt: skip
    assert "one of them signed in" in text and "adaptive replication on" in text


# --- the validation page -------------------------------------------------------------------------


def session(origin: str, profile: str, user=None) -> SessionInfo:
    s = WorkerSession.objects.create(kind="browser", origin=origin, profile=profile, user=user)
    return SessionInfo(
        id=s.pk, kind="browser", js=True, user_id=s.user_id, origin=origin, profile=profile
    )


def why(owner: Client, campaign: Campaign) -> dict[int, str]:
    """The validation page's explanation per result id (the download link names the id)."""
    html = owner.get(
        reverse("campaigns:campaign_results", args=["alpha", campaign.pk]) + "?show=all"
    ).content.decode()
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        rid = re.search(r"/results/(\d+)/output", row)
        if rid:
            text = " ".join(re.findall(r'<p class="small[^"]*why[^"]*">(.*?)</p>', row, re.S))
            out[int(rid.group(1))] = unescape(text)
    return out


def outvoted_by_one_attacker(c: Campaign) -> tuple[int, int, int]:
    """On a quorum-2 campaign of one task: an honest result, then two wrong ones from one
    attacker's two sockets (one network, two browser profiles). Returns the result ids
    (honest, liar, liar)."""
    from rewards import validation

    honest = session("198.51.100.0/24", "h1")
    liar1, liar2 = session("203.0.113.0/24", "x1"), session("203.0.113.0/24", "x2")
    (lh,) = scheduler.lease(honest, 1)
    (l1,) = scheduler.lease(liar1, 1)
    assert scheduler.lease(liar2, 1) == []  # the lease rule already keeps it away...
    scheduler.submit_results(honest, [ok(lh, b"right")])
    scheduler.submit_results(liar1, [ok(l1, b"wrong")])
    # ...so, as if the network rule had been off when it leased, give it the third replica.
    third = Result.objects.get(task__campaign=c, state=Result.State.UNSENT)
    Result.objects.filter(pk=third.pk).update(
        state=Result.State.RETURNED, outcome=Result.Outcome.SUCCESS, output=b"wrong",
        output_sha256=Result.objects.get(pk=l1.lease).output_sha256, session_id=liar2.id,
        origin=liar2.origin, profile=liar2.profile,
    )  # fmt: skip
    validation.revalidate([third.task_id])
    return lh.lease, l1.lease, third.pk


def agree_independently(c: Campaign) -> int:
    other = session("192.0.2.0/24", "h2")
    (lo,) = scheduler.lease(other, 1)
    scheduler.submit_results(other, [ok(lo, b"right")])
    return lo.lease


@pytest.mark.django_db
def test_the_validation_page_says_why_and_who_did_not_outvote(make_campaign, people):
    c = make_campaign(["a"], min_quorum=2, target_replicas=3)
    honest, liar1, liar2 = outvoted_by_one_attacker(c)
    assert Result.objects.get(pk=honest).validation == V.PENDING  # outvoted 2:1, not invalid
    owner = client_for(people.owner)
    page = why(owner, c)
    assert "Awaiting a quorum: 1 of 2" in page[honest]
    assert (
        "Not outvoted: the 2 results that disagree come from 1 independent volunteer"
        in (page[honest])
    )
    # An independent volunteer agrees with the honest one: a quorum of two, the liars invalid.
    second = agree_independently(c)
    assert Result.objects.get(pk=honest).validation == V.VALID
    page = why(owner, c)
    assert "a quorum of 2 independent volunteers agreed" in page[honest]
    assert "Not outvoted" in page[honest]
    assert "a quorum of 2 independent volunteers agreed" in page[second]
    for liar in (liar1, liar2):
        assert Result.objects.get(pk=liar).validation == V.INVALID
        assert "disagrees with the canonical result, on which 2 independent" in page[liar]
        assert "Not outvoted" not in page[liar]


@pytest.mark.django_db
def test_the_validation_page_names_single_and_trusted_acceptances(make_campaign, people):
    single = make_campaign(["a"])
    s = session("198.51.100.0/24", "p")
    (lease,) = scheduler.lease(s, 1)
    scheduler.submit_results(s, [ok(lease, b"x")])
    owner = client_for(people.owner)
    assert "a quorum of 1 compares it with nothing" in why(owner, single)[lease.lease]
    adaptive = make_campaign(["b"], min_quorum=2, target_replicas=2, adaptive_replication=True)
    r = Result.objects.filter(campaign=adaptive).first()
    assert r is not None
    Result.objects.filter(pk=r.pk).update(
        state=Result.State.RETURNED, outcome=Result.Outcome.SUCCESS, validation=V.VALID,
        basis=Result.Basis.TRUSTED, output=b"y",
    )  # fmt: skip
    assert "a volunteer trusted on this kernel" in why(owner, adaptive)[r.pk]
