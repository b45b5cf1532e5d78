"""Leaderboards, contributor profiles and points, teams, and the owners' validation view.

Thin views: reads come from rewards.selectors, writes from rewards.services, organization
data only through accounts.tenancy (404 for outsiders, as everywhere).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from accounts.tenancy import Actor, get_for_actor, get_organization
from campaigns.models import Campaign
from rewards import selectors, services
from rewards.forms import TeamForm, TeamSettingsForm
from rewards.models import Team, TeamMembership, Total

PAGE_SIZE = 50
BOARDS = {
    "users": selectors.user_board,
    "teams": selectors.team_board,
    "sites": selectors.site_board,
}


@require_GET
def contributor_points(request: HttpRequest) -> JsonResponse:
    """The signed-in contributor's validated points so far (the contribute page polls it now
    and then; points are granted when results are validated, not when they are returned)."""
    if not request.user.is_authenticated:
        return JsonResponse({"points": None, "results": 0})
    total = (
        Total.objects.filter(scope=Total.Scope.USER, key=request.user.pk)
        .values("points", "results")
        .first()
    )
    response = JsonResponse(total or {"points": 0, "results": 0})
    response["Cache-Control"] = "no-store"
    return response


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, min(100_000, int(request.GET.get("page", "1"))))
    except ValueError:
        return 1


def _signed_in(request: HttpRequest) -> User | None:
    user = request.user
    return user if isinstance(user, User) and user.is_authenticated else None


# --- leaderboards -------------------------------------------------------------------------------


@require_GET
def leaderboard(request: HttpRequest, board: str = "users") -> HttpResponse:
    if board not in BOARDS:
        raise Http404("no such leaderboard")
    page = _page_number(request)
    rows, count = BOARDS[board](offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    pages = max(1, -(-count // PAGE_SIZE))
    me = _signed_in(request)
    mine: dict[str, Any] | None = None
    if me is not None and board == "users":
        total = Total.objects.filter(scope=Total.Scope.USER, key=me.pk).first()
        mine = {
            "points": total.points if total else 0,
            "rank": selectors.user_rank(me) if me.public_profile else None,
            "public": me.public_profile,
        }
    return render(
        request,
        "rewards/leaderboard.html",
        {
            "board": board,
            "rows": rows,
            "count": count,
            "page": page,
            "pages": pages,
            "mine": mine,
        },
    )


# --- profiles -----------------------------------------------------------------------------------


@require_GET
def user_profile(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(User, pk=user_id, is_active=True)
    me = _signed_in(request)
    own = me is not None and me.pk == user.pk
    if not user.public_profile and not own:
        raise Http404("not found")  # opted out: the same answer as for a missing profile
    data = selectors.profile(
        user, viewer=Actor.from_request(request), history_page=_page_number(request)
    )
    max_day = max((points for _, points in data.daily), default=0)
    return render(
        request,
        "rewards/profile.html",
        {"p": data, "own": own, "max_day": max_day},
    )


@login_required
@require_GET
def my_profile(request: HttpRequest) -> HttpResponse:
    return redirect("rewards:profile", user_id=request.user.pk)


# --- teams --------------------------------------------------------------------------------------


@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:80]
    page = Paginator(selectors.teams(query), PAGE_SIZE).get_page(_page_number(request))
    points = selectors.team_points([t.pk for t in page.object_list])
    me = _signed_in(request)
    current = TeamMembership.objects.select_related("team").filter(user=me).first() if me else None
    return render(
        request,
        "rewards/team_list.html",
        {
            "page": page,
            "teams": [(t, points.get(t.pk, 0)) for t in page.object_list],
            "query": query,
            "current": current,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def team_create(request: HttpRequest) -> HttpResponse:
    me = _signed_in(request)
    assert me is not None
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(
                founder=me,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                listed=form.cleaned_data["listed"],
            )
        except ValidationError as exc:
            form.add_error("name", exc)
        else:
            messages.success(request, f"You founded {team.name}.")
            return redirect(team)
    return render(request, "rewards/team_create.html", {"form": form})


@require_http_methods(["GET", "POST"])
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = get_object_or_404(Team, slug=slug)
    me = _signed_in(request)
    is_founder = me is not None and team.founder_id == me.pk
    settings_form = TeamSettingsForm(
        request.POST if request.method == "POST" else None,
        initial={"description": team.description, "listed": team.listed},
    )
    if request.method == "POST":
        if not is_founder:
            raise PermissionDenied("only the team's founder may change it")
        if settings_form.is_valid():
            services.team_update(
                team=team,
                description=settings_form.cleaned_data["description"],
                listed=settings_form.cleaned_data["listed"],
            )
            messages.success(request, "The team was saved.")
            return redirect(team)
    member = me is not None and TeamMembership.objects.filter(user=me, team=team).exists()
    return render(
        request,
        "rewards/team_detail.html",
        {
            "team": team,
            "stats": selectors.team_page(team),
            "member": member,
            "is_founder": is_founder,
            "settings_form": settings_form,
        },
    )


@login_required
@require_POST
def team_join(request: HttpRequest, slug: str) -> HttpResponse:
    team = get_object_or_404(Team, slug=slug)
    me = _signed_in(request)
    assert me is not None
    services.team_join(user=me, team=team)
    messages.success(request, f"You joined {team.name}. Points you earn from now on count for it.")
    return redirect(team)


@login_required
@require_POST
def team_leave(request: HttpRequest) -> HttpResponse:
    me = _signed_in(request)
    assert me is not None
    if services.team_leave(user=me):
        messages.success(request, "You left your team. The points you earned stay with it.")
    return redirect("rewards:teams")


# --- owners' validation view --------------------------------------------------------------------


def _org_page(
    request: HttpRequest, template: str, org: Any, actor: Actor, **context: Any
) -> HttpResponse:
    return render(
        request,
        template,
        {"org": org, "tab": "validation", "is_owner": actor.is_owner_of(org), **context},
    )


@login_required
@require_GET
def org_validation(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    org = get_organization(actor, slug)
    campaigns = Campaign.objects.for_actor(actor).filter(organization=org)
    return _org_page(
        request,
        "rewards/validation_org.html",
        org,
        actor,
        rows=selectors.organization_summaries(campaigns),
        sites=selectors.site_contributions(org.pk),
    )


@login_required
@require_GET
def campaign_validation(request: HttpRequest, slug: str, campaign_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    org = get_organization(actor, slug)
    campaign = get_for_actor(
        Campaign.objects.select_related("verifier"), actor, pk=campaign_id, organization=org
    )
    status = request.GET.get("status", "all")
    if status not in selectors.TASK_FILTERS:
        status = "all"
    page = Paginator(selectors.tasks(campaign, status), PAGE_SIZE).get_page(_page_number(request))
    return _org_page(
        request,
        "rewards/validation_campaign.html",
        org,
        actor,
        campaign=campaign,
        summary=selectors.campaign_summary(campaign),
        contributors=selectors.contributors(campaign),
        page=page,
        status=status,
        statuses=list(selectors.TASK_FILTERS),
    )
