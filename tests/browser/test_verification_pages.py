"""In real Chromium: the campaign owner switches adaptive replication and a signed-in quorum on
in the create form (the risk is on screen next to the switch), and the validation page says why
each result was accepted and that an honest result outvoted by one attacker's sockets was not
marked invalid."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from campaigns import services
from campaigns.models import Campaign
from tests.conftest import kernel_bytes
from tests.test_owner_choices import agree_independently, outvoted_by_one_attacker

pytestmark = [
    pytest.mark.browser,
    pytest.mark.live,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]


def signed_in_page(browser, base_url: str, user):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url)
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": base_url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def test_the_owner_switches_the_choices_on_in_the_form(browser, platform, people):
    kernel = services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))
    page, errors = signed_in_page(browser, platform.url, people.owner)
    page.goto("/orgs/alpha/campaigns/new/")
    risk = page.locator("#adaptive-risk")
    assert risk.is_visible() and "turns hostile" in risk.inner_text()
    adaptive = page.locator("input[name=adaptive_replication]")
    signed_in = page.locator("input[name=quorum_needs_account]")
    assert not adaptive.is_checked() and not signed_in.is_checked()
    page.fill("input[name=name]", "Chosen in the browser")
    page.select_option("select[name=kernel]", str(kernel.pk))
    page.check("input[name=input_source][value=api]")
    page.fill("input[name=min_quorum]", "2")
    page.fill("input[name=target_replicas]", "2")
    adaptive.check()
    signed_in.check()
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url("**/campaigns/*/")
    assert "<strong>on</strong>" in page.locator("#adaptive-replication").inner_html()
    assert "every quorum includes a signed-in volunteer" in page.content()
    campaign = Campaign.objects.get(name="Chosen in the browser")
    assert campaign.adaptive_replication and campaign.quorum_needs_account
    assert errors == []


def test_the_validation_page_explains_each_result(browser, platform, people, make_campaign):
    c = make_campaign(["a"], min_quorum=2, target_replicas=3)
    outvoted_by_one_attacker(c)
    page, errors = signed_in_page(browser, platform.url, people.owner)
    page.goto(f"/orgs/alpha/campaigns/{c.pk}/results/")
    note = page.locator(".why-note")
    assert note.count() == 1
    assert "the 2 results that disagree come from 1 independent volunteer" in note.inner_text()
    agree_independently(c)
    page.reload()
    rows = page.locator("#results-table tbody tr")
    assert rows.count() == 4
    texts = [rows.nth(i).inner_text() for i in range(4)]
    assert sum("a quorum of 2 independent volunteers agreed" in t for t in texts) == 2
    assert sum("disagrees with the canonical result" in t for t in texts) == 2
    assert errors == []
