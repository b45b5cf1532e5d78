"""The branded error pages: another organization's address, a missing page, a refused action and
a server error all show the product's page (with DEBUG on, the embedded default, and off); the
API keeps answering in JSON."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import path

from ccgsc.urls import urlpatterns as site_patterns


def boom(request):
    raise RuntimeError("a bug")


def refuse(request):
    raise PermissionDenied("only owners may do this")


urlpatterns = [path("boom/", boom), path("refuse/", refuse), *site_patterns]


def signed_in(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.mark.parametrize("debug", [True, False])
def test_another_orgs_address_shows_the_branded_404(people, settings, debug):
    settings.DEBUG = debug
    response = signed_in(people.outsider).get(f"/orgs/{people.org.slug}/campaigns/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found · CCGSC" in html
    assert 'class="brand"' in html and "Your dashboard" in html
    assert "Technical" not in html and "URLconf" not in html


def test_a_missing_page_is_branded_with_debug_off(people, settings):
    settings.DEBUG = False
    response = Client().get("/no/such/page/")
    assert response.status_code == 404
    assert "Page not found · CCGSC" in response.content.decode()


def test_the_api_still_answers_404_in_json(people, settings):
    settings.DEBUG = True
    response = signed_in(people.outsider).get("/api/v1/campaigns/999999")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.urls(__name__)
def test_refused_and_failed_requests_show_branded_pages(people, settings):
    settings.DEBUG = False
    client = signed_in(people.owner)
    refused = client.get("/refuse/")
    assert refused.status_code == 403
    assert "You cannot do this here" in refused.content.decode()
    assert "only owners may do this" in refused.content.decode()
    failed = client.get("/boom/")
    assert failed.status_code == 500
    html = failed.content.decode()
    assert "Something went wrong on our side" in html and 'class="brand"' in html
    assert "a bug" not in html


def test_a_form_sent_without_its_token_gets_the_branded_csrf_page(people, settings):
    settings.DEBUG = False
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.owner)
    response = client.post("/account/", {})
    assert response.status_code == 403
    assert "This form expired" in response.content.decode()


def test_the_api_docs_link_back_to_the_platform(db):
    html = Client().get("/api/v1/docs/").content.decode()
    assert 'class="ccgsc-brand" href="/"' in html
    assert 'id="swagger-ui"' in html


def test_the_admin_carries_the_product_look(people):
    people.owner.is_staff = True
    people.owner.is_superuser = True
    people.owner.save()
    client = Client()
    client.force_login(people.owner)
    html = client.get("/admin/campaigns/kernel/").content.decode()
    assert "css/admin.css" in html and "CC<span>GSC</span> admin" in html
    assert 'href="/">← Back to the site' in html
