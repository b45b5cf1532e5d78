"""Owners delete what nothing uses yet: a kernel no campaign refers to, an embed site nobody has
computed through. Used ones are refused with the reason; members cannot delete; outsiders get
404."""

from __future__ import annotations

from django.test import Client

from accounts.models import EmbedSite
from campaigns import services
from campaigns.models import Kernel
from rewards.models import Total
from tests.conftest import kernel_bytes


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_owner_deletes_an_unused_kernel_and_is_told_why_a_used_one_stays(people, make_campaign):
    unused = services.kernel_upload(
        organization=people.org, name="primes", data=kernel_bytes("primes")
    )
    campaign = make_campaign(["1"], kernel="echo", start=False)
    used = campaign.kernel
    owner = signed_in(people.owner)

    response = owner.post(f"/orgs/alpha/kernels/{unused.pk}/delete/", follow=True)
    assert not Kernel.objects.filter(pk=unused.pk).exists()
    assert "Deleted the kernel “primes”" in response.content.decode()

    response = owner.post(f"/orgs/alpha/kernels/{used.pk}/delete/", follow=True)
    assert Kernel.objects.filter(pk=used.pk).exists()
    assert f"is used by “{campaign.name}”" in response.content.decode()


def test_a_kernel_used_only_as_a_generator_is_kept_too(people, make_campaign):
    generator = services.kernel_upload(
        organization=people.org, name="gen", data=kernel_bytes("primes_gen")
    )
    kernel = services.kernel_upload(
        organization=people.org, name="primes", data=kernel_bytes("primes")
    )
    from campaigns.models import Campaign

    Campaign.objects.create(
        organization=people.org, name="Generated", kernel=kernel, generator=generator
    )
    signed_in(people.owner).post(f"/orgs/alpha/kernels/{generator.pk}/delete/")
    assert Kernel.objects.filter(pk=generator.pk).exists()


def test_only_owners_delete_kernels_and_outsiders_see_nothing(people):
    kernel = services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))
    assert (
        signed_in(people.teammate).post(f"/orgs/alpha/kernels/{kernel.pk}/delete/").status_code
        == 403
    )
    assert (
        signed_in(people.outsider).post(f"/orgs/alpha/kernels/{kernel.pk}/delete/").status_code
        == 404
    )
    assert (
        signed_in(people.outsider).post(f"/orgs/beta/kernels/{kernel.pk}/delete/").status_code
        == 404
    )
    assert Kernel.objects.filter(pk=kernel.pk).exists()


def test_owner_deletes_an_unused_site_but_not_one_with_contributions(people):
    fresh = EmbedSite.objects.create(organization=people.org, name="New", origin="https://new.test")
    busy = EmbedSite.objects.create(
        organization=people.org, name="Blog", origin="https://blog.test"
    )
    Total.objects.create(scope=Total.Scope.SITE, key=busy.pk, points=30, results=3)
    owner = signed_in(people.owner)

    page = owner.post(f"/orgs/alpha/sites/{fresh.pk}/delete/", follow=True).content.decode()
    assert not EmbedSite.objects.filter(pk=fresh.pk).exists()
    assert "Deleted https://new.test" in page

    page = owner.post(f"/orgs/alpha/sites/{busy.pk}/delete/", follow=True).content.decode()
    assert EmbedSite.objects.filter(pk=busy.pk).exists()
    assert "cannot be deleted: pause it instead" in page

    assert (
        signed_in(people.teammate).post(f"/orgs/alpha/sites/{busy.pk}/delete/").status_code == 403
    )
    assert (
        signed_in(people.outsider).post(f"/orgs/alpha/sites/{busy.pk}/delete/").status_code == 404
    )
