"""Every main page under its Content-Security-Policy in Chromium: no `securitypolicyviolation`
event and no console error or page error, while the pages do their work (the contribute page
runs WebAssembly kernels in its workers, the embed frame runs them after consent, the owner's
campaign page draws its chart, the API docs render)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import EmbedSite
from campaigns.models import Campaign, Task
from tests.browser.helpers import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.live,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

# Installed before any page script runs, in every frame (the embed iframe too).
COLLECT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI} at ${where}`);
});
"""


class Watched:
    """A browser context whose pages report CSP violations, console errors and page errors."""

    def __init__(self, browser: Any, base_url: str, user: Any = None) -> None:
        self.context = browser.new_context(base_url=base_url)
        self.context.add_init_script(COLLECT)
        if user is not None:
            client = Client()
            client.force_login(user)
            name = settings.SESSION_COOKIE_NAME
            self.context.add_cookies(
                [{"name": name, "value": client.cookies[name].value, "url": base_url}]
            )
        self.problems: list[str] = []
        self.page = self.context.new_page()
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))

    def violations(self) -> list[str]:
        found: list[str] = []
        for frame in self.page.frames:
            found += frame.evaluate("() => window.__csp || []")
        return found

    def visit(self, path: str) -> None:
        response = self.page.goto(path, wait_until="load")
        assert response is not None and response.status < 400, (path, response and response.status)

    def assert_clean(self, where: str) -> None:
        assert self.violations() == [], where
        assert self.problems == [], where


def test_main_pages_run_under_their_policy_without_violations(
    browser, platform, people, make_campaign
):
    campaign = make_campaign([f"{i} 1000" for i in range(1, 5)], kernel="primes")
    slug = people.org.slug
    anonymous = Watched(browser, platform.url)
    try:
        for path in ("/", "/leaderboard/", "/teams/", "/status/", "/accounts/login/"):
            anonymous.visit(path)
            anonymous.assert_clean(path)
        anonymous.visit("/api/v1/docs/")
        anonymous.page.locator(".swagger-ui .info").wait_for(state="visible")
        anonymous.assert_clean("/api/v1/docs/")
        # The contribute page compiles the kernel and runs it in its workers.
        anonymous.visit("/contribute/?hands=1")
        anonymous.page.click("#start")
        wait_for(
            lambda: Task.objects.filter(campaign=campaign, state=Task.State.DONE).count() == 4,
            what="the contribute page's tasks",
        )
        anonymous.assert_clean("/contribute/")
    finally:
        anonymous.context.close()

    owner = Watched(browser, platform.url, user=people.owner)
    try:
        for path in (
            "/dashboard/",
            f"/orgs/{slug}/campaigns/",
            f"/orgs/{slug}/campaigns/new/",
            f"/orgs/{slug}/campaigns/{campaign.pk}/",
            f"/orgs/{slug}/kernels/",
            f"/orgs/{slug}/sites/",
            f"/campaigns/{campaign.pk}/demo/",
            f"/users/{people.owner.pk}/",
        ):
            owner.visit(path)
            owner.assert_clean(path)
    finally:
        owner.context.close()


def test_the_embed_frame_runs_under_its_own_policy_without_violations(
    browser, platform, people, make_campaign, third_party
):
    campaign = make_campaign([f"{i} 1000" for i in range(1, 4)], kernel="primes")
    site = EmbedSite.objects.create(organization=people.org, name="Blog", origin=third_party.origin)
    third_party.pages["/csp-post"] = (
        "<!DOCTYPE html><html><head><title>A blog</title></head><body>"
        f'<script src="{platform.url}/embed.js" data-site="{site.key}" async></script>'
        "</body></html>"
    )
    third_party.pages["/favicon.ico"] = ""  # the blog's own 404 is not the platform's concern
    watched = Watched(browser, third_party.origin)
    try:
        watched.visit("/csp-post")
        frame = watched.page.frame_locator("iframe[data-ccgsc]")
        frame.locator("#opt-in").click()
        wait_for(
            lambda: Task.objects.filter(campaign=campaign, state=Task.State.DONE).count() == 3,
            what="the embedded worker's tasks",
        )
        frame.locator("#badge").wait_for(state="visible")
        watched.assert_clean("the embed frame")
    finally:
        watched.context.close()
    assert Campaign.objects.get(pk=campaign.pk).tasks_done == 3
