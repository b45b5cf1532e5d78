"""Signals other apps listen to; campaigns/ never imports them (dependency direction).

`work_available(campaign_id)` is sent after a commit that made tasks leasable (a campaign
started or resumed, tasks added to a running campaign): the scheduler wakes idle workers.
`campaign_changed(campaign_id, state)` is sent after a commit that changed a campaign's state,
so workers holding its tasks can be told to cancel them and live pages can refresh.
"""

from django.dispatch import Signal

work_available = Signal()
campaign_changed = Signal()
