"""Request bodies the API must refuse cleanly (400/413 in the error shape, never a 500): JSON
nested deeper than the parser can follow, bodies over DATA_UPLOAD_MAX_MEMORY_SIZE, and
multipart uploads sent with Transfer-Encoding: chunked."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from django.test import Client

from accounts import services as account_services
from campaigns import services
from tests.conftest import kernel_bytes
from tests.live import start_server

API = "/api/v1"
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture
def api(people) -> Client:
    """The owner, signed in: the only caller every endpoint here takes (tokens are issued
    by signed-in owners)."""
    client = Client()
    client.force_login(people.owner)
    return client


@pytest.fixture
def draft(people):
    kernel = services.kernel_upload(
        organization=people.org, name="echo", data=kernel_bytes("echo"), created_by=people.owner
    )
    return services.campaign_create(organization=people.org, name="d", kernel=kernel)


def assert_error(response, status: int, message: str) -> dict:
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert message in error["message"], error
    return error


@pytest.mark.parametrize(
    "path",
    [
        "/run",
        "/campaigns",
        "/campaigns/{draft}/regenerate",
        "/organizations/alpha/tokens",
        "/organizations/alpha/sites",
    ],
)
def test_json_nested_too_deep_is_a_400(api, draft, path):
    body = '{"kernel": ' + DEEP + "}"
    response = api.post(API + path.format(draft=draft.pk), body, content_type="application/json")
    assert_error(response, 400, "nested too deeply")


def test_a_task_line_nested_too_deep_is_a_400_naming_the_line(api, draft):
    body = b'"fine"\n' + DEEP.encode() + b"\n"
    url = f"{API}/campaigns/{draft.pk}/tasks"
    response = api.post(url, body, content_type="application/x-ndjson")
    assert_error(response, 400, "line 2: not valid JSON (nested too deeply")


def test_a_form_field_nested_too_deep_is_a_400(api, draft):
    form = {"name": "c", "kernel": draft.kernel.sha256, "args": DEEP}
    response = api.post(f"{API}/campaigns", form)
    assert response.status_code == 400, response.content[:300]
    assert "nested too deeply" in json.dumps(response.json())


@pytest.mark.parametrize("path", ["/run", "/campaigns", "/organizations/alpha/tokens"])
def test_a_json_body_over_the_upload_limit_is_a_413_naming_it(api, settings, path):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    body = json.dumps({"kernel": "x", "input": "a" * 4096})
    response = api.post(API + path, body, content_type="application/json")
    error = assert_error(response, 413, "2048 bytes")
    assert error["code"] == "too_large"


def test_a_form_over_the_upload_limit_is_a_413(api, draft, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = api.post(f"{API}/campaigns", {"name": "c" * 4096, "kernel": draft.kernel.sha256})
    assert_error(response, 413, "2048 bytes")


def _chunks(*pieces: bytes) -> Iterator[bytes]:
    # A generator: httpx cannot know the length, so it sends Transfer-Encoding: chunked.
    yield from pieces


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_chunked_bodies_over_the_limit_are_413_and_chunked_multipart_is_read(people):
    _, token = account_services.token_issue(organization=people.org, name="t", created_by=None)
    server = start_server(UPLOAD_MAX_BYTES="8192")
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url + API, headers=headers, timeout=60) as http:
            # A JSON body without Content-Length over the limit: 413 naming it.
            big = json.dumps({"kernel": "x", "input": "a" * 10000}).encode()
            for path in ("/run", "/campaigns"):
                r = http.post(
                    path,
                    content=_chunks(big[:5000], big[5000:]),
                    headers={"Content-Type": "application/json"},
                )
                assert r.status_code == 413, r.text
                assert "8192 bytes" in r.json()["error"]["message"]
            # A multipart upload sent chunked (curl -H 'Transfer-Encoding: chunked' -F ...).
            wasm = kernel_bytes("echo")
            form = httpx.Request(
                "POST", "http://x/", files={"file": ("k.wasm", wasm)}, data={"name": "streamed"}
            )
            body = form.read()
            r = http.post(
                "/kernels",
                content=_chunks(body[:300], body[300:]),
                headers={"Content-Type": form.headers["Content-Type"]},
            )
            assert r.status_code == 201, r.text
            assert r.json()["size"] == len(wasm) and r.json()["name"] == "streamed"
            # ... and bounded by the same limit.
            padded = httpx.Request(
                "POST", "http://x/", files={"file": ("k.wasm", wasm + b"\0" * 9000)}
            )
            r = http.post(
                "/kernels",
                content=_chunks(padded.read()),
                headers={"Content-Type": padded.headers["Content-Type"]},
            )
            assert r.status_code == 413, r.text
            assert "8192 bytes" in r.json()["error"]["message"]
    finally:
        server.stop()


@pytest.mark.parametrize("page", ["campaigns/new/", "kernels/"])
def test_an_html_form_over_the_upload_limit_is_a_400_not_a_500(api, people, settings, page):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = api.post(f"/orgs/{people.org.slug}/{page}", {"name": "c" * 4096})
    assert response.status_code == 400
