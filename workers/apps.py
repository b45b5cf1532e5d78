from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers and scheduling"

    def ready(self) -> None:
        from campaigns import signals
        from workers import live, selectors

        signals.work_available.connect(live.on_work_available, dispatch_uid="workers.work")
        signals.campaign_changed.connect(live.on_campaign_changed, dispatch_uid="workers.campaign")
        signals.count_volunteers.connect(selectors.count_volunteers, dispatch_uid="workers.count")
