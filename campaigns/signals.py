"""Signals other apps listen to; campaigns/ never imports them (dependency direction).

`work_available(campaign_id)` is sent after a commit that made tasks leasable (a campaign
started or resumed, tasks added to a running campaign): the scheduler wakes idle workers.
Nudges of one campaign are coalesced (a few a second) unless `urgent=True` (a synchronous run
someone is waiting on).
`campaign_changed(campaign_id, state)` is sent after a commit that changed a campaign's state,
so workers holding its tasks can be told to cancel them and live pages can refresh.
`count_volunteers(campaign)` asks how many distinct volunteers connected now could hold
replicas of one of the campaign's tasks; workers/ answers with an int (campaigns/selectors.py
`campaign_stalled` uses it to say when a quorum cannot be reached).
"""

from django.dispatch import Signal

work_available = Signal()
campaign_changed = Signal()
count_volunteers = Signal()
