"""Leaderboards, profiles, teams and the owners' validation view (Django test client)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import EmbedSite, User
from campaigns.models import Campaign, Result
from rewards import ledger, services
from rewards.models import Reliability, Team
from tests.conftest import ok_item
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


@pytest.fixture
def board(people, make_campaign):
    """Points for three contributors, one of whom keeps a private profile."""
    c = make_campaign(["a"], points_per_task=10, start=False)
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
    rid = iter(range(1, 1000))
    ledger.grant([(next(rid), ada.pk, site.pk, c.pk) for _ in range(3)])
    ledger.grant([(next(rid), bob.pk, None, c.pk) for _ in range(5)])
    ledger.grant([(next(rid), hid.pk, site.pk, c.pk) for _ in range(9)])
    return {"c": c, "ada": ada, "bob": bob, "hid": hid, "site": site, "red": red}


def test_user_leaderboard_ranks_public_contributors_only(client, board):
    page = client.get("/leaderboard/").content.decode()
    assert page.index("Bob") < page.index("Ada")
    assert "Hidden" not in page and "hid@example.test" not in page
    assert "50" in page and "30" in page
    assert "ada@example.test" not in page  # never an email on a public page


def test_site_owners_see_what_their_visitors_contributed(client, people, board):
    client.force_login(people.owner)
    page = client.get(f"/orgs/{people.org.slug}/validation/").content.decode()
    i = page.index('id="site-contributions"')
    assert "Science blog" in page[i:] and ">120<" in page[i:] and ">12<" in page[i:]


def test_the_sites_page_shows_what_each_sites_visitors_contributed(client, people, board):
    """Per site, on the organization's sites page (members too): validated results, points,
    when points were last granted and the visitor sessions connected now; no other
    organization's site, and the same number of queries however many sites there are."""
    quiet = EmbedSite.objects.create(
        organization=people.org, name="Quiet page", origin="https://quiet.test"
    )
    theirs = EmbedSite.objects.create(
        organization=people.other_org, name="Their blog", origin="https://theirs.test"
    )
    ledger.grant([(900 + i, None, theirs.pk, board["c"].pk) for i in range(7)])
    WorkerSession.objects.create(kind="browser", site_id=board["site"].pk)
    WorkerSession.objects.create(
        kind="browser", site_id=board["site"].pk, disconnected_at=timezone.now()
    )
    client.force_login(people.teammate)

    def section(page: str, site: EmbedSite) -> str:
        start = page.index(f'id="site-activity-{site.pk}"')
        return page[start : page.index("</p>", start)]

    with CaptureQueriesContext(connection) as few:
        page = client.get(f"/orgs/{people.org.slug}/sites/").content.decode()
    blog = section(page, board["site"])
    assert 'data-field="results">12<' in blog and 'data-field="points">120<' in blog
    assert 'data-field="computing_now">1<' in blog and "<time" in blog
    assert "No contributions" in section(page, quiet)
    assert "Their blog" not in page and "theirs.test" not in page

    for i in range(4):
        more = EmbedSite.objects.create(
            organization=people.org, name=f"More {i}", origin=f"https://more{i}.test"
        )
        ledger.grant([(950 + i, None, more.pk, board["c"].pk)])
        WorkerSession.objects.create(kind="browser", site_id=more.pk)
    with CaptureQueriesContext(connection) as many:
        page = client.get(f"/orgs/{people.org.slug}/sites/").content.decode()
    assert page.count("data-site-activity") == 6
    assert len(many.captured_queries) == len(few.captured_queries)


def test_team_and_site_leaderboards(client, board):
    teams = client.get("/leaderboard/teams/").content.decode()
    assert "Red Dwarfs" in teams and "120" in teams  # 30 + 90, the private member counts
    sites = client.get("/leaderboard/sites/").content.decode()
    assert "Science blog" in sites and "https://blog.test" in sites and "120" in sites
    assert client.get("/leaderboard/nope/").status_code == 404


def test_private_profiles_are_hidden_from_others_but_not_from_their_owner(client, board):
    hid = board["hid"]
    assert client.get(f"/users/{hid.pk}/").status_code == 404
    client.force_login(board["bob"])
    assert client.get(f"/users/{hid.pk}/").status_code == 404
    client.force_login(hid)
    page = client.get(f"/users/{hid.pk}/").content.decode()
    assert "Hidden" in page and "private" in page and "90" in page
    assert client.get("/profile/").url == f"/users/{hid.pk}/"


def test_public_profile_shows_totals_rank_team_and_history(client, board):
    ada = board["ada"]
    Campaign.objects.filter(pk=board["c"].pk).update(state=Campaign.State.RUNNING)  # public
    Reliability.objects.create(user=ada, consecutive_valid=12, valid_total=12)
    page = client.get(f"/users/{ada.pk}/").content.decode()
    assert "Ada" in page and "Red Dwarfs" in page and "#2" in page
    assert "echo campaign" in page
    assert "Your reliability" not in page  # only for the owner
    client.force_login(ada)
    page = client.get(f"/users/{ada.pk}/").content.decode()
    assert "Your reliability" in page and "trusted" in page


def test_a_public_profile_names_private_campaigns_only_to_their_organization(
    client, people, make_campaign, board
):
    """Points earned on a campaign that is not public (unapproved, or a draft) count on the
    profile, but its name shows only to members of its organization: an anonymous visitor and
    another organization's member see neither its name nor its organization's."""
    ada = board["ada"]
    secret = make_campaign(["x"], kernel="primes", approved=False)
    Campaign.objects.filter(pk=secret.pk).update(name="Project Nightshade")
    public = make_campaign(["y"], kernel="mandelbrot")
    Campaign.objects.filter(pk=public.pk).update(name="Open Sky Survey")
    ledger.grant([(5001, ada.pk, None, secret.pk), (5002, ada.pk, None, public.pk)])

    def profile_page() -> str:
        response = client.get(f"/users/{ada.pk}/")
        assert response.status_code == 200
        return response.content.decode()

    for viewer in (None, people.outsider):
        if viewer is not None:
            client.force_login(viewer)
        page = profile_page()
        assert "Open Sky Survey" in page
        assert "Nightshade" not in page and "a private campaign" in page
        assert "echo campaign" not in page  # the fixture's campaign is approved but a draft
        assert ">50<" in page  # 30 + the two results' 10 each: totals count everything
    client.force_login(people.teammate)  # a member of the campaign's organization
    page = profile_page()
    assert "Project Nightshade" in page and "echo campaign" in page


def test_team_members_list_honours_the_opt_out(client, board):
    page = client.get(reverse("rewards:team", args=[board["red"].slug])).content.decode()
    assert "Ada" in page and "Hidden" not in page and "1 member with a private profile" in page


def test_teams_create_join_and_leave_through_the_pages(client, people):
    assert client.get("/teams/new/").status_code == 302  # sign in first
    client.force_login(people.owner)
    r = client.post(
        "/teams/new/", {"name": "Crunchers", "description": "we crunch", "listed": "on"}
    )
    team = Team.objects.get(name="Crunchers")
    assert r.url == f"/teams/{team.slug}/"
    r = client.post("/teams/new/", {"name": "crunchers"})
    assert r.status_code == 200 and "already a team" in r.content.decode()
    client.force_login(people.teammate)
    client.post(f"/teams/{team.slug}/join/")
    assert team.memberships.count() == 2
    # Only the founder may change the team.
    assert client.post(f"/teams/{team.slug}/", {"description": "x"}).status_code == 403
    client.post("/teams/leave/")
    assert team.memberships.count() == 1
    assert "Crunchers" in client.get("/teams/?q=crunch").content.decode()
    new = services.team_create(founder=people.outsider, name="New")
    assert new.slug != "new"


@pytest.fixture
def validated(people, make_campaign):
    c = make_campaign(["a", "b", "c"], min_quorum=2, target_replicas=2, max_total_replicas=3)
    sessions = []
    for name in ("x", "y", "z"):
        u = User.objects.create_user(f"{name}@example.test", "pw", display_name=name.upper())
        s = WorkerSession.objects.create(kind="native", user=u)
        sessions.append(SessionInfo(id=s.pk, user_id=u.pk))
    x, y, z = sessions
    scheduler.work_available()

    def ok(lease, out):
        return ok_item(lease, out, ms=1)

    xa = scheduler.lease(x, 3)
    ya = scheduler.lease(y, 3)
    scheduler.submit_results(x, [ok(lease, b"r") for lease in xa])
    # y agrees on two tasks and lies on the third; z settles it.
    scheduler.submit_results(y, [ok(ya[0], b"r"), ok(ya[1], b"r"), ok(ya[2], b"lie")])
    (za,) = scheduler.lease(z, 3)
    scheduler.submit_results(z, [ok(za, b"r")])
    return c


def test_owner_validation_view_shows_states_and_invalid_rates(client, people, validated):
    c = validated
    client.force_login(people.teammate)
    page = client.get(f"/orgs/{people.org.slug}/validation/{c.pk}/").content.decode()
    assert 'data-field="tasks_valid">3<' in page
    assert 'data-field="valid">6<' in page and 'data-field="invalid">1<' in page
    assert "Y" in page and "33.3%" in page  # y: 2 valid, 1 invalid
    overview = client.get(f"/orgs/{people.org.slug}/validation/").content.decode()
    assert c.name in overview and "14.3%" in overview  # 1 invalid of 7 checked
    assert 'data-field="points">60<' in page  # 6 valid results, 10 points each
    pending = client.get(f"/orgs/{people.org.slug}/validation/{c.pk}/?status=pending")
    assert "No pending tasks" in pending.content.decode()
    assert Result.objects.filter(campaign=c, validation=Result.Validation.INVALID).count() == 1


def test_outsiders_get_404_from_the_validation_view(client, people, validated):
    client.force_login(people.outsider)
    assert client.get(f"/orgs/{people.org.slug}/validation/").status_code == 404
    assert client.get(f"/orgs/{people.org.slug}/validation/{validated.pk}/").status_code == 404
    # Their own organization's URL with our campaign id is just as missing.
    url = f"/orgs/{people.other_org.slug}/validation/{validated.pk}/"
    assert client.get(url).status_code == 404


def test_admin_lists_and_adjusts_through_the_ledger(client, board):
    from rewards.models import LedgerEntry, Total

    admin = User.objects.create_superuser("root@example.test", "pw")
    client.force_login(admin)
    for name in ("ledgerentry", "total", "reliability", "team"):
        assert client.get(f"/admin/rewards/{name}/").status_code == 200, name
    ada = board["ada"]
    r = client.post(
        "/admin/rewards/ledgerentry/add/",
        {"user": ada.pk, "campaign": "", "points": "-5", "note": "double counted"},
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert (entry.user_id, entry.points, entry.team_id) == (ada.pk, -5, board["red"].pk)
    assert Total.objects.get(scope="user", key=ada.pk).points == 25
    assert client.get(f"/admin/rewards/ledgerentry/{entry.pk}/change/").status_code == 200
    assert ledger.check_totals() == []


def test_profile_history_pages_through_older_entries(client, board):
    bob = board["bob"]
    ledger.grant([(2000 + i, bob.pk, None, board["c"].pk) for i in range(20)])  # 25 in all
    first = client.get(f"/users/{bob.pk}/").content.decode()
    assert first.count("result of") == 20
    assert "?page=2#history" in first and "← Newer" not in first
    second = client.get(f"/users/{bob.pk}/?page=2").content.decode()
    assert second.count("result of") == 5
    assert "?page=1#history" in second and "Older →" not in second
