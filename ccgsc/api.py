"""One error shape for the whole REST API: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


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
        fields = {
            k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in detail.items()
        }
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


def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other URL under /api/v1/: the API's error shape, not the site's HTML 404 page."""
    return JsonResponse(
        {
            "error": {
                "code": "not_found",
                "message": f"No API endpoint at {request.path}. See /api/v1/docs/.",
            }
        },
        status=404,
    )
