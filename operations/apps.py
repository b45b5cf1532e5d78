from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations: health, metrics, notifications"

    def ready(self) -> None:
        from campaigns import signals
        from operations import hooks

        signals.campaign_changed.connect(hooks.on_campaign_changed, dispatch_uid="operations")
        hooks.register()
