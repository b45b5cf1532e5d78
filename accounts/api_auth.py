"""REST API authentication with an organization's API token: `Authorization: Bearer ccgsc_…`."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from accounts.models import ApiToken


class OrganizationTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw = header.partition(" ")
        if keyword != self.keyword:
            return None
        token = ApiToken.authenticate(raw.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        # The token acts for its organization; request.user is whoever created it (for audit),
        # but every tenant query scopes by the token's organization through Actor.
        user = token.created_by
        if user is None:
            from django.contrib.auth.models import AnonymousUser

            return (AnonymousUser(), token)
        return (user, token)

    def authenticate_header(self, request: Any) -> str:
        return self.keyword
