"""Request bodies the API must refuse cleanly (400/413 in the error shape, never a 500): JSON
nested deeper than the parser can follow, bodies over DATA_UPLOAD_MAX_MEMORY_SIZE, and
multipart uploads sent with Transfer-Encoding: chunked."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from campaigns import services
from tests.conftest import kernel_bytes

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
