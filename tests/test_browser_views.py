"""The browser worker's pages and scripts over HTTP (no browser): CSP headers, the embed
frame's refusals, the contribute page, and what a volunteer may see of a campaign."""

from __future__ import annotations

import pytest

from accounts.models import EmbedSite

pytestmark = pytest.mark.django_db


@pytest.fixture
def site(people):
    return EmbedSite.objects.create(
        organization=people.org, name="Alpha blog", origin="https://blog.alpha.test"
    )


def csp(response) -> dict[str, str]:
    directives = {}
    for part in response["Content-Security-Policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        directives[name] = value
    return directives


def test_embed_script_reads_its_tag_and_inserts_a_sandboxed_frame(client):
    response = client.get("/embed.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    body = response.content.decode()
    assert 'getAttribute("data-site")' in body
    assert "/embed/frame/?site=" in body
    assert "allow-scripts allow-same-origin" in body
    assert response["Cross-Origin-Resource-Policy"] == "cross-origin"


def test_embed_frame_may_be_framed_only_by_the_registered_origin(client, site):
    response = client.get(f"/embed/frame/?site={site.key}")
    assert response.status_code == 200
    policy = csp(response)
    assert policy["frame-ancestors"] == "https://blog.alpha.test"
    assert policy["connect-src"] == "'self'"
    assert "X-Frame-Options" not in response
    body = response.content.decode()
    assert "Alpha blog" in body and "Alpha Lab" in body
    assert 'id="opt-in"' in body and 'id="opt-out"' in body


def test_embed_frame_checks_the_embedding_page_when_the_browser_tells(client, site):
    ok = client.get(f"/embed/frame/?site={site.key}", HTTP_REFERER="https://blog.alpha.test/")
    assert ok.status_code == 200
    other = client.get(f"/embed/frame/?site={site.key}", HTTP_REFERER="https://evil.test/post/1")
    assert other.status_code == 404
    assert csp(other)["frame-ancestors"] == "'none'"


@pytest.mark.parametrize("key", ["", "nope", "x" * 100])
def test_embed_frame_refuses_unknown_keys(client, key):
    response = client.get(f"/embed/frame/?site={key}")
    assert response.status_code == 404
    assert csp(response)["frame-ancestors"] == "'none'"


def test_embed_frame_runs_gpu_work_only_where_the_site_owner_opted_in(client, site):
    def config(query: str) -> dict:
        return client.get(f"/embed/frame/?site={site.key}{query}").context["config"]

    assert config("")["gpu"] is False
    assert config("&gpu=yes")["gpu"] is False
    assert config("&gpu=on")["gpu"] is True
    assert config("&gpu=on")["workerUrls"]["gpu"] == "/worker/gpu.js"


def test_embed_tag_passes_the_gpu_opt_in_to_its_frame(client):
    script = client.get("/embed.js").content.decode()
    assert 'getAttribute("data-gpu")' in script
    assert '"&gpu=on"' in script


def test_embed_frame_refuses_inactive_sites(client, site):
    site.active = False
    site.save()
    assert client.get(f"/embed/frame/?site={site.key}").status_code == 404


@pytest.mark.parametrize("kind", ["wasm", "js", "gpu"])
def test_kernel_worker_scripts_forbid_every_connection(client, kind):
    response = client.get(f"/worker/{kind}.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    policy = csp(response)
    assert policy["connect-src"] == "'none'"
    assert policy["default-src"] == "'none'"
    assert policy["worker-src"] == "'none'"
    assert policy["script-src"].split()[0] == "'self'"
    assert response.content.decode().startswith('import "/static/js/worker/')


def test_unknown_worker_script_is_404(client):
    assert client.get("/worker/python.js").status_code == 404


def test_contribute_page_anonymous_and_signed_in(client, people):
    anonymous = client.get("/contribute/")
    assert anonymous.status_code == 200
    assert b"contributing anonymously" in anonymous.content
    assert b'id="ccgsc-config"' in anonymous.content
    client.force_login(people.owner)
    signed_in = client.get("/contribute/")
    assert b"contributing anonymously" not in signed_in.content
    assert b"points earned" in signed_in.content


def test_campaign_card_shows_public_campaigns_only(client, make_campaign, people):
    public = make_campaign(["1"], description="Counting primes for fun.")
    private = make_campaign(["1"], kernel="primes", approved=False)
    response = client.get(f"/contribute/campaigns/{public.pk}.json")
    assert response.status_code == 200
    assert response.json()["description"] == "Counting primes for fun."
    assert response.json()["organization"] == people.org.name
    # Unapproved campaigns are the organization's business: same answer as a missing one.
    assert client.get(f"/contribute/campaigns/{private.pk}.json").status_code == 404
    assert client.get("/contribute/campaigns/999999.json").status_code == 404
    # Except for its members, whose browsers run it.
    client.force_login(people.outsider)
    assert client.get(f"/contribute/campaigns/{private.pk}.json").status_code == 404
    client.force_login(people.teammate)
    assert client.get(f"/contribute/campaigns/{private.pk}.json").json()["id"] == private.pk


def test_contributor_points_are_the_signed_in_users_total(client, people):
    from rewards.models import Total

    assert client.get("/contribute/points.json").json() == {"points": None, "results": 0}
    client.force_login(people.teammate)
    assert client.get("/contribute/points.json").json() == {"points": 0, "results": 0}
    Total.objects.create(scope=Total.Scope.USER, key=people.teammate.pk, points=30, results=3)
    Total.objects.create(scope=Total.Scope.USER, key=people.owner.pk, points=99, results=9)
    assert client.get("/contribute/points.json").json() == {"points": 30, "results": 3}
