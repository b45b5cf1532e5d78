"""The REST API's rate limit (settings.API_RATE). Its own module: DRF's views read
DEFAULT_THROTTLE_CLASSES when they are imported, so this must not import them (ccgsc.api does)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ApiRateThrottle(SimpleRateThrottle):
    """settings.API_RATE requests per caller: an organization's API token, a signed-in user,
    or else an address. Over it: 429 in the error shape with Retry-After."""

    scope = "api"

    def get_rate(self) -> str | None:
        return settings.API_RATE or None

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        from accounts.models import ApiToken

        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
