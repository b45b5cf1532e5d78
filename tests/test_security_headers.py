"""Content-Security-Policy on every page (django-csp), the pages' own exceptions, nothing inline
that the policy would block, and HSTS over TLS (tests/browser/test_csp.py checks the same pages
in Chromium)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.test import Client

from accounts.models import EmbedSite
from tests.test_settings import ROOT

pytestmark = pytest.mark.django_db


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for part in header.split(";")
        if part.strip()
        for name, *values in [part.split()]
    }


def member_pages(people, make_campaign) -> list[str]:
    campaign = make_campaign(["a"])
    slug = people.org.slug
    return [
        "/dashboard/",
        f"/orgs/{slug}/",
        f"/orgs/{slug}/campaigns/",
        f"/orgs/{slug}/campaigns/new/",
        f"/orgs/{slug}/campaigns/{campaign.pk}/",
        f"/orgs/{slug}/kernels/",
        f"/orgs/{slug}/sites/",
        f"/orgs/{slug}/validation/",
        "/account/",
        f"/users/{people.owner.pk}/",
    ]


PUBLIC_PAGES = [
    "/",
    "/contribute/",
    "/leaderboard/",
    "/teams/",
    "/status/",
    "/accounts/login/",
    "/accounts/signup/",
    "/api/v1/docs/",
    "/this-page-does-not-exist/",
]

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
UNNONCED_STYLE = re.compile(r"<style(?![^>]*\bnonce=)[^>]*>", re.I)
HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I)


def test_every_page_has_a_strict_policy_and_nothing_inline_it_would_block(
    client, people, make_campaign
):
    """A page's HTML must not rely on what its policy forbids: no inline script or event
    handler attribute, no <style> block without the nonce."""
    pages = [(None, p) for p in PUBLIC_PAGES] + [
        (people.owner, p) for p in member_pages(people, make_campaign)
    ]
    for user, path in pages:
        if user is not None:
            client.force_login(user)
        response = client.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        csp = policy(response)
        assert csp["default-src"] == ["'self'"], path
        assert "'unsafe-inline'" not in csp["script-src"], path
        assert "'unsafe-eval'" not in csp["script-src"], path
        assert csp["frame-ancestors"] == ["'none'"], path
        assert csp["object-src"] == ["'none'"], path
        html = response.content.decode()
        assert not INLINE_SCRIPT.search(html), (path, INLINE_SCRIPT.search(html))
        assert not UNNONCED_STYLE.search(html), path
        assert not HANDLER.search(html), (path, HANDLER.search(html))


def test_the_contribute_page_may_compile_webassembly_and_nothing_more():
    csp = policy(Client().get("/contribute/"))
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert "'wasm-unsafe-eval'" not in policy(Client().get("/"))["script-src"]


def test_the_embed_frame_and_worker_scripts_keep_their_own_policies(people):
    site = EmbedSite.objects.create(organization=people.org, name="B", origin="https://b.test")
    frame = policy(Client().get(f"/embed/frame/?site={site.key}"))
    assert frame["frame-ancestors"] == ["https://b.test"]
    worker = policy(Client().get("/worker/js.js"))
    assert worker["connect-src"] == ["'none'"] and worker["default-src"] == ["'none'"]


def test_the_api_docs_style_block_carries_the_nonce_of_its_policy():
    response = Client().get("/api/v1/docs/")
    nonce = re.search(r'<style nonce="([^"]+)"', response.content.decode())
    assert nonce is not None
    assert f"'nonce-{nonce.group(1)}'" in policy(response)["style-src"]


def test_hsts_is_sent_over_tls_only(settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()
    assert "Strict-Transport-Security" not in client.get("/")
    secure = client.get("/", secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000"


def test_production_defaults_turn_on_hsts_and_secure_cookies():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DEBUG="false",
        SECRET_KEY="a-real-secret-" + "k" * 40,
        DJANGO_SETTINGS_MODULE="ccgsc.settings",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["31536000", "True", "True"], result.stderr
