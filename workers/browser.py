"""The browser worker's pages and scripts: the contribute page, the embed script and its
iframe, and the entry scripts of the kernels' Web Workers (served with a CSP that forbids
network connections).

The harness itself is static ES modules under static/js/worker/; these views only add what a
static file cannot carry: per-site Content-Security-Policy headers and the embed's consent page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from csp.decorators import csp_update
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET

from accounts.models import EmbedSite, normalize_origin
from campaigns.models import Campaign
from workers import identity

# The entry script of each kind of kernel worker (see worker_script).
WORKER_MODULES = {
    "wasm": "js/worker/wasm_worker.js",
    "js": "js/worker/js_worker.js",
    "gpu": "js/worker/gpu_worker.js",
}


def _static_origin() -> str:
    """The origin static files come from when STATIC_URL is absolute (a CDN), else ''."""
    parts = urlsplit(static("js/worker/harness.js"))
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _csp(**directives: str) -> str:
    return "; ".join(f"{name.replace('_', '-')} {value}" for name, value in directives.items())


def _worker_urls() -> dict[str, str]:
    return {kind: f"/worker/{kind}.js" for kind in WORKER_MODULES}


# The page compiles kernels once and posts the modules to its workers (static/js/worker/kernels.js).
@csp_update({"script-src": "'wasm-unsafe-eval'"})
@require_GET
def contribute(request: HttpRequest) -> HttpResponse:
    """The contribute page: the harness runs in this page's Web Workers."""
    transport = request.GET.get("transport", "auto")
    config = {
        "workerUrls": _worker_urls(),
        "transport": transport if transport in ("auto", "websocket", "http") else "auto",
        "signedIn": request.user.is_authenticated,
    }
    response = render(request, "workers/contribute.html", {"config": config})
    identity.ensure_profile_cookie(request, response, framed=False)
    return response


@require_GET
def campaign_card(request: HttpRequest, pk: int) -> JsonResponse:
    """What a volunteer may know about a campaign their browser is serving: public
    (approved) campaigns, and their own organizations' (a member's browser runs those too);
    anything else is a 404, as if it did not exist."""
    visible = Q(approved=True)
    if request.user.is_authenticated:
        visible |= Q(organization__memberships__user=request.user)
    campaign = (
        Campaign.objects.filter(visible, pk=pk)
        .select_related("organization")
        .only(
            "name",
            "description",
            "points_per_task",
            "tasks_total",
            "tasks_done",
            "state",
            "organization__name",
        )
        .first()
    )
    if campaign is None:
        return JsonResponse(
            {"error": {"code": "not_found", "message": "no such campaign"}}, status=404
        )
    return JsonResponse(
        {
            "id": campaign.pk,
            "name": campaign.name,
            "description": campaign.description,
            "organization": campaign.organization.name,
            "points_per_task": campaign.points_per_task,
            "tasks_total": campaign.tasks_total,
            "tasks_done": campaign.tasks_done,
            "state": campaign.state,
        }
    )


@require_GET
def worker_script(request: HttpRequest, kind: str) -> HttpResponse:
    """The entry script of a kernel Worker. A dedicated worker's CSP is the one of its script's
    response: here nothing may connect anywhere (fetch, XHR, WebSocket, EventSource are refused)
    and scripts load only from the platform (the harness modules and /blobs/<sha>.js)."""
    module = WORKER_MODULES.get(kind)
    if module is None:
        raise Http404
    scripts = " ".join(filter(None, ["'self'", _static_origin(), "'wasm-unsafe-eval'"]))
    response = HttpResponse(
        f'import "{static(module)}";\n', content_type="text/javascript; charset=utf-8"
    )
    response["Content-Security-Policy"] = _csp(
        default_src="'none'", script_src=scripts, connect_src="'none'", worker_src="'none'"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def embed_script(request: HttpRequest) -> HttpResponse:
    """GET /embed.js: the one-line tag's script. It inserts the consent iframe and nothing else;
    the page that includes it never runs kernels and cannot reach the platform's cookies."""
    response = render(
        request,
        "workers/embed.js",
        {"platform": settings.SITE_URL},
        content_type="text/javascript; charset=utf-8",
    )
    response["Cache-Control"] = "public, max-age=300"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _refused(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    response["Content-Security-Policy"] = "frame-ancestors 'none'; default-src 'none'"
    response["Cache-Control"] = "no-store"
    return response


def _referrer_origin(request: HttpRequest) -> str | None:
    referer = request.headers.get("Referer")
    if not referer:
        return None
    try:
        parts = urlsplit(referer)
        return normalize_origin(f"{parts.scheme}://{parts.netloc}")
    except (ValueError, ValidationError):
        return None


def _frame_site(request: HttpRequest, key: str) -> EmbedSite | None:
    """The active site of `key`, checked against the embedding page when the browser tells it
    (Referer: its origin under the default referrer policy). The frame-ancestors CSP is what
    enforces the registered origin; this check answers early when it can."""
    if not key or len(key) > 64:
        return None
    origin = _referrer_origin(request)
    if origin is not None and origin != _own_origin(request):
        return EmbedSite.objects.active_for(key, origin)
    return EmbedSite.objects.filter(key=key, active=True).select_related("organization").first()


def _own_origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}".lower()


@require_GET
@xframe_options_exempt  # framing is governed by the CSP frame-ancestors below
def embed_frame(request: HttpRequest) -> HttpResponse:
    """The iframe the embed script inserts: a consent banner, then the harness with the
    visitor's hands. Only the site's registered origin may frame it."""
    site = _frame_site(request, request.GET.get("site", ""))
    if site is None:
        return _refused(404, "Unknown or inactive embed site, or not registered for this page.")
    static_origin = _static_origin()
    own = " ".join(filter(None, ["'self'", static_origin]))
    config: dict[str, Any] = {
        "site": site.key,
        "siteName": site.name,
        "organization": site.organization.name,
        "workerUrls": _worker_urls(),
        "transport": request.GET.get("transport", "auto"),
        # GPU work is off in embeds unless the site owner opts in (data-gpu="on" on the tag).
        "gpu": request.GET.get("gpu") == "on",
    }
    response = render(request, "workers/embed_frame.html", {"config": config, "site": site})
    response["Content-Security-Policy"] = _csp(
        frame_ancestors=site.origin,
        default_src="'self'",
        script_src=f"{own} 'wasm-unsafe-eval'",
        style_src=own,
        connect_src="'self'",
        worker_src="'self'",
        img_src="'self' data:",
        base_uri="'none'",
        form_action="'none'",
    )
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "same-origin"
    identity.ensure_profile_cookie(request, response, framed=True)
    return response
