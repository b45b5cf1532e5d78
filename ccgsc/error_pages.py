"""The product's 404 page also while DEBUG is on (the embedded mode's default): another
organization's address is an everyday answer of the tenancy rules, not a bug to debug, so a new
user sees the branded page rather than Django's technical one. Addresses no URL pattern matches
keep Django's debug page in DEBUG (it lists the patterns, which is what a developer wants); with
DEBUG off Django renders templates/404.html for every 404 itself."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults


class BrandedNotFoundMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # The API answers in JSON through its own handler.
        if not settings.DEBUG or not isinstance(exception, Http404):
            return None
        if request.path.startswith("/api/"):
            return None
        return defaults.page_not_found(request, exception)
