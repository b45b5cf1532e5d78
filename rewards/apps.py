from django.apps import AppConfig


class RewardsConfig(AppConfig):
    name = "rewards"
    verbose_name = "Validation and rewards"

    def ready(self) -> None:
        from rewards import hooks
        from workers import scheduler

        # The scheduler calls these inside its results transaction (see workers.scheduler):
        # inline-validated results are paid, replicated ones validated by quorum, failed
        # attempts reset trust, and refused users are given no work.
        if hooks.pay_inline not in scheduler.validated_hooks:
            scheduler.validated_hooks.append(hooks.pay_inline)
        if hooks.on_returned not in scheduler.returned_hooks:
            scheduler.returned_hooks.append(hooks.on_returned)
        if hooks.on_failed not in scheduler.failed_hooks:
            scheduler.failed_hooks.append(hooks.on_failed)
        if hooks.may_lease not in scheduler.lease_gates:
            scheduler.lease_gates.append(hooks.may_lease)
