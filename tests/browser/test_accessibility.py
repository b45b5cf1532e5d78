"""Accessibility, measured: axe-core (vendored from npm by scripts/vendor-js.sh into
static/vendor/axe-core/, loaded from the platform's own origin, so nothing is fetched from the
internet and the pages' Content-Security-Policy allows it) audits every main page in headless
Chromium; no violation of impact "serious" or "critical" is allowed. Keyboard only: the
contribute page starts and pauses with Tab/Enter/Space, and the embed consent banner is
answered the same way.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import EmbedSite
from campaigns.models import Campaign
from operations import notifications
from tests.conftest import ok_item
from workers import scheduler
from workers.models import WorkerSession

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]

AXE = "/static/vendor/axe-core/axe.min.js"
BLOCKING = ("serious", "critical")
# Rules of WCAG 2.0/2.1 A and AA plus axe's best practices (landmarks, headings, regions).
AXE_RUN = """async () => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
    resultTypes: ["violations"],
  });
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: " + n.failureSummary),
  }));
}"""


def audit(target: Any, base_url: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on a page or frame."""
    if not target.evaluate("() => typeof window.axe !== 'undefined'"):
        target.add_script_tag(url=f"{base_url}{AXE}")
    violations = target.evaluate(AXE_RUN)
    return [v for v in violations if v["impact"] in BLOCKING]


def context_for(browser: Any, base_url: str, user: Any = None) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url)
    if user is not None:
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": base_url}])
    return context


@pytest.fixture
def world(people, make_campaign) -> Campaign:
    """A finished campaign with results, points and a notification: every page has content."""
    campaign = make_campaign([str(n) for n in range(6)])
    session = WorkerSession.objects.create(kind="browser", slots=6, user=people.owner)
    info = scheduler.SessionInfo(id=session.pk, kind="browser", user_id=people.owner.pk)
    scheduler.work_available()
    leases = scheduler.lease(info, 6)
    scheduler.submit_results(info, [ok_item(x, x.input) for x in leases])
    WorkerSession.objects.filter(pk=session.pk).update(disconnected_at=session.connected_at)
    notifications.notify(campaign.pk, "completed")
    campaign.refresh_from_db()
    return campaign


def test_main_pages_have_no_serious_or_critical_violations(
    browser, platform, people, world, third_party
):
    org = people.org.slug
    anonymous = [
        "/",
        "/contribute/",
        "/accounts/login/",
        "/accounts/signup/",
        "/leaderboard/",
        "/status/",
    ]
    signed_in = [
        "/dashboard/",
        f"/orgs/{org}/campaigns/{world.pk}/",
        f"/orgs/{org}/campaigns/new/",
        f"/orgs/{org}/kernels/",
        f"/orgs/{org}/campaigns/{world.pk}/notifications/",
        "/profile/",
        "/account/email/",
    ]
    found: dict[str, list[dict[str, Any]]] = {}
    for user, paths in ((None, anonymous), (people.owner, signed_in)):
        context = context_for(browser, platform.url, user)
        try:
            page = context.new_page()
            for path in paths:
                response = page.goto(path)
                assert response is not None and response.status == 200, path
                page.wait_for_load_state("networkidle")
                violations = audit(page, platform.url)
                if violations:
                    found[path] = violations
        finally:
            context.close()

    # The embed consent banner, inside its frame on a third-party page.
    site = EmbedSite.objects.create(
        organization=people.org, name="A blog", origin=third_party.origin
    )
    third_party.pages["/a11y"] = (
        "<!DOCTYPE html><html lang='en'><head><title>A blog</title></head><body><main>"
        "<h1>A blog post</h1></main>"
        f'<script src="{platform.url}/embed.js" data-site="{site.key}" async></script>'
        "</body></html>"
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{third_party.origin}/a11y")
        page.frame_locator("iframe[data-ccgsc]").locator("#consent").wait_for(state="visible")
        frame = next(f for f in page.frames if "/embed/frame/" in f.url)
        violations = audit(frame, platform.url)
        if violations:
            found["embed consent banner"] = violations
    finally:
        context.close()
    assert not found, json.dumps(found, indent=1)


def _tab_to(page: Any, element_id: str, *, frame: Any = None, limit: int = 60) -> None:
    """Press Tab until the element with this id has the focus (in `frame`, if given)."""
    where = frame or page
    for _ in range(limit):
        if (
            where.evaluate("() => document.activeElement && document.activeElement.id")
            == element_id
        ):
            return
        page.keyboard.press("Tab")
    pytest.fail(f"#{element_id} not reachable with Tab")


def test_contribute_page_works_from_the_keyboard(browser, platform, make_campaign):
    make_campaign([f"{seed} 2000000" for seed in range(1, 40)], kernel="montecarlo")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{platform.url}/contribute/")
        _tab_to(page, "start")
        page.keyboard.press("Enter")
        page.locator("#pause").wait_for(state="visible")
        # The focus follows to the control that replaced the one pressed, so Space pauses.
        assert page.evaluate("() => document.activeElement.id") == "pause"
        page.keyboard.press("Space")
        page.locator("#resume").wait_for(state="visible")
        assert page.evaluate("() => document.activeElement.id") == "resume"
        page.keyboard.press("Enter")
        page.locator("#pause").wait_for(state="visible")
        # The focused control is visibly marked (a focus ring, not just the browser default off).
        outline = page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement);"
            " return s.outlineStyle !== 'none' || s.boxShadow !== 'none'; }"
        )
        assert outline
        _tab_to(page, "stop")
        page.keyboard.press("Enter")
        page.locator("#start").wait_for(state="visible")
    finally:
        context.close()


def test_consent_banner_works_from_the_keyboard(browser, platform, people, third_party):
    site = EmbedSite.objects.create(
        organization=people.org, name="A blog", origin=third_party.origin
    )
    third_party.pages["/keys"] = (
        "<!DOCTYPE html><html lang='en'><head><title>A blog</title></head><body>"
        "<h1>A blog post</h1>"
        f'<script src="{platform.url}/embed.js" data-site="{site.key}" async></script>'
        "</body></html>"
    )
    for choice, shown in (("opt-out", "#off"), ("opt-in", "#badge")):
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{third_party.origin}/keys")
            page.frame_locator("iframe[data-ccgsc]").locator("#consent").wait_for(state="visible")
            frame = next(f for f in page.frames if "/embed/frame/" in f.url)
            _tab_to(page, choice, frame=frame)
            page.keyboard.press("Enter" if choice == "opt-in" else "Space")
            frame.locator(shown).wait_for(state="visible")
            if choice == "opt-in":
                _tab_to(page, "pause", frame=frame)
                page.keyboard.press("Space")
                frame.locator("#resume").wait_for(state="visible")
        finally:
            context.close()
