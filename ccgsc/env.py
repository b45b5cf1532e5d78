"""Strict readers for configuration from environment variables.

Every setting comes from the environment; a malformed value stops start-up with a message that
names the variable, instead of running with a guess.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class ConfigError(Exception):
    """An environment variable holds a value the platform refuses to start with."""


def env_str(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    return (environ if environ is not None else os.environ).get(name, default)


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Only "true"/"false" (any case), "1"/"0" are accepted: "yes" or "on" are refused."""
    raw = env_str(name, "", environ).strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    raw = env_str(name, "", environ).strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def env_list(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    raw = env_str(name, "", environ).strip()
    if raw == "":
        return list(default)
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise ConfigError(f"{name} must be a comma-separated list without empty items, got {raw!r}")
    return items


def env_url(
    name: str, schemes: tuple[str, ...], environ: Mapping[str, str] | None = None
) -> str | None:
    """A URL whose scheme is one of `schemes`, or None when the variable is unset."""
    raw = env_str(name, "", environ).strip()
    if raw == "":
        return None
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in schemes or not rest:
        raise ConfigError(
            f"{name} must be a URL starting with {' or '.join(schemes)}://, got {raw!r}"
        )
    return raw
