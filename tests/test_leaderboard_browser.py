"""Leaderboards, profiles and a team page in real Chromium, served by a real daphne process
against the test database: the figures on screen are the ledger's, and a contributor who opted
out of public listing is nowhere to be seen (except by themselves)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from accounts.models import EmbedSite, User
from rewards import ledger, services
from tests.browser.helpers import ASYNC_UNSAFE, launched_chromium
from tests.live import LiveServer, start_server

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@pytest.fixture
def browser() -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def server(transactional_db: None) -> Iterator[LiveServer]:
    saved = os.environ.pop(ASYNC_UNSAFE, None)
    try:
        live = start_server()
    finally:
        if saved is not None:
            os.environ[ASYNC_UNSAFE] = saved
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def standings(people, make_campaign) -> dict[str, Any]:
    """Ada 30 points (3 results), Bob 50 (5), Hidden 90 (9, private profile); Ada and Hidden
    are in Red Dwarfs; Ada's and Hidden's results came through a site."""
    # Started and approved: a public campaign, so anyone viewing a profile may see its name.
    c = make_campaign(["a"], points_per_task=10)
    ada = User.objects.create_user("ada@example.test", "pw", display_name="Ada")
    bob = User.objects.create_user("bob@example.test", "pw", display_name="Bob")
    hid = User.objects.create_user(
        "hid@example.test", "pw", display_name="Hidden", public_profile=False
    )
    site = EmbedSite.objects.create(
        organization=people.org, name="Science blog", origin="https://blog.test"
    )
    red = services.team_create(founder=ada, name="Red Dwarfs")
    services.team_join(user=hid, team=red)
    ids = iter(range(1, 100))
    ledger.grant([(next(ids), ada.pk, site.pk, c.pk) for _ in range(3)])
    ledger.grant([(next(ids), bob.pk, None, c.pk) for _ in range(5)])
    ledger.grant([(next(ids), hid.pk, site.pk, c.pk) for _ in range(9)])
    assert ledger.check_totals() == []
    return {"ada": ada, "bob": bob, "hid": hid, "red": red, "campaign": c}


def board_rows(page: Any) -> list[tuple[str, str, str, str]]:
    return [
        (
            row.locator(".rank").inner_text().strip(),
            row.locator(".name").inner_text().strip(),
            row.locator(".results").inner_text().strip(),
            row.locator(".points").inner_text().strip(),
        )
        for row in page.locator("#board tbody tr").all()
    ]


def test_leaderboards_and_profiles_show_the_ledgers_figures(browser, server, standings):
    ada, hid = standings["ada"], standings["hid"]
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{server.url}/leaderboard/")
    assert page.locator("h1").inner_text() == "Leaderboard"
    assert board_rows(page) == [("1", "Bob", "5", "50"), ("2", "Ada", "3", "30")]
    assert "Hidden" not in page.content()

    page.click("text=Teams >> nth=1")  # the tab (the first "Teams" is the button to all teams)
    page.wait_for_url("**/leaderboard/teams/")
    # The private member's points count for the team; only the name is withheld.
    assert board_rows(page) == [("1", "Red Dwarfs", "12", "120")]

    page.goto(f"{server.url}/leaderboard/sites/")
    assert board_rows(page) == [("1", "Science blog", "12", "120")]

    page.goto(f"{server.url}/leaderboard/")
    page.click("text=Ada")
    page.wait_for_url(f"**/users/{ada.pk}/")
    assert page.locator("#profile-name").inner_text() == "Ada"
    assert page.locator('[data-field="points"]').inner_text() == "30"
    assert page.locator('[data-field="results"]').inner_text() == "3"
    assert page.locator('[data-field="rank"]').inner_text() == "#2"
    assert page.locator("#profile-team").inner_text() == "Red Dwarfs"
    assert page.locator("#history tbody tr").count() == 3
    assert "echo campaign" in page.locator("#by-campaign").inner_text()
    # Today's bar of the 30-day chart is the tallest: all of Ada's points are from today.
    bars = page.locator(".daily-bar")
    assert bars.count() == 30
    assert bars.nth(29).evaluate("el => el.getBoundingClientRect().height") > 40
    assert bars.nth(0).evaluate("el => el.getBoundingClientRect().height") <= 1

    page.goto(f"{server.url}/teams/red-dwarfs/")
    assert page.locator('[data-field="points"]').inner_text() == "120"
    assert page.locator("#members tbody tr").count() == 1
    assert "1 member with a private profile" in page.content()

    response = page.goto(f"{server.url}/users/{hid.pk}/")
    assert response is not None and response.status == 404
    assert not errors, errors
    context.close()


def test_a_private_contributor_sees_their_own_figures(browser, server, standings):
    hid = standings["hid"]
    client = Client()
    client.force_login(hid)
    context = browser.new_context()
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": server.url}]
    )
    page = context.new_page()
    page.goto(f"{server.url}/leaderboard/")
    assert page.locator('[data-field="my-points"]').inner_text() == "90"
    assert "Your profile is private" in page.locator("#my-standing").inner_text()
    assert "Hidden" not in page.locator("#board").inner_text()
    page.click("text=Your profile")
    page.wait_for_url(f"**/users/{hid.pk}/")
    assert page.locator('[data-field="points"]').inner_text() == "90"
    assert page.locator('[data-field="rank"]').inner_text() == "\u2013"  # no rank: unlisted
    assert "only you see this page" in page.content()
    context.close()
