"""One error shape for the whole REST API: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _field_messages(field: str, detail: Any) -> list[str]:
    """A field's errors as plain sentences. A field's own errors are a list of messages; a list
    or map field reports its items' errors by index or key ({1: [...]}), which become
    "args[1]: not a valid string." rather than the repr of DRF's ErrorDetail objects."""
    if isinstance(detail, list) and not any(isinstance(m, dict | list) for m in detail):
        return [str(m) for m in detail]
    return list(_item_messages(field, detail))


def _item_messages(path: str, detail: Any) -> Iterator[str]:
    if isinstance(detail, dict):
        for key, sub in detail.items():
            index = key if isinstance(key, int) else json.dumps(str(key))
            yield from _item_messages(f"{path}[{index}]", sub)
    elif isinstance(detail, list) and any(isinstance(m, dict | list) for m in detail):
        # A list of items' errors (a many=True serializer): one entry per item, empty if valid.
        for index, sub in enumerate(detail):
            yield from _item_messages(f"{path}[{index}]", sub)
    elif isinstance(detail, list):
        for sub in detail:
            yield from _item_messages(path, sub)
    else:
        text = str(detail)
        # "Not a valid string." reads as the second half of "args[1]: not a valid string."
        if text[:1].isupper() and text[1:2].islower():
            text = text[0].lower() + text[1:]
        yield f"{path}: {text}"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    detail = response.data
    fields: dict[str, Any] | None = None
    if isinstance(detail, dict) and "detail" in detail:
        message = str(detail["detail"])
        # DRF turns Django's Http404 / PermissionDenied into details that carry their code.
        code = getattr(detail["detail"], "code", code)
    elif isinstance(detail, dict):
        fields = {k: _field_messages(str(k), v) for k, v in detail.items()}
        message = "Invalid input."
        code = "invalid"
    elif isinstance(detail, list):
        message = " ".join(str(m) for m in detail)
    else:
        message = str(detail)
    body: dict[str, Any] = {"code": str(code), "message": message}
    if fields:
        body["fields"] = fields
    response.data = {"error": body}
    return response


API_PREFIX = "/api/"


def error_response(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


# Exempt from CSRF: it changes nothing, and a POST to a mistyped URL should learn that the URL
# is wrong (404), not that a cookie-less API client lacks a CSRF token (HTML 403).
@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other URL under /api/v1/, with any method: the API's error shape, not the site's
    HTML 404 page."""
    return JsonResponse(
        {
            "error": {
                "code": "not_found",
                "message": f"No API endpoint at {request.path}. See /api/v1/docs/.",
            }
        },
        status=404,
    )


def method_not_allowed(request: HttpRequest, allowed: list[str]) -> JsonResponse:
    response = error_response(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
    response["Allow"] = ", ".join(allowed)
    return response


def api_methods(*allowed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """require_http_methods for the API's plain Django views (status, the HTTP fallback): any
    other method gets the API's JSON 405 with an Allow header instead of an empty body. HEAD is
    allowed wherever GET is, as Django's require_GET does not but HTTP says."""
    methods = {*allowed, *(["HEAD"] if "GET" in allowed else [])}

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        if iscoroutinefunction(view):

            @wraps(view)
            async def async_inner(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                if request.method not in methods:
                    return method_not_allowed(request, sorted(methods))
                return await view(request, *args, **kwargs)

            return async_inner

        @wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method not in methods:
                return method_not_allowed(request, sorted(methods))
            return view(request, *args, **kwargs)

        return inner

    return decorator


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: under /api/ the refusal is in the API's JSON error shape (a browser
    session's POST without its token); elsewhere Django's own page."""
    if request.path.startswith(API_PREFIX):
        return error_response(
            403, "csrf_failed", f"CSRF check failed ({reason}); API clients use a token."
        )
    return csrf.csrf_failure(request, reason)
