"""The demo feed's cursor never skips a result: results are stamped before they commit, so two
sessions answering one campaign at once can make an earlier-stamped result visible after a
later one (campaigns.selectors.feed_horizon)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns import selectors
from campaigns.models import Campaign, Result
from tests.test_owner_ui import complete_tasks

pytestmark = pytest.mark.django_db


def test_a_result_committed_after_a_later_stamped_one_still_reaches_the_feed(make_campaign):
    campaign = make_campaign(["0", "1", "2"])
    complete_tasks(campaign, {0: b"2\n3\n", 1: b"5\n7\n11\n"}, n=2)
    first, second = Result.objects.filter(campaign=campaign, state=Result.State.RETURNED)
    t0 = timezone.now()
    # `second` was stamped first but its transaction has not committed yet (not RETURNED as
    # far as readers know); `first` was stamped a moment later and is visible.
    Result.objects.filter(pk=second.pk).update(returned_at=t0, state=Result.State.LEASED)
    Result.objects.filter(pk=first.pk).update(returned_at=t0 + timedelta(milliseconds=300))
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING

    def read(cursor, now):
        horizon = selectors.feed_horizon(campaign, now)
        body = selectors.demo_feed(campaign, cursor, horizon=horizon)
        return body, selectors.primes_found(campaign, horizon)

    seen = []
    body, _ = read(None, t0 + timedelta(milliseconds=500))
    seen += body["results"]
    Result.objects.filter(pk=second.pk).update(state=Result.State.RETURNED)  # it commits
    body, count = read(body["cursor"], t0 + selectors.FEED_SETTLE + timedelta(seconds=1))
    seen += body["results"]
    assert sorted(r["seq"] for r in seen) == sorted([first.task.seq, second.task.seq])
    assert count == 5  # the primes count reads the same results


def test_a_finished_campaigns_feed_reads_everything_at_once(make_campaign):
    campaign = make_campaign(["0", "1"])
    complete_tasks(campaign, n=2)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.COMPLETED
    assert selectors.feed_horizon(campaign) is None
    assert len(selectors.demo_feed(campaign, None, horizon=None)["results"]) == 2
