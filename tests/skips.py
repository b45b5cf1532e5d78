"""Skips that say why and never hold under CI: what .ci/run installs (nginx, Rust, Mesa's
software Vulkan driver, Node.js, Chromium) must be there when CI=true, so there a missing piece
fails the test instead of skipping it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI") == "true"


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip with `reason` on a developer's machine; under CI fail with it."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but {reason}")
    pytest.skip(reason=f"{reason} (never skipped in CI)")


def needs(missing: bool, reason: str) -> pytest.MarkDecorator:
    """A skipif mark that holds only outside CI (under CI the test runs and fails loudly)."""
    return pytest.mark.skipif(missing and not IN_CI, reason=f"{reason} (never skipped in CI)")
