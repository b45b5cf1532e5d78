"""What every service shares: the error a person is shown, the platform's limits, this
process's kernel sandbox, and the announcement of a campaign's new state after commit."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from campaigns import signals
from campaigns.inputs import args_problem, env_problem
from campaigns.models import Campaign


class ServiceError(ValueError):
    """A request the platform refuses, with a message meant for the person who made it."""


def limits() -> dict[str, Any]:
    return settings.CCGSC


def sandbox_host() -> Any:
    """This process's kernel host, with its compiled-module cache where settings say."""
    from kernelhost import KernelHost, default_host, set_default_host

    global _host_configured
    if not _host_configured:
        set_default_host(
            KernelHost(
                cache_dir=limits()["MODULE_CACHE_DIR"],
                cache_max_bytes=limits()["MODULE_CACHE_MAX_BYTES"],
            )
        )
        _host_configured = True
    return default_host()


_host_configured = False


def check_args_env(args: Any, env: Any, *, args_field: str = "args") -> None:
    """The one check of arguments and environments (campaigns.inputs): the web form, the API
    and task files refuse the same things with the same words."""
    problem = args_problem(args, args_field) or env_problem(env)
    if problem is not None:
        raise ServiceError(f"{problem}.")


def describe_failure(what: str, result: Any) -> str:
    detail = result.message or str(result.error)
    tail = result.stderr_tail.decode("utf-8", "replace").strip()[-500:]
    text = f"The {what} failed ({result.error}): {detail}"
    return f"{text}\nstderr: {tail}" if tail else text


def announce(campaign_id: int, state: str) -> None:
    transaction.on_commit(
        lambda: signals.campaign_changed.send(Campaign, campaign_id=campaign_id, state=state)
    )
