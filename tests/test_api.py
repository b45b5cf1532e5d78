"""The REST API: every endpoint for the owner, the teammate, the outsider, an anonymous caller
and API tokens of both organizations; inputs, errors, the OpenAPI schema, and streaming export.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgpack
import pytest
from django.db import connection, connections
from django.test import Client, RequestFactory

from accounts import services as account_services
from accounts.models import ApiToken, EmbedSite, Membership, Organization
from campaigns import services
from campaigns.api.export import CSV_COLUMNS, export_chunks
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Kernel, Result, Task
from tests.conftest import kernel_bytes

API = "/api/v1"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"


# --- callers ------------------------------------------------------------------------------------


@dataclass
class World:
    """Rows of org alpha (and tokens of both organizations) every endpoint test starts from."""

    people: Any
    kernel: Kernel
    draft: Campaign
    running: Campaign
    paused: Campaign
    generated: Campaign
    token: ApiToken
    alpha_token: str
    beta_token: str
    site: EmbedSite


@pytest.fixture
def world(people, django_capture_on_commit_callbacks) -> World:
    org = people.org
    kernel = services.kernel_upload(
        organization=org, name="echo", data=kernel_bytes("echo"), created_by=people.owner
    )
    draft = services.campaign_create(organization=org, name="draft", kernel=kernel)
    services.tasks_add(campaign=draft, specs=[TaskSpec(input=x) for x in (b"a", b"bb", b"ccc")])
    running = services.campaign_create(organization=org, name="running", kernel=kernel)
    services.tasks_add(campaign=running, specs=[TaskSpec(input=b"x")])
    services.campaign_start(campaign=running)
    paused = services.campaign_create(organization=org, name="paused", kernel=kernel)
    services.tasks_add(campaign=paused, specs=[TaskSpec(input=b"y")])
    services.campaign_start(campaign=paused)
    services.campaign_pause(campaign=paused)
    gen = services.kernel_upload(organization=org, name="gen", data=kernel_bytes("montecarlo_gen"))
    mc = services.kernel_upload(organization=org, name="mc", data=kernel_bytes("montecarlo"))
    # Jobs run eagerly in tests, after commit: the generator has produced its tasks here.
    with django_capture_on_commit_callbacks(execute=True):
        generated = services.campaign_create(
            organization=org,
            name="generated",
            kernel=mc,
            input_source=Campaign.InputSource.GENERATOR,
            generator=gen,
            generator_args=["3", "1000"],
        )
    token, alpha_raw = account_services.token_issue(
        organization=org, name="ci", created_by=people.owner
    )
    _, beta_raw = account_services.token_issue(
        organization=people.other_org, name="beta ci", created_by=people.outsider
    )
    site = account_services.site_register(
        organization=org, name="Blog", origin="https://blog.example"
    )
    generated.refresh_from_db()
    return World(
        people=people,
        kernel=kernel,
        draft=draft,
        running=running,
        paused=paused,
        generated=generated,
        token=token,
        alpha_token=alpha_raw,
        beta_token=beta_raw,
        site=site,
    )


CALLERS = ["owner", "teammate", "outsider", "anonymous", "alpha_token", "beta_token"]


def client_for(world: World, caller: str) -> Client:
    if caller == "alpha_token":
        return Client(headers={"Authorization": f"Bearer {world.alpha_token}"})
    if caller == "beta_token":
        return Client(headers={"Authorization": f"Bearer {world.beta_token}"})
    client = Client()
    user = {
        "owner": world.people.owner,
        "teammate": world.people.teammate,
        "outsider": world.people.outsider,
    }.get(caller)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def owner(world) -> Client:
    return client_for(world, "owner")


def chunks(response) -> Iterator[bytes]:
    """A streaming response's chunks (typed loosely: the test client's response types do not
    declare streaming_content)."""
    return iter(response.streaming_content)


def streamed(response) -> bytes:
    return b"".join(chunks(response))


def assert_error(response, status: int, code: str | None = None, message: str = "") -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body
    if message:
        assert message in body["error"]["message"], body
    return body["error"]


# --- every endpoint, every caller ---------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str  # formatted with the World's attributes
    body: Any = None
    content_type: str | None = None


def _ndjson_body(w: World) -> bytes:
    return b'"t1"\n{"input": "t2"}\n'


# Expected status per caller. Members of alpha (owner, teammate) and alpha's token succeed,
# except where only owners may act (teammate: 403); anonymous callers get 401; the outsider
# and beta's token get 404 for anything of alpha's (their own lists are covered below).
OK = {"owner": 200, "teammate": 200, "alpha_token": 200}
OWNERS = {"owner": 200, "teammate": 403, "alpha_token": 200}
DENIED = {"outsider": 404, "beta_token": 404, "anonymous": 401}

ENDPOINTS: dict[str, tuple[Call, dict[str, int]]] = {
    "organization detail": (Call("get", "/organizations/alpha"), OK),
    "token list": (Call("get", "/organizations/alpha/tokens"), OWNERS),
    # A token cannot mint tokens (they would outlive its revocation).
    "token create": (
        Call("post", "/organizations/alpha/tokens", {"name": "laptop"}),
        {**OWNERS, "owner": 201, "alpha_token": 403},
    ),
    "token revoke": (Call("post", "/organizations/alpha/tokens/{w.token.pk}/revoke"), OWNERS),
    "site list": (Call("get", "/organizations/alpha/sites"), OK),
    "site create": (
        Call("post", "/organizations/alpha/sites", {"name": "Shop", "origin": "https://shop.test"}),
        {**OWNERS, "owner": 201, "alpha_token": 201},
    ),
    "kernel detail": (Call("get", "/kernels/{w.kernel.pk}"), OK),
    "kernel upload": (
        Call("post", "/kernels?organization=alpha&name=noop", "noop", "application/wasm"),
        {"owner": 201, "teammate": 201, "alpha_token": 201},
    ),
    "campaign create": (
        Call("post", "/campaigns", {"organization": "alpha", "name": "c", "kernel": "{kernel}"}),
        {"owner": 201, "teammate": 201, "alpha_token": 201},
    ),
    "campaign detail": (Call("get", "/campaigns/{w.draft.pk}"), OK),
    "campaign progress": (Call("get", "/campaigns/{w.running.pk}/progress"), OK),
    "campaign start": (Call("post", "/campaigns/{w.draft.pk}/start"), OK),
    "campaign pause": (Call("post", "/campaigns/{w.running.pk}/pause"), OK),
    "campaign resume": (Call("post", "/campaigns/{w.paused.pk}/resume"), OK),
    "campaign cancel": (Call("post", "/campaigns/{w.running.pk}/cancel"), OK),
    "campaign regenerate": (Call("post", "/campaigns/{w.generated.pk}/regenerate", {}), OK),
    "task list": (Call("get", "/campaigns/{w.draft.pk}/tasks"), OK),
    "task add": (
        Call("post", "/campaigns/{w.draft.pk}/tasks", "ndjson", NDJSON),
        {"owner": 201, "teammate": 201, "alpha_token": 201},
    ),
    "results export": (Call("get", "/campaigns/{w.running.pk}/results?format=csv"), OK),
}


def _send(client: Client, call: Call, w: World):
    path = API + call.path.format(w=w)
    if call.body == "noop":
        return client.post(path, kernel_bytes("noop"), content_type=call.content_type or "")
    if call.body == "ndjson":
        return client.post(path, _ndjson_body(w), content_type=call.content_type or "")
    if call.method == "get":
        return client.get(path)
    body = call.body
    if isinstance(body, dict):
        body = {k: (w.kernel.pk if v == "{kernel}" else v) for k, v in body.items()}
    return client.post(path, json.dumps(body or {}), content_type="application/json")


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_for_every_caller(world, endpoint, caller):
    call, expected = ENDPOINTS[endpoint]
    status = {**DENIED, **expected}[caller]
    response = _send(client_for(world, caller), call, world)
    if status >= 400:
        error = assert_error(response, status)
        if status == 404:
            # Nothing about alpha's rows leaks (see also test_missing_and_forbidden_look_alike).
            text = json.dumps(error)
            assert "Alpha Lab" not in text and "draft" not in text and "echo" not in text
        if status == 401:
            assert response["WWW-Authenticate"] == "Bearer"
    else:
        assert response.status_code == status, response.content[:500]


LISTS = ["/organizations", "/kernels", "/campaigns"]


@pytest.mark.parametrize("path", LISTS)
def test_lists_show_each_caller_only_their_organizations(world, path):
    people = world.people
    services.kernel_upload(organization=people.other_org, name="b", data=kernel_bytes("noop"))
    seen = {}
    for caller in CALLERS:
        response = client_for(world, caller).get(API + path)
        if caller == "anonymous":
            assert_error(response, 401, "not_authenticated")
            continue
        assert response.status_code == 200
        rows = response.json()["results"]
        seen[caller] = {row.get("organization", row.get("slug")) for row in rows}
    assert seen["owner"] == seen["teammate"] == seen["alpha_token"] == {"alpha"}
    if path == "/campaigns":  # beta has no campaigns
        assert seen["outsider"] == seen["beta_token"] == set()
    else:
        assert seen["outsider"] == seen["beta_token"] == {"beta"}


def test_each_caller_is_rate_limited_on_its_own(world, settings, monkeypatch):
    import uuid

    from ccgsc.throttling import ApiRateThrottle

    # Counters live in the cache (Redis under CI), which outlives a test run: fresh keys.
    fresh = f"throttle_%(scope)s_{uuid.uuid4().hex}_%(ident)s"
    monkeypatch.setattr(ApiRateThrottle, "cache_format", fresh)
    settings.API_RATE = "3/minute"
    token, owner, teammate = (client_for(world, c) for c in ("alpha_token", "owner", "teammate"))
    for _ in range(3):
        assert token.get(API + "/kernels").status_code == 200
    refused = token.get(API + "/kernels")
    body = assert_error(refused, 429, "throttled")
    assert "seconds" in body["message"] and int(refused["Retry-After"]) > 0
    # The token's organization's members, each with their own allowance, are unaffected.
    for _ in range(3):
        assert owner.get(API + "/kernels").status_code == 200
    assert owner.get(API + "/kernels").status_code == 429
    assert teammate.get(API + "/kernels").status_code == 200
    settings.API_RATE = ""  # no limit
    assert token.get(API + "/kernels").status_code == 200


@pytest.mark.parametrize("path", ["/nothing", "/campaigns/1/nothing", "/", "/v2/campaigns"])
def test_unknown_api_urls_answer_in_the_error_shape(client, path):
    body = assert_error(client.get(API + path), 404, "not_found")
    assert "/api/v1/docs/" in body["message"]


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options", "head"])
@pytest.mark.parametrize("path", ["/nothing", "/campaigns/1/nothing", "/"])
def test_any_method_on_an_unknown_api_url_is_the_json_404(db, method, path):
    """Not the HTML CSRF 403 a cookie-less POST used to get: the CSRF check runs for real here
    (the test client skips it unless asked)."""
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(API + path)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    if method != "head":
        assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("post", "/status", "GET, HEAD"),
        ("delete", "/status", "GET, HEAD"),
        ("get", "/work", "POST"),
        ("put", "/work", "POST"),
        ("put", "/kernels", "GET, POST, HEAD, OPTIONS"),
        ("delete", "/organizations", "GET, HEAD, OPTIONS"),
    ],
)
def test_unsupported_methods_on_known_api_urls_are_json_405(world, method, path, allow):
    client = Client(
        enforce_csrf_checks=True, headers={"Authorization": f"Bearer {world.alpha_token}"}
    )
    response = getattr(client, method)(API + path)
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == allow


def test_a_session_post_without_its_csrf_token_is_a_json_403(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.people.owner)
    response = client.post(API + "/campaigns", {"name": "x"})
    assert_error(response, 403)


def test_the_catch_all_leaves_the_workers_endpoints_alone(client, db):
    assert client.get(API + "/status").status_code == 200


@pytest.mark.parametrize("path", ["/kernels?organization=alpha", "/campaigns?organization=alpha"])
def test_filtering_by_another_organization_is_404(world, path):
    assert_error(client_for(world, "outsider").get(API + path), 404)
    assert client_for(world, "teammate").get(API + path).status_code == 200


def test_missing_and_forbidden_look_alike(world):
    outsider = client_for(world, "outsider")
    missing = Campaign.objects.order_by("-pk").first().pk + 1000  # type: ignore[union-attr]
    for path in ("", "/progress", "/tasks", "/results"):
        theirs = outsider.get(f"{API}/campaigns/{world.draft.pk}{path}")
        nobodys = outsider.get(f"{API}/campaigns/{missing}{path}")
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json() == {
            "error": {"code": "not_found", "message": f"Campaign {world.draft.pk} not found."}
        }
        assert nobodys.json()["error"]["message"] == f"Campaign {missing} not found."
    theirs = outsider.get(f"{API}/kernels/{world.kernel.pk}")
    assert theirs.json()["error"]["message"] == f"Kernel {world.kernel.pk} not found."
    theirs = outsider.get(f"{API}/organizations/alpha/sites")
    nobodys = outsider.get(f"{API}/organizations/gamma/sites")
    assert theirs.json()["error"]["message"] == "Organization alpha not found."
    assert nobodys.json()["error"]["message"] == "Organization gamma not found."


# --- organizations, tokens, sites --------------------------------------------------------------


def test_organizations_list_names_the_callers_role(world):
    people = world.people
    Membership.objects.create(
        user=people.teammate, organization=people.other_org, role=Membership.Role.OWNER
    )
    rows = client_for(world, "teammate").get(f"{API}/organizations").json()["results"]
    assert {(r["slug"], r["role"]) for r in rows} == {("alpha", "member"), ("beta", "owner")}
    rows = client_for(world, "alpha_token").get(f"{API}/organizations").json()["results"]
    assert [(r["slug"], r["role"]) for r in rows] == [("alpha", "token")]


def test_a_new_token_is_shown_once_works_and_stops_working_when_revoked(world, owner):
    created = owner.post(
        f"{API}/organizations/alpha/tokens", {"name": "laptop"}, content_type="application/json"
    )
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("ccgsc_") and created.json()["active"] is True
    listed = owner.get(f"{API}/organizations/alpha/tokens").json()["results"]
    assert raw not in json.dumps(listed)
    assert {t["name"] for t in listed} == {"ci", "laptop"}

    token_client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert token_client.get(f"{API}/campaigns").status_code == 200
    revoked = owner.post(f"{API}/organizations/alpha/tokens/{created.json()['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert_error(token_client.get(f"{API}/campaigns"), 401, message="Invalid or revoked")


def test_a_token_acts_for_its_organization_after_its_creator_is_gone(world):
    _, raw = account_services.token_issue(
        organization=world.people.org, name="orphan", created_by=None
    )
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    response = client.post(
        f"{API}/kernels?name=noop", kernel_bytes("noop"), content_type="application/wasm"
    )
    assert response.status_code == 201, response.content
    assert response.json()["organization"] == "alpha"
    assert client.post(f"{API}/campaigns/{world.draft.pk}/start").status_code == 200


def test_token_create_needs_a_name(owner):
    error = assert_error(
        owner.post(f"{API}/organizations/alpha/tokens", {}, content_type="application/json"),
        400,
        "invalid",
    )
    assert "name" in error["fields"]


def test_revoking_another_organizations_token_is_404(world):
    beta_token = ApiToken.objects.get(organization=world.people.other_org)
    owner = client_for(world, "owner")
    assert_error(owner.post(f"{API}/organizations/alpha/tokens/{beta_token.pk}/revoke"), 404)
    assert_error(owner.post(f"{API}/organizations/beta/tokens/{beta_token.pk}/revoke"), 404)
    beta_token.refresh_from_db()
    assert beta_token.is_active


def test_sites_are_registered_with_a_normalized_origin_and_their_tag(world, owner):
    response = owner.post(
        f"{API}/organizations/alpha/sites",
        {"name": "Shop", "origin": "HTTPS://Shop.Example:443/"},
        content_type="application/json",
    )
    assert response.status_code == 201
    site = response.json()
    assert site["origin"] == "https://shop.example"
    assert f'data-site="{site["key"]}"' in site["script_tag"]
    rows = client_for(world, "teammate").get(f"{API}/organizations/alpha/sites").json()
    assert {r["origin"] for r in rows["results"]} == {
        "https://blog.example",
        "https://shop.example",
    }


@pytest.mark.parametrize(
    ("origin", "message"),
    [
        ("blog.example", "has no scheme"),
        ("ftp://x.example", "Only http:// and https://"),
        ("https://blog.example", "already registered"),
    ],
)
def test_bad_site_origins_are_rejected_with_the_reason(owner, origin, message):
    response = owner.post(
        f"{API}/organizations/alpha/sites",
        {"name": "x", "origin": origin},
        content_type="application/json",
    )
    assert_error(response, 400, "rejected", message)


# --- kernels -------------------------------------------------------------------------------------


def test_kernel_upload_as_multipart_then_the_same_bytes_again(owner):
    wasm = kernel_bytes("primes")
    form = {"file": io.BytesIO(wasm), "name": "primes", "description": "sieve"}
    first = owner.post(f"{API}/kernels", form)
    assert first.status_code == 201, first.content
    kernel = first.json()
    assert kernel["organization"] == "alpha" and kernel["kind"] == "wasm"
    assert kernel["size"] == len(wasm) and kernel["memory_max"] > 0
    again = owner.post(f"{API}/kernels", {"file": io.BytesIO(wasm), "name": "other"})
    assert again.status_code == 200 and again.json()["id"] == kernel["id"]
    assert again.json()["name"] == "primes"  # the existing kernel as it is: nothing renamed
    assert Kernel.objects.filter(sha256=kernel["sha256"]).count() == 1
    download = owner.get(kernel["download_url"].removeprefix("http://testserver"))
    assert b"".join(download) if download.streaming else download.content == wasm


def test_kernel_upload_as_the_raw_body(owner):
    response = owner.post(
        f"{API}/kernels?name=noop", kernel_bytes("noop"), content_type="application/wasm"
    )
    assert response.status_code == 201
    assert response.json()["name"] == "noop"
    detail = owner.get(f"{API}/kernels/{response.json()['id']}")
    assert detail.json()["sha256"] == response.json()["sha256"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\0asm garbage", "The kernel was rejected"),
        (b"", "The kernel file is empty."),
    ],
)
def test_rejected_kernels_say_why(owner, body, message):
    response = owner.post(f"{API}/kernels", body, content_type="application/wasm")
    assert_error(response, 400, "rejected", message)


def test_a_kernel_without_a_memory_maximum_gets_the_cap_and_keeps_its_hash(owner):
    uploaded = kernel_bytes("nomax")
    response = owner.post(f"{API}/kernels", uploaded, content_type="application/wasm")
    assert response.status_code == 201, response.content
    kernel = response.json()
    assert kernel["original_sha256"] == hashlib.sha256(uploaded).hexdigest()
    assert kernel["sha256"] != kernel["original_sha256"] and kernel["memory_max"] > 0
    download = owner.get(kernel["download_url"].removeprefix("http://testserver"))
    served = b"".join(download) if download.streaming else download.content
    assert hashlib.sha256(served).hexdigest() == kernel["sha256"]


def test_a_kernel_upload_of_the_wrong_content_type_is_415(owner):
    response = owner.post(f"{API}/kernels", b"hello", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type", "text/plain")


def test_a_member_of_several_organizations_must_name_one(world):
    Membership.objects.create(user=world.people.owner, organization=world.people.other_org)
    response = client_for(world, "owner").post(
        f"{API}/kernels", kernel_bytes("noop"), content_type="application/wasm"
    )
    error = assert_error(response, 400, "invalid")
    assert "several organizations" in error["fields"]["organization"][0]


# --- campaigns ---------------------------------------------------------------------------------


def test_create_an_api_campaign_with_policies(world, owner):
    response = owner.post(
        f"{API}/campaigns",
        {
            "name": "mc",
            "kernel": world.kernel.pk,
            "args": ["-v"],
            "env": {"MODE": "fast"},
            "priority": 50,
            "min_quorum": 2,
            "target_replicas": 3,
            "task_timeout": 60,
            "max_attempts": 2,
            "points_per_task": 7,
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["state"] == "draft" and data["input_source"] == "api"
    assert (data["priority"], data["min_quorum"], data["target_replicas"]) == (50, 2, 3)
    assert data["args"] == ["-v"] and data["env"] == {"MODE": "fast"}
    campaign = Campaign.objects.get(pk=data["id"])
    assert campaign.organization == world.people.org and campaign.created_by == world.people.owner


def test_create_a_generator_campaign_and_start_it(world, owner, django_capture_on_commit_callbacks):
    gen = Kernel.objects.get(name="gen")
    mc = Kernel.objects.get(name="mc")
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post(
            f"{API}/campaigns",
            {
                "name": "pi",
                "kernel": mc.pk,
                "generator": gen.pk,
                "generator_args": ["5", "1000"],
                "start": True,
            },
            content_type="application/json",
        )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["input_source"] == "generator" and data["state"] == "running"
    detail = owner.get(f"{API}/campaigns/{data['id']}").json()
    assert detail["tasks_total"] == 5 and detail["input_state"] == "ready"


@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_create_a_campaign_from_an_uploaded_task_file(world, owner, fmt):
    tasks = [{"input": "1 1000"}, {"input_b64": base64.b64encode(b"2 1000").decode()}, "3 1000"]
    if fmt == "jsonl":
        content = "\n".join(json.dumps(t) for t in tasks).encode()
    else:
        content = b"".join(msgpack.packb(t) for t in tasks)
    upload = io.BytesIO(content)
    upload.name = f"tasks.{fmt}"
    response = owner.post(
        f"{API}/campaigns",
        {
            "name": "from file",
            "kernel": str(world.kernel.pk),
            "task_file": upload,
            "args": '["--fast"]',
            "static_data": io.BytesIO(b"table"),
        },
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["input_source"] == "file" and data["tasks_total"] == 3
    assert data["args"] == ["--fast"] and data["static_data_sha256"]
    inputs = Task.objects.filter(campaign_id=data["id"]).order_by("seq").values_list("input")
    assert [bytes(i[0]) for i in inputs] == [b"1 1000", b"2 1000", b"3 1000"]


def test_a_bad_task_file_line_rejects_the_campaign_naming_the_line(world, owner):
    upload = io.BytesIO(b'"ok"\n{"input": 5}\n')
    upload.name = "tasks.jsonl"
    before = Campaign.objects.count()
    response = owner.post(
        f"{API}/campaigns", {"name": "bad", "kernel": str(world.kernel.pk), "task_file": upload}
    )
    assert_error(response, 400, "rejected", "The task file was rejected: line 2")
    assert Campaign.objects.count() == before


@pytest.mark.parametrize(
    ("body", "field_or_message"),
    [
        ({"name": "x"}, "kernel"),
        ({"name": "x", "kernel": 999999}, "kernel"),
        ({"name": "x", "kernel": "{kernel}", "priority": 0}, "priority"),
        ({"name": "x", "kernel": "{kernel}", "args": "nope"}, "args"),
        ({"name": "x", "kernel": "{kernel}", "min_quorum": 3}, "at least the quorum"),
        ({"name": "x", "kernel": "{kernel}", "input_source": "file"}, "needs a task file"),
        ({"name": "x", "kernel": "{kernel}", "input_source": "generator"}, "generator kernel"),
    ],
)
def test_bad_campaign_input_gets_a_clear_error(world, owner, body, field_or_message):
    body = {k: (world.kernel.pk if v == "{kernel}" else v) for k, v in body.items()}
    response = owner.post(f"{API}/campaigns", body, content_type="application/json")
    error = assert_error(response, 400)
    assert field_or_message in error.get("fields", {}) or field_or_message in error["message"]


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"args": ["1", {"a": 2}]}, "args", "args[1]: not a valid string."),
        ({"args": ["ok", None]}, "args", "args[1]: this field may not be null."),
        ({"generator_args": [["x"]]}, "generator_args", "generator_args[0]: not a valid string."),
        ({"env": {"A": [1]}}, "env", 'env["A"]: not a valid string.'),
        ({"args": "notalist"}, "args", 'args must be a list of strings, like ["-n", "5"].'),
        ({"args": {"a": 1}}, "args", 'args must be a list of strings, like ["-n", "5"].'),
        ({"env": "x"}, "env", 'env must map variable names to strings, like {"MODE": "fast"}.'),
        ({"env": {"B=C": "d"}}, "env", 'env: "B=C" cannot be a variable name: it contains "=".'),
        ({"env": {"": "d"}}, "env", "env: a variable name cannot be empty."),
        ({"env": {"A\0": "d"}}, "env", "cannot be a variable name: it contains a NUL character"),
    ],
)
def test_bad_args_and_env_get_plain_messages_in_a_json_body(world, owner, extra, field, message):
    before = Campaign.objects.count()
    response = owner.post(
        f"{API}/campaigns",
        {"name": "x", "kernel": world.kernel.pk, **extra},
        content_type="application/json",
    )
    error = assert_error(response, 400, "invalid")
    assert list(error["fields"]) == [field]
    assert message in error["fields"][field][0]
    assert "ErrorDetail" not in response.content.decode()
    assert "JSON-encoded" not in response.content.decode()  # a JSON body is not a form
    assert Campaign.objects.count() == before


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"args": "nope"}, "args", "args is not valid JSON: in a form, give it JSON-encoded"),
        ({"args": '"one"'}, "args", "args must be a list of strings"),
        ({"env": '{"B=C": "d"}'}, "env", 'env: "B=C" cannot be a variable name'),
    ],
)
def test_bad_args_and_env_in_a_form_say_what_to_send(world, owner, extra, field, message):
    response = owner.post(f"{API}/campaigns", {"name": "x", "kernel": world.kernel.pk, **extra})
    error = assert_error(response, 400, "invalid")
    assert message in error["fields"][field][0]


def test_an_environment_that_can_reach_a_kernel_is_accepted(world, owner):
    # "=" may be in a value (the kernel sees A=b=c).
    response = owner.post(
        f"{API}/campaigns",
        {"name": "x", "kernel": world.kernel.pk, "args": ["-n", "5"], "env": {"A": "b=c"}},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["args"] == ["-n", "5"]
    assert response.json()["env"] == {"A": "b=c"}
    # Numbers are not strings here either, as in task files and streams.
    for extra, message in (
        ({"args": ["-n", 5]}, "args[1]: not a valid string."),
        ({"env": {"N": 7}}, 'env["N"]: not a valid string.'),
    ):
        bad = owner.post(
            f"{API}/campaigns",
            {"name": "y", "kernel": world.kernel.pk, **extra},
            content_type="application/json",
        )
        error = assert_error(bad, 400, "invalid")
        field = next(iter(extra))
        assert error["fields"][field] == [message]


def test_a_kernel_of_another_organization_cannot_be_used(world):
    beta_kernel = services.kernel_upload(
        organization=world.people.other_org, name="b", data=kernel_bytes("noop")
    )
    response = client_for(world, "owner").post(
        f"{API}/campaigns",
        {"name": "x", "kernel": beta_kernel.pk},
        content_type="application/json",
    )
    error = assert_error(response, 400, "invalid")
    assert "No kernel" in error["fields"]["kernel"][0]


def test_lifecycle_actions_move_the_campaign_and_refuse_impossible_moves(world, owner):
    url = f"{API}/campaigns/{world.draft.pk}"
    assert_error(owner.post(f"{url}/pause"), 409, "conflict", "draft campaign cannot be")
    assert owner.post(f"{url}/start").json()["state"] == "running"
    assert owner.post(f"{url}/pause").json()["state"] == "paused"
    assert owner.post(f"{url}/resume").json()["state"] == "running"
    assert owner.post(f"{url}/cancel").json()["state"] == "cancelled"
    assert_error(owner.post(f"{url}/start"), 409, "conflict", "cancelled campaign cannot be")


def test_regenerate_with_new_arguments(world, owner, django_capture_on_commit_callbacks):
    url = f"{API}/campaigns/{world.generated.pk}/regenerate"
    assert world.generated.tasks_total == 3
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post(
            url, {"generator_args": ["4", "100"]}, content_type="application/json"
        )
    assert response.status_code == 200, response.content
    assert response.json()["generator_args"] == ["4", "100"]
    assert owner.get(f"{API}/campaigns/{world.generated.pk}").json()["tasks_total"] == 4
    assert_error(owner.post(f"{API}/campaigns/{world.draft.pk}/regenerate"), 409, "conflict")


def test_detail_and_progress_show_the_counters(world, owner):
    campaign = world.running
    Task.objects.filter(campaign=campaign).update(state=Task.State.DONE)
    Campaign.objects.filter(pk=campaign.pk).update(tasks_done=1)
    detail = owner.get(f"{API}/campaigns/{campaign.pk}").json()
    assert (detail["tasks_total"], detail["tasks_done"], detail["progress"]) == (1, 1, 1.0)
    progress = owner.get(f"{API}/campaigns/{campaign.pk}/progress").json()
    assert progress["tasks_remaining"] == 0 and progress["state"] == "running"
    assert progress["rate_per_second"] == 0.0 and progress["eta_seconds"] is None


def test_campaign_list_filters_by_state(world, owner):
    rows = owner.get(f"{API}/campaigns?state=paused").json()["results"]
    assert [r["name"] for r in rows] == ["paused"]
    assert_error(owner.get(f"{API}/campaigns?state=sleeping"), 400, "rejected", "sleeping")


# --- tasks -------------------------------------------------------------------------------------


def test_task_list_pages_in_order_with_a_state_filter(world, owner):
    campaign = world.draft
    services.tasks_add(campaign=campaign, specs=[TaskSpec(input=b"%d" % i) for i in range(7)])
    Task.objects.filter(campaign=campaign, seq__in=[1, 4]).update(state=Task.State.DONE)
    seqs, url = [], f"{API}/campaigns/{campaign.pk}/tasks?limit=4"
    while url:
        page = owner.get(url).json()
        seqs += [t["seq"] for t in page["results"]]
        url = page["next"] and page["next"].removeprefix("http://testserver")
    assert seqs == list(range(10))
    done = owner.get(f"{API}/campaigns/{campaign.pk}/tasks?state=done&include=input").json()
    assert [(t["seq"], t["state"], t["input_size"]) for t in done["results"]] == [
        (1, "done", 2),
        (4, "done", 1),
    ]
    assert base64.b64decode(done["results"][0]["input_b64"]) == b"bb"
    assert_error(owner.get(f"{API}/campaigns/{campaign.pk}/tasks?state=leased"), 400)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        base64.b64encode(b"p=abc").decode(),  # a position that is no id
        base64.b64encode(b"p=" + b"9" * 25).decode(),  # no id is that large
        base64.b64encode(b"o=-1").decode(),
        base64.b64encode(b"r=x").decode(),
        "\u00e9t\u00e9",
    ],
)
@pytest.mark.parametrize("path", ["/campaigns", "/kernels", "/campaigns/{pk}/tasks"])
def test_a_malformed_cursor_is_a_400_saying_so(world, owner, path, cursor):
    url = API + path.format(pk=world.draft.pk)
    response = owner.get(url, {"cursor": cursor})
    assert_error(response, 400, "invalid_cursor", "follow a page's `next`")


def test_task_list_query_count_does_not_grow_with_the_page(
    world, owner, django_assert_max_num_queries
):
    services.tasks_add(campaign=world.draft, specs=[TaskSpec(input=b"x")] * 300)
    with django_assert_max_num_queries(8):
        response = owner.get(f"{API}/campaigns/{world.draft.pk}/tasks?limit=300")
    assert len(response.json()["results"]) == 300


def test_bulk_add_tasks_as_json_lines(world, owner):
    body = b'"plain"\n\n{"input": "with args", "args": ["-n"], "env": {"K": "V"}}\n'
    body += b'{"input_b64": "AAEC"}\n'
    response = owner.post(f"{API}/campaigns/{world.draft.pk}/tasks", body, content_type=NDJSON)
    assert response.status_code == 201, response.content
    assert response.json() == {"added": 3, "tasks_total": 6}
    tasks = list(Task.objects.filter(campaign=world.draft, seq__gte=3).order_by("seq"))
    assert [bytes(t.input) for t in tasks] == [b"plain", b"with args", b"\0\1\2"]
    assert tasks[1].args == ["-n"] and tasks[1].env == {"K": "V"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"input": "x", "env": {"B=C": "d"}}', 'line 2: env: "B=C" cannot be a variable name'),
        ('{"input": "x", "env": {"": "d"}}', "line 2: env: a variable name cannot be empty"),
        ('{"input": "x", "args": ["a", 1]}', "line 2: args[1]: not a valid string"),
        ('{"input": "x", "args": "-n"}', "line 2: args must be a list of strings"),
    ],
)
def test_bulk_add_refuses_args_and_env_a_kernel_cannot_receive(world, owner, line, message):
    body = f'"fine"\n{line}\n'.encode()
    response = owner.post(f"{API}/campaigns/{world.draft.pk}/tasks", body, content_type=NDJSON)
    assert_error(response, 400, "invalid_tasks", message)
    assert Task.objects.filter(campaign=world.draft).count() == 3


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", NDJSON),
        (b"\n\n", NDJSON),
        (b"", MSGPACK),
        (b"", "application/json"),
        (b"", "text/plain"),
    ],
)
def test_a_body_without_tasks_is_refused_and_changes_nothing(world, owner, body, content_type):
    url = f"{API}/campaigns/{world.draft.pk}/tasks"
    response = owner.post(url, body, content_type=content_type)
    error = assert_error(response, 400, "invalid_tasks", "The body held no tasks")
    assert "plain text lines" in error["message"]
    world.draft.refresh_from_db()
    assert world.draft.tasks_total == 3
    assert Task.objects.filter(campaign=world.draft).count() == 3


def test_bulk_add_tasks_as_a_msgpack_stream(world, owner):
    body = b"".join(msgpack.packb(t) for t in [b"\xff\x00", {"input": b"raw"}, "text"])
    response = owner.post(f"{API}/campaigns/{world.draft.pk}/tasks", body, content_type=MSGPACK)
    assert response.status_code == 201, response.content
    assert response.json()["added"] == 3
    inputs = Task.objects.filter(campaign=world.draft, seq__gte=3).order_by("seq")
    assert [bytes(t.input) for t in inputs] == [b"\xff\x00", b"raw", b"text"]


def test_bulk_add_to_a_running_campaign_makes_the_tasks_leasable(world, owner):
    response = owner.post(
        f"{API}/campaigns/{world.running.pk}/tasks", b'"more"\n', content_type=NDJSON
    )
    assert response.status_code == 201
    assert Result.objects.filter(campaign=world.running, state=Result.State.UNSENT).count() == 2


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'"ok"\n{"input": "x", "oops": 1}\n', NDJSON, "line 2: unknown field(s) oops"),
        (b'"ok"\nnot json\n', NDJSON, "line 2: not valid JSON"),
        (msgpack.packb("ok") + b"\xc1", MSGPACK, "object 2"),
        (msgpack.packb("ok") + msgpack.packb({"input": "x"})[:-1], MSGPACK, "ends in the middle"),
    ],
)
def test_a_bad_task_stream_adds_nothing_and_names_the_bad_item(
    world, owner, settings, body, content_type, message
):
    # Batches of one: the first good task is committed by tasks_add before the bad one is read,
    # unless the endpoint keeps the whole body in one transaction.
    settings.CCGSC = {**settings.CCGSC, "GENERATOR_BATCH": 1}
    url = f"{API}/campaigns/{world.draft.pk}/tasks"
    response = owner.post(url, body, content_type=content_type)
    assert_error(response, 400, "invalid_tasks", message)
    world.draft.refresh_from_db()
    assert world.draft.tasks_total == 3
    assert Task.objects.filter(campaign=world.draft).count() == 3


class GeneratedBody:
    """A request body made line by line as the server reads it, so the measurement below sees
    only what the server holds (the test client would keep a copy of a whole bytes body)."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self.lines = lines
        self.buffer = b""

    def readline(self, size: int = -1) -> bytes:
        line = self.buffer or next(self.lines, b"")
        cut = len(line) if size < 0 else size
        line, self.buffer = line[:cut], line[cut:]
        return line

    def read(self, size: int = -1) -> bytes:
        out: list[bytes] = []
        held = 0
        while size < 0 or held < size:
            piece = self.readline(-1 if size < 0 else size - held)
            if not piece:
                break
            out.append(piece)
            held += len(piece)
        return b"".join(out)


# Constant memory is a peak that does not grow with the input: measured at two sizes, four
# times apart, with batches small enough that both sizes take many of them. Holding the whole
# input (or the whole export) would make the larger peak about four times the smaller.
SMALL, BIG = 3_000, 12_000
NO_GROWTH = 1.5  # the larger peak may exceed the smaller by this factor at most


def _bulk_add_peak(world: World, count: int, line_size: int = 212) -> int:
    """Add `count` tasks in one streamed request (`line_size` bytes a line); the peak of
    memory allocated meanwhile."""
    from rest_framework.test import force_authenticate

    from campaigns.api.campaigns import TaskListApi

    def lines() -> Iterator[bytes]:
        for i in range(count):
            yield b'{"input": "%08d %s"}\n' % (i, b"x" * (line_size - 23))

    request = RequestFactory().post(
        f"{API}/campaigns/{world.draft.pk}/tasks",
        CONTENT_TYPE=NDJSON,
        CONTENT_LENGTH=str(count * line_size),
        **cast(dict[str, Any], {"wsgi.input": GeneratedBody(lines())}),
    )
    force_authenticate(request, user=world.people.owner)
    tracemalloc.start()
    try:
        response = TaskListApi.as_view()(request, campaign_id=world.draft.pk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.data
    assert response.data["added"] == count
    return peak


def test_bulk_add_parses_the_stream_in_constant_memory(world, settings):
    settings.CCGSC = {**settings.CCGSC, "GENERATOR_BATCH": 250}
    _bulk_add_peak(world, 10)  # imports and caches, outside the measurements
    small, big = _bulk_add_peak(world, SMALL), _bulk_add_peak(world, BIG)
    assert Task.objects.filter(campaign=world.draft).count() == 10 + SMALL + BIG + 3
    # One batch of tasks (GENERATOR_BATCH) is held at a time, never the whole stream.
    assert big < small * NO_GROWTH, (small, big)


def test_bulk_add_of_the_wrong_content_type_is_415(world, owner):
    response = owner.post(
        f"{API}/campaigns/{world.draft.pk}/tasks", '["a"]', content_type="application/json"
    )
    assert_error(response, 415, "unsupported_media_type", "application/json")


def test_tasks_cannot_be_added_to_a_cancelled_campaign(world, owner):
    services.campaign_cancel(campaign=world.draft)
    response = owner.post(f"{API}/campaigns/{world.draft.pk}/tasks", b'"x"\n', content_type=NDJSON)
    assert_error(response, 400, "rejected", "cancelled campaign")


# --- results export ----------------------------------------------------------------------------


def complete_all(campaign: Campaign, output=lambda seq: b"out-%d" % seq) -> None:
    """Mark every task done with one valid canonical result (as the scheduler would)."""
    for task in Task.objects.filter(campaign=campaign):
        data = output(task.seq)
        Result.objects.filter(task=task).update(
            state=Result.State.RETURNED,
            outcome=Result.Outcome.SUCCESS,
            output=data,
            exit_code=0,
            runtime_ms=5,
            validation=Result.Validation.VALID,
        )
        task.state = Task.State.DONE
        task.canonical_result = Result.objects.filter(task=task).first()
        task.save(update_fields=["state", "canonical_result"])


def test_export_as_json_lines(world, owner):
    complete_all(world.draft)
    response = owner.get(f"{API}/campaigns/{world.draft.pk}/results?format=jsonl")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == NDJSON
    assert "campaign-" in response["Content-Disposition"]
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [(r["seq"], r["input_size"], r["exit_code"], r["state"]) for r in rows] == [
        (0, 1, 0, "done"),
        (1, 2, 0, "done"),
        (2, 3, 0, "done"),
    ]
    # Text stays text; the task's input and args come along.
    assert [(r["output"], r["output_encoding"]) for r in rows] == [
        ("out-0", "utf-8"),
        ("out-1", "utf-8"),
        ("out-2", "utf-8"),
    ]
    assert [(r["input"], r["input_encoding"], r["args"]) for r in rows] == [
        ("a", "utf-8", None),
        ("bb", "utf-8", None),
        ("ccc", "utf-8", None),
    ]


def test_export_as_csv(world, owner):
    complete_all(world.draft, output=lambda seq: bytes([seq, 255]))
    response = owner.get(f"{API}/campaigns/{world.draft.pk}/results?format=csv")
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["seq"]) for r in rows] == [0, 1, 2]
    assert [base64.b64decode(r["output"]) for r in rows] == [b"\0\xff", b"\1\xff", b"\2\xff"]
    assert {r["output_encoding"] for r in rows} == {"base64"}
    assert [r["input"] for r in rows] == ["a", "bb", "ccc"]
    assert rows[0]["runtime_ms"] == "5" and rows[0]["failure"] == ""


def test_export_as_msgpack_carries_raw_bytes(world, owner):
    complete_all(world.draft)
    response = owner.get(f"{API}/campaigns/{world.draft.pk}/results?format=msgpack")
    assert response["Content-Type"] == MSGPACK
    rows = list(msgpack.Unpacker(io.BytesIO(b"".join(response.streaming_content)), raw=False))
    assert [r["output"] for r in rows] == ["out-0", "out-1", "out-2"]
    assert rows[2]["input_size"] == 3 and rows[2]["input"] == "ccc"


def test_export_binary_output_and_large_input(world, owner):
    big = b"z" * 5000
    services.tasks_add(campaign=world.draft, specs=[TaskSpec(input=big, args=["-n", "3"])])
    complete_all(world.draft, output=lambda seq: b"\xff\x00" if seq == 3 else b"ok")
    url = f"{API}/campaigns/{world.draft.pk}/results?format="
    last = json.loads(b"".join(owner.get(url + "jsonl").streaming_content).splitlines()[-1])
    assert (last["args"], last["input_size"]) == (["-n", "3"], 5000)
    assert (last["input"], last["input_encoding"]) == (hashlib.sha256(big).hexdigest(), "sha256")
    assert (last["output"], last["output_encoding"]) == ("/wA=", "base64")
    packed = b"".join(owner.get(url + "msgpack").streaming_content)
    last = list(msgpack.Unpacker(io.BytesIO(packed), raw=False))[-1]
    assert (last["output"], last["output_encoding"]) == (b"\xff\x00", "binary")
    rows = list(
        csv.DictReader(io.StringIO(b"".join(owner.get(url + "csv").streaming_content).decode()))
    )
    assert json.loads(rows[-1]["args"]) == ["-n", "3"] and rows[0]["args"] == ""


def test_export_of_failed_tasks_on_request(world, owner):
    complete_all(world.draft)
    Task.objects.filter(campaign=world.draft, seq=1).update(
        state=Task.State.FAILED, canonical_result=None, failure="too many errors"
    )
    url = f"{API}/campaigns/{world.draft.pk}/results?format=jsonl"
    done = b"".join(owner.get(url).streaming_content).splitlines()
    assert [json.loads(r)["seq"] for r in done] == [0, 2]
    every = [
        json.loads(r)
        for r in b"".join(owner.get(url + "&state=all").streaming_content).splitlines()
    ]
    assert [(r["seq"], r["state"], r["output"]) for r in every][1] == (1, "failed", None)
    assert every[1]["failure"] == "too many errors"


def test_export_with_an_unknown_format_is_400(world, owner):
    url = f"{API}/campaigns/{world.draft.pk}/results"
    assert_error(owner.get(url + "?format=xml"), 400, "rejected", 'Unknown format "xml"')
    assert_error(owner.get(url + "?state=maybe"), 400, "rejected", "Unknown state")


def test_export_queries_do_not_grow_with_the_results(world, owner, django_assert_max_num_queries):
    services.tasks_add(campaign=world.draft, specs=[TaskSpec(input=b"x")] * 500)
    complete_all(world.draft)
    with django_assert_max_num_queries(6):
        response = owner.get(f"{API}/campaigns/{world.draft.pk}/results?format=jsonl")
        lines = b"".join(response.streaming_content).count(b"\n")
    assert lines == 503


@pytest.mark.django_db(transaction=True)
async def test_export_under_asgi_streams_through_an_async_iterator(people, async_client):
    from asgiref.sync import sync_to_async

    @sync_to_async
    def setup() -> Campaign:
        kernel = services.kernel_upload(
            organization=people.org, name="echo", data=kernel_bytes("echo")
        )
        campaign = services.campaign_create(organization=people.org, name="c", kernel=kernel)
        services.tasks_add(campaign=campaign, specs=[TaskSpec(input=b"i")] * 5)
        complete_all(campaign)
        return campaign

    campaign = await setup()
    try:
        await async_client.aforce_login(people.owner)
        response = await async_client.get(f"{API}/campaigns/{campaign.pk}/results?format=jsonl")
        assert response.status_code == 200 and response.is_async
        body = b"".join([chunk async for chunk in response.streaming_content])
        assert [json.loads(line)["seq"] for line in body.splitlines()] == [0, 1, 2, 3, 4]
    finally:
        # The ORM ran on asgiref's sync thread; close its connection so the test database
        # can be dropped at the end of the run (PostgreSQL refuses while one is open).
        await sync_to_async(connections.close_all)()


def _fill_done_campaign(campaign: Campaign, count: int, output_size: int) -> None:
    """`count` done tasks with canonical results, set-based (the scheduler's path would take
    minutes)."""
    services.tasks_add(campaign=campaign, specs=(TaskSpec(input=b"%08d" % i) for i in range(count)))
    r, t = Result._meta.db_table, Task._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {r} SET state = %s, outcome = %s, validation = %s, exit_code = 0,"  # noqa: S608
            " runtime_ms = 3, output = %s WHERE campaign_id = %s",
            [
                Result.State.RETURNED,
                Result.Outcome.SUCCESS,
                Result.Validation.VALID,
                bytes(range(256)) * (output_size // 256),
                campaign.pk,
            ],
        )
        # UPDATE ... FROM (PostgreSQL, SQLite >= 3.33): a join, where a correlated subquery
        # would be planned as a scan per row on tables not analyzed yet.
        cursor.execute(
            f"UPDATE {t} SET state = %s, canonical_result_id = {r}.id FROM {r}"  # noqa: S608
            f" WHERE {r}.task_id = {t}.id AND {t}.campaign_id = %s",
            [Task.State.DONE, campaign.pk],
        )
    Campaign.objects.filter(pk=campaign.pk).update(tasks_done=count)


def _last_row(fmt: str, last_chunk: bytes) -> dict:
    # Chunks end on row boundaries, so the last one decodes on its own.
    if fmt == "msgpack":
        return list(msgpack.Unpacker(io.BytesIO(last_chunk), raw=False))[-1]
    line = last_chunk.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
    if fmt == "csv":
        return dict(zip(CSV_COLUMNS, next(csv.reader([line])), strict=True))
    return json.loads(line)


@dataclass
class Export:
    peak: int  # bytes allocated at most while it streamed
    total: int  # bytes sent
    lines: int
    last: bytes  # the last chunk


def _export(client: Client, campaign: Campaign, fmt: str) -> Export:
    tracemalloc.start()
    try:
        response = client.get(f"{API}/campaigns/{campaign.pk}/results?format={fmt}")
        assert response.status_code == 200
        total = lines = 0
        last = b""
        for chunk in chunks(response):
            total += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Export(peak, total, lines, last)


def test_export_streams_in_constant_memory(people, monkeypatch):
    monkeypatch.setattr("campaigns.api.export.ROWS_PER_QUERY_CHUNK", 100)
    kernel = services.kernel_upload(organization=people.org, name="e", data=kernel_bytes("echo"))
    campaigns = {}
    for count in (SMALL, BIG):
        campaigns[count] = services.campaign_create(
            organization=people.org, name=f"{count}", kernel=kernel
        )
        _fill_done_campaign(campaigns[count], count, output_size=256)
    client = Client()
    client.force_login(people.owner)

    for fmt in ("jsonl", "csv", "msgpack"):
        # Warm up (imports, URL resolver, session and settings caches) outside the measurement.
        url = f"{API}/campaigns/{campaigns[SMALL].pk}/results?format={fmt}"
        warm_up = streamed(client.get(url + "&state=failed"))
        assert warm_up.count(b"\n") == (fmt == "csv")  # no failed tasks: at most a header
        small, big = _export(client, campaigns[SMALL], fmt), _export(client, campaigns[BIG], fmt)
        # Every result went out, the last row is the last task's.
        if fmt != "msgpack":
            assert big.lines == BIG + (fmt == "csv")
        assert int(_last_row(fmt, big.last)["seq"]) == BIG - 1
        assert big.total > 3 * small.total  # ~256 output bytes (more in base64) per result
        # The export never sits in memory: four times the results, not more memory.
        assert big.peak < small.peak * NO_GROWTH, (fmt, small.peak, big.peak)


def test_export_chunks_are_bounded(people, make_campaign):
    campaign = make_campaign([b"x"] * 50, start=False)
    complete_all(campaign, output=lambda seq: b"y" * 10_000)
    sizes = [len(c) for c in export_chunks(campaign, "jsonl")]
    assert sum(sizes) > 500_000 and max(sizes) < 64 * 1024 + 20_000


# --- OpenAPI schema and docs ---------------------------------------------------------------------


def _rest_views() -> dict[str, type]:
    """Every DRF view in the project's URLconf by OpenAPI path, walking includes; the schema
    and docs views themselves are not operations."""
    from django.urls import URLResolver, get_resolver
    from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

    found: dict[str, type] = {}

    def walk(patterns: list, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
                continue
            view = getattr(pattern.callback, "cls", None)  # set by APIView.as_view()
            if view is None or issubclass(view, SpectacularAPIView | SpectacularSwaggerView):
                continue
            found["/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)] = view

    walk(get_resolver().url_patterns, "")
    return found


def test_the_openapi_schema_validates_and_matches_the_url_list(client, db):
    from drf_spectacular.validation import validate_schema

    response = client.get(f"{API}/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)  # raises on an invalid OpenAPI 3 document
    views = _rest_views()
    assert {path for path in views if path.startswith(API)} >= {
        f"{API}/campaigns/{{campaign_id}}/results",
        f"{API}/organizations/{{slug}}/tokens",
    }
    # The schema describes exactly the REST views, plus the status endpoint (a plain view).
    assert set(schema["paths"]) == set(views) | {f"{API}/status"}
    for path, view in views.items():
        methods = {m for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)}
        assert set(schema["paths"][path]) == methods, path
    operation_ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    # Every operation documents the one error shape.
    kernel_post = schema["paths"][f"{API}/kernels"]["post"]
    assert kernel_post["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "organizationToken" in schema["components"]["securitySchemes"]


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _check_shape(schema: dict, node: dict, value: Any, where: str) -> None:
    """The value has the documented keys: every required one, none that is not described."""
    node = _resolve(schema, node)
    if value is None:
        assert node.get("nullable") or "allOf" in node or node == {}, where
        return
    if node.get("type") == "array":
        for i, item in enumerate(value):
            _check_shape(schema, node["items"], item, f"{where}[{i}]")
    elif node.get("type") == "object" and "properties" in node:
        assert isinstance(value, dict), where
        properties = node["properties"]
        assert set(value) <= set(properties), (where, set(value) - set(properties))
        assert set(node.get("required", [])) <= set(value), where
        for key, item in value.items():
            _check_shape(schema, properties[key], item, f"{where}.{key}")


def test_responses_have_the_documented_shape(world, owner, client):
    schema = json.loads(client.get(f"{API}/schema/?format=json").content)
    complete_all(world.draft)
    paths = {
        f"{API}/organizations": "/organizations",
        f"{API}/organizations/alpha": "/organizations/{slug}",
        f"{API}/organizations/alpha/tokens": "/organizations/{slug}/tokens",
        f"{API}/organizations/alpha/sites": "/organizations/{slug}/sites",
        f"{API}/kernels": "/kernels",
        f"{API}/kernels/{world.kernel.pk}": "/kernels/{kernel_id}",
        f"{API}/campaigns": "/campaigns",
        f"{API}/campaigns/{world.draft.pk}": "/campaigns/{campaign_id}",
        f"{API}/campaigns/{world.running.pk}/progress": "/campaigns/{campaign_id}/progress",
        f"{API}/campaigns/{world.draft.pk}/tasks": "/campaigns/{campaign_id}/tasks",
        f"{API}/campaigns/{world.draft.pk}/tasks?include=input": "/campaigns/{campaign_id}/tasks",
    }
    for url, template in paths.items():
        response = owner.get(url)
        assert response.status_code == 200, url
        documented = schema["paths"][API + template]["get"]["responses"]["200"]
        _check_shape(
            schema, documented["content"]["application/json"]["schema"], response.json(), url
        )
    # And the writes' answers.
    created = owner.post(
        f"{API}/organizations/alpha/tokens", {"name": "x"}, content_type="application/json"
    )
    documented = schema["paths"][f"{API}/organizations/{{slug}}/tokens"]["post"]["responses"]
    _check_shape(
        schema, documented["201"]["content"]["application/json"]["schema"], created.json(), "token"
    )
    added = owner.post(f"{API}/campaigns/{world.draft.pk}/tasks", b'"x"\n', content_type=NDJSON)
    documented = schema["paths"][f"{API}/campaigns/{{campaign_id}}/tasks"]["post"]["responses"]
    _check_shape(
        schema, documented["201"]["content"]["application/json"]["schema"], added.json(), "add"
    )
    # The check itself bites: an undocumented key, or a missing required one, fails it.
    progress = owner.get(f"{API}/campaigns/{world.running.pk}/progress").json()
    documented = schema["paths"][f"{API}/campaigns/{{campaign_id}}/progress"]["get"]["responses"]
    progress_schema = documented["200"]["content"]["application/json"]["schema"]
    with pytest.raises(AssertionError):
        _check_shape(schema, progress_schema, {**progress, "bogus": 1}, "extra")
    with pytest.raises(AssertionError):
        _check_shape(schema, progress_schema, {k: progress[k] for k in list(progress)[1:]}, "less")
    error = owner.get(f"{API}/campaigns/999999")
    documented = schema["paths"][f"{API}/campaigns/{{campaign_id}}"]["get"]["responses"]["404"]
    _check_shape(schema, documented["content"]["application/json"]["schema"], error.json(), "404")


def test_the_schema_generates_without_warnings(db):
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    from campaigns.api.schema import ApiSchemaGenerator

    GENERATOR_STATS.enable_trace_lineno()
    schema = ApiSchemaGenerator().get_schema(request=None, public=True)
    assert isinstance(SchemaGenerator(), SchemaGenerator)
    assert schema["paths"] and not GENERATOR_STATS._warn_cache, GENERATOR_STATS._warn_cache
    assert not GENERATOR_STATS._error_cache


def test_the_docs_page_loads_everything_from_our_own_static_files(client, db):
    from django.contrib.staticfiles import finders

    response = client.get(f"{API}/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    # Scripts, stylesheets and icons (links of the site's bar are pages, not assets).
    assets = re.findall(r'(?:<script[^>]*\ssrc|<link[^>]*\shref)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in a for a in assets)
    assert f"{API}/docs/?script=" in assets  # its start-up script (no inline script: CSP)
    for asset in assets:
        if asset.startswith(f"{API}/docs/?script"):
            continue  # the page's own script, served by the split view (no inline script)
        assert asset.startswith("/static/"), asset  # nothing from a CDN
        assert finders.find(asset.removeprefix("/static/")), asset
    script = client.get(f"{API}/docs/?script=").content.decode()
    assert f"{API}/schema/" in html + script


# --- the error shape ------------------------------------------------------------------------------


def test_errors_have_one_shape(world, owner):
    assert_error(owner.get(f"{API}/campaigns/999999"), 404, "not_found")
    assert_error(Client().get(f"{API}/campaigns"), 401, "not_authenticated")
    bad = Client(headers={"Authorization": "Bearer ccgsc_nope"})
    assert_error(bad.get(f"{API}/campaigns"), 401, "authentication_failed")
    assert_error(owner.put(f"{API}/campaigns/{world.draft.pk}"), 405, "method_not_allowed")
    assert_error(
        owner.post(f"{API}/campaigns", "{not json", content_type="application/json"),
        400,
        "parse_error",
    )


def test_an_unexpected_error_is_a_500_in_the_error_shape(world, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("campaigns.api.campaigns.campaign_start", broken)
    client = Client(raise_request_exception=False)
    client.force_login(world.people.owner)
    response = client.post(f"{API}/campaigns/{world.draft.pk}/start")
    error = assert_error(response, 500, "server_error")
    assert "boom" not in error["message"]  # details stay in the log
    # The error signal fired (error reporting sees it): the default client re-raises it.
    with pytest.raises(RuntimeError, match="boom"):
        client_for(world, "owner").post(f"{API}/campaigns/{world.draft.pk}/start")


def test_session_writes_need_the_csrf_token(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.people.owner)
    response = client.post(f"{API}/campaigns/{world.draft.pk}/start")
    assert_error(response, 403, "permission_denied", "CSRF")
    # Token callers have no cookies to ride on, so no CSRF check applies to them.
    token = Client(
        enforce_csrf_checks=True, headers={"Authorization": f"Bearer {world.alpha_token}"}
    )
    assert token.post(f"{API}/campaigns/{world.draft.pk}/start").status_code == 200


def test_organization_rows_are_untouched_by_other_callers(world):
    # The outsider's attempts at alpha's objects changed nothing.
    outsider = client_for(world, "outsider")
    outsider.post(f"{API}/campaigns/{world.running.pk}/cancel")
    outsider.post(f"{API}/campaigns/{world.draft.pk}/tasks", b'"x"\n', content_type=NDJSON)
    world.running.refresh_from_db()
    world.draft.refresh_from_db()
    assert world.running.state == "running" and world.draft.tasks_total == 3
    assert Organization.objects.get(slug="alpha").kernels.count() == 3
