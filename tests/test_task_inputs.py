"""How tasks arrive: args-only task lines, plain text lines, and streaming (chunked) uploads of
task bodies and kernels against a real daphne."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest

from accounts import services as account_services
from campaigns import services
from campaigns.inputs import InputError, TaskSpec, guess_format, iter_jsonl, iter_text
from campaigns.models import Task
from tests.conftest import kernel_bytes

API = "/api/v1"
MAX = 1 << 20


def specs_of(lines: bytes, parse=iter_jsonl) -> list[TaskSpec]:
    return list(parse(io.BytesIO(lines), max_input=MAX))


def test_args_only_and_env_only_lines_have_an_empty_input():
    specs = specs_of(b'{"args": ["8"]}\n{"env": {"N": "3"}}\n')
    assert specs == [TaskSpec(input=b"", args=["8"]), TaskSpec(input=b"", env={"N": "3"})]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{}", "needs `input`, `input_b64`, `args` or `env`"),
        (b'{"input": "a", "input_b64": "YQ=="}', "only one of"),
    ],
)
def test_a_line_without_anything_to_run_is_refused(line, message):
    with pytest.raises(InputError, match=message):
        specs_of(line + b"\n")


def test_text_lines_are_inputs_exactly_without_their_line_ending():
    specs = specs_of(b"12 13\r\n\n  padded \nlast", parse=iter_text)
    assert [s.input for s in specs] == [b"12 13", b"  padded ", b"last"]
    assert all(s.args is None and s.env is None for s in specs)
    with pytest.raises(InputError, match="line 2: input is 5 bytes"):
        list(iter_text(io.BytesIO(b"ok\n12345\n"), max_input=4))


def test_format_from_the_file_name():
    assert [guess_format(n) for n in ("t.txt", "t.jsonl", "t.msgpack", "t")] == [
        "text",
        "jsonl",
        "msgpack",
        "jsonl",
    ]


@pytest.fixture
def draft(people):
    kernel = services.kernel_upload(
        organization=people.org, name="echo", data=kernel_bytes("echo"), created_by=people.owner
    )
    return services.campaign_create(organization=people.org, name="d", kernel=kernel)


def _token(people) -> str:
    return account_services.token_issue(organization=people.org, name="t", created_by=None)[1]


@pytest.mark.django_db
def test_api_accepts_text_plain_and_args_only_lines(client, people, draft):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {_token(people)}"}
    url = f"{API}/campaigns/{draft.pk}/tasks"
    r = client.post(url, b"one\ntwo\n", content_type="text/plain", **auth)
    assert r.status_code == 201, r.content
    r = client.post(url, b'{"args": ["-n", "3"]}\n', content_type="application/x-ndjson", **auth)
    assert r.status_code == 201, r.content
    rows = list(Task.objects.filter(campaign=draft).order_by("seq").values_list("input", "args"))
    assert [(bytes(i), a) for i, a in rows] == [(b"one", None), (b"two", None), (b"", ["-n", "3"])]


def _chunks(*pieces: bytes) -> Iterator[bytes]:
    # A generator: httpx cannot know the length, so it sends Transfer-Encoding: chunked.
    yield from pieces


@pytest.mark.live
def test_chunked_uploads_are_read(live_platform, people, draft):
    token = _token(people)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live_platform.url + API, headers=headers, timeout=60) as http:
        lines = [json.dumps({"input": f"task {i}"}).encode() + b"\n" for i in range(300)]
        request = http.build_request(
            "POST",
            f"/campaigns/{draft.pk}/tasks",
            content=_chunks(*lines),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert request.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in request.headers
        r = http.send(request)
        assert r.status_code == 201, r.text
        assert r.json() == {"added": 300, "tasks_total": 300}

        wasm = kernel_bytes("noop")
        r = http.post(
            "/kernels",
            params={"name": "streamed"},
            content=_chunks(wasm[:100], wasm[100:]),
            headers={"Content-Type": "application/wasm"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["size"] == len(wasm)
