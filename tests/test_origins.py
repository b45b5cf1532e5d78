"""Browsers may use the platform's sockets and the protocol's HTTP fallback only from the
platform's own origin, matched exactly on scheme, host and port (ccgsc/origins.py); embed
frames only under their registered origin, port included."""

from __future__ import annotations

import msgpack
import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client

from accounts.models import EmbedSite
from ccgsc.asgi import application
from ccgsc.origins import origin_allowed, scope_origin_allowed
from workers import protocol

HELLO = {"t": "hello", "v": protocol.VERSION, "kind": "browser", "slots": 1, "agent": "test"}


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed"),
    [
        (None, "localhost:8000", False, True),  # not a browser
        ("http://localhost:8000", "localhost:8000", False, True),
        ("http://LOCALHOST:8000", "localhost:8000", False, True),
        ("http://localhost:9999", "localhost:8000", False, False),  # another port
        ("http://localhost", "localhost:8000", False, False),
        ("https://localhost:8000", "localhost:8000", False, False),  # another scheme
        ("http://localhost:8000", "localhost:8000", True, False),
        ("https://localhost", "localhost:443", True, True),  # the default port is implied
        ("http://127.0.0.1:8000", "localhost:8000", False, False),  # another host
        ("http://evil.test:8000", "evil.test:8000", False, False),  # Host not allowed
        ("null", "localhost:8000", False, False),
        ("http://localhost:8000", None, False, False),  # nothing to match against
    ],
)
def test_origins_match_scheme_host_and_port_exactly(origin, host, secure, allowed):
    assert origin_allowed(origin, host=host, secure=secure) is allowed


def test_site_url_and_exact_trusted_origins_are_the_platforms_too(settings):
    settings.SITE_URL = "https://grid.example.org"
    settings.CSRF_TRUSTED_ORIGINS = ["https://www.example.org:8443", "https://*.example.net"]
    for origin in ("https://grid.example.org", "https://www.example.org:8443"):
        assert origin_allowed(origin, host="internal:8000", secure=False)
    for origin in (
        "https://grid.example.org:444",
        "https://www.example.org",
        "https://a.example.net",
    ):
        assert not origin_allowed(origin, host="internal:8000", secure=False)


def test_a_trusted_proxy_header_tells_the_scheme_of_a_websocket(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    scope = {
        "headers": [
            (b"host", b"localhost"),
            (b"origin", b"https://localhost"),
            (b"x-forwarded-proto", b"https"),
        ]
    }
    assert scope_origin_allowed(scope)
    scope["headers"][1] = (b"origin", b"http://localhost")
    assert not scope_origin_allowed(scope)


def worker_socket(origin: bytes) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/work/", headers=[(b"host", b"localhost:8000"), (b"origin", origin)]
    )


@pytest.mark.django_db(transaction=True)
async def test_the_worker_socket_refuses_the_platforms_host_on_another_port():
    other_port = worker_socket(b"http://localhost:9999")
    connected, _ = await other_port.connect(timeout=30)
    assert not connected
    own = worker_socket(b"http://localhost:8000")
    connected, _ = await own.connect(timeout=30)
    assert connected
    await own.send_to(bytes_data=protocol.encode(HELLO))
    assert isinstance(protocol.decode_server(await own.receive_from(timeout=5)), protocol.Welcome)
    await own.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_owners_live_socket_refuses_another_port(people, make_campaign):
    from asgiref.sync import sync_to_async

    campaign = await sync_to_async(make_campaign)(["a"])
    client = Client()
    await sync_to_async(client.force_login)(people.owner)
    from django.conf import settings

    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    async def close_code(origin: bytes) -> int | None:
        comm = WebsocketCommunicator(
            application,
            f"/ws/campaigns/{campaign.pk}/",
            headers=[
                (b"host", b"localhost:8000"),
                (b"origin", origin),
                (b"cookie", cookie.encode()),
            ],
        )
        connected, _ = await comm.connect(timeout=30)
        assert connected  # accepted, then closed with a code the page understands
        message = await comm.receive_output(timeout=5)
        await comm.disconnect()
        return message.get("code") if message["type"] == "websocket.close" else None

    assert await close_code(b"http://localhost:9999") == 4403
    assert await close_code(b"http://localhost:8000") is None  # a snapshot, not a close


@pytest.mark.django_db(transaction=True)
async def test_the_http_fallback_refuses_another_port():
    client = AsyncClient()
    body = protocol.encode({"session": None, "secret": None, "messages": [HELLO]})

    async def post(origin: str):
        return await client.post(
            "/api/v1/work",
            body,
            content_type="application/msgpack",
            headers={"Origin": origin},  # the client's Host is testserver
        )

    refused = await post("http://testserver:8080")
    assert refused.status_code == 403
    assert msgpack.unpackb(refused.content)["messages"][0]["code"] == "origin"
    ok = await post("http://testserver")
    assert ok.status_code == 200
    assert msgpack.unpackb(ok.content)["messages"][0]["t"] == "welcome"


def test_an_embed_frame_under_the_registered_host_on_another_port_is_refused(client, people):
    site = EmbedSite.objects.create(
        organization=people.org, name="Blog", origin="https://blog.test:8443"
    )
    url = f"/embed/frame/?site={site.key}"
    assert client.get(url, HTTP_REFERER="https://blog.test:8443/post").status_code == 200
    assert client.get(url, HTTP_REFERER="https://blog.test/post").status_code == 404
    assert client.get(url, HTTP_REFERER="http://blog.test:8443/post").status_code == 404
