from django.apps import AppConfig

CATCH_UP_SECONDS = 180.0


class RewardsConfig(AppConfig):
    name = "rewards"
    verbose_name = "Validation and rewards"

    def ready(self) -> None:
        from accounts import selectors as account_selectors
        from rewards import hooks, validation
        from rewards.selectors import with_site_activity
        from workers import scheduler, sweeper

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
        # The organization's embed sites page shows what each site's visitors contributed.
        if with_site_activity not in account_selectors.site_activity_annotators:
            account_selectors.site_activity_annotators.append(with_site_activity)
        # Safety net: tasks whose validation was lost (a verifier job gone with its process)
        # are decided by every server's sweeper, every few minutes.
        if not any(job is validation.catch_up for _, job in sweeper.periodic):
            sweeper.periodic.append((CATCH_UP_SECONDS, validation.catch_up))
