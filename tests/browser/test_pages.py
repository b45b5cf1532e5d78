"""The pages a new user meets, in real Chromium against a real daphne: a refused form shows its
problems at the top and focuses the first bad field; a task file is checked in the browser before
it is uploaded; the error pages carry the product's look; nothing is clipped on a phone.

Set CCGSC_SCREENSHOTS=<dir> to keep screenshots of the pages."""

from __future__ import annotations

import json

import pytest

from campaigns import services
from campaigns.models import Campaign
from tests.browser.test_campaign_pages import new_page, screenshot
from tests.conftest import kernel_bytes

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]


def test_create_form_checks_the_task_file_before_upload_and_shows_problems_at_the_top(
    browser, platform, people, tmp_path
):
    services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))
    page = new_page(browser, platform.url, people.owner)
    page.set_viewport_size({"width": 1280, "height": 700})
    page.goto(f"/orgs/{people.org.slug}/campaigns/new/")
    page.fill("#id_name", "Squares")
    page.select_option("#id_kernel", index=1)
    page.check('input[name="input_source"][value="file"]')
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('"1"\n{"input": "2", "colour": "red"}\n')
    page.set_input_files("#id_task_file", str(bad))
    # The browser finds the bad line at once: no upload, no reload, the file stays chosen.
    error = page.locator("#field-task_file [data-client-error]")
    error.wait_for()
    assert "line 2: unknown field(s) colour" in error.inner_text()
    url = page.url
    page.click("#campaign-form button[type=submit]")
    assert page.url == url
    assert page.evaluate("document.activeElement.id") == "id_task_file"
    assert page.eval_on_selector("#id_task_file", "i => i.files.length") == 1
    assert not Campaign.objects.exists()

    # A good file but a refused policy: the server's answer lists it at the top, the bad field
    # has the focus, and the page says plainly that the file must be chosen again.
    good = tmp_path / "good.jsonl"
    good.write_text('"1"\n"2"\n')
    page.set_input_files("#id_task_file", str(good))
    page.wait_for_function("() => !document.querySelector('#field-task_file [data-client-error]')")
    page.fill("#id_min_quorum", "3")
    page.fill("#id_target_replicas", "1")
    page.click("#campaign-form button[type=submit]")
    summary = page.locator("#error-summary")
    summary.wait_for()
    assert "The campaign was not created" in summary.inner_text()
    page.wait_for_function("() => document.activeElement.getAttribute('aria-invalid') === 'true'")
    assert page.evaluate("document.activeElement.id") == "id_target_replicas"
    assert page.locator(".dropped-file").inner_text().startswith("Choose good.jsonl again")
    # The focused field is on screen (not below the fold).
    assert page.evaluate(
        "(() => { const r = document.activeElement.getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= innerHeight; })()"
    )
    screenshot(page, tmp_path, "create_form_errors")
    assert not Campaign.objects.exists()
    assert page.errors == []


def test_another_orgs_address_shows_the_branded_404(browser, platform, people, tmp_path):
    page = new_page(browser, platform.url, people.outsider)
    response = page.goto(f"/orgs/{people.org.slug}/campaigns/")
    assert response is not None and response.status == 404
    assert page.title() == "Page not found · CCGSC"
    assert page.locator("h1").inner_text() == "Page not found"
    # The site's frame and stylesheet: the nav, and the big code in the brand's colour.
    assert page.locator("nav .brand").is_visible()
    colour = page.eval_on_selector(".error-code", "e => getComputedStyle(e).color")
    assert colour not in ("rgb(0, 0, 0)", "")
    page.click("text=Your dashboard")
    page.wait_for_url("**/dashboard/")
    screenshot(page, tmp_path, "404")


OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("body *")].filter((el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.right > width + 1 && !el.closest(".table-wrap, .tabs, pre, .code");
  });
  const tables = [...document.querySelectorAll(".table-wrap")]
    .filter((w) => w.scrollWidth > w.clientWidth + 1)
    .map((w) => `${w.querySelector("table")?.id || w.closest("section")?.id || "table"}:` +
      `${w.scrollWidth}>${w.clientWidth}:` +
      [...w.querySelectorAll("thead th")]
        .map((th) => Math.round(th.getBoundingClientRect().width))
        .join(","));
  return {
    tables,
    scroll: document.documentElement.scrollWidth,
    width,
    wide: wide.slice(0, 5).map((el) => el.tagName + "." + el.className + "#" + el.id),
  };
}"""


def test_pages_fit_a_phone_screen(browser, platform, people, make_campaign, tmp_path):
    """At 390 px wide no page scrolls sideways: the tab bar wraps, tables scroll inside their
    own box (hands, campaign list, active workers)."""
    campaign = make_campaign(["1", "2", "3"], kernel="echo")
    slug = people.org.slug
    page = new_page(browser, platform.url, people.owner)
    page.set_viewport_size({"width": 390, "height": 844})
    paths = [
        "/",
        "/dashboard/",
        f"/orgs/{slug}/",
        f"/orgs/{slug}/campaigns/",
        f"/orgs/{slug}/campaigns/new/",
        f"/orgs/{slug}/campaigns/{campaign.pk}/",
        f"/orgs/{slug}/campaigns/{campaign.pk}/results/",
        f"/orgs/{slug}/kernels/",
        f"/orgs/{slug}/members/",
        f"/orgs/{slug}/tokens/",
        f"/orgs/{slug}/sites/",
        f"/orgs/{slug}/validation/",
        f"/orgs/{slug}/validation/{campaign.pk}/",
        "/contribute/",
        "/leaderboard/",
        "/profile/",
        "/teams/",
        "/account/",
        "/api/v1/docs/",
    ]
    problems = {}
    for path in paths:
        response = page.goto(path)
        assert response is not None and response.ok, path
        page.wait_for_load_state("load")
        found = page.evaluate(OVERFLOW)
        if found["scroll"] > found["width"] or found["wide"] or found["tables"]:
            problems[path] = found
        screenshot(page, tmp_path, "phone" + path.replace("/", "_"))
    assert problems == {}, json.dumps(problems, indent=1)
    # The organization's tabs all show (they wrap instead of hiding off screen).
    page.goto(f"/orgs/{slug}/")
    for tab in page.locator(".tabs a").all():
        box = tab.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, tab
    assert page.errors == []
