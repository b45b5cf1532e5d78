from django.apps import AppConfig

CATCH_UP_SECONDS = 180.0


class RewardsConfig(AppConfig):
    name = "rewards"
    verbose_name = "Validation and rewards"

    def ready(self) -> None:
        """rewards/ extends the apps below it through ccgsc.hooks (its table says who calls
        each point, and when)."""
        from ccgsc.hooks import PeriodicJob, register, registry
        from rewards import hooks, validation
        from rewards.selectors import with_site_activity

        # Inside the scheduler's results transaction: results validated as they arrived are
        # paid, replicated ones decided by quorum (or a verifier job), failed attempts reset
        # trust; and before leasing, refused users are given no work.
        register(registry.pay_points, hooks.pay_inline)
        register(registry.decide_returned, hooks.on_returned)
        register(registry.record_failed, hooks.on_failed)
        register(registry.lease_gates, hooks.may_lease)
        # The organization's embed sites page shows what each site's visitors contributed.
        register(registry.site_annotators, with_site_activity)
        # Safety net: tasks whose validation was lost (a verifier job gone with its process)
        # are decided by the deployment's sweeper, every few minutes.
        register(registry.periodic, PeriodicJob(CATCH_UP_SECONDS, validation.catch_up))
