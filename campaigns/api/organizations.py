"""Organizations, their API tokens and embed sites. Reads are for members; tokens and site
registration are for the organization's owners (members get 403, everyone else 404)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.models import ApiToken, EmbedSite, Membership, Organization
from accounts.tenancy import get_for_actor, get_organization, get_organization_as_owner
from campaigns.api.base import ApiView


class OrganizationOutput(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    role = serializers.ChoiceField(
        choices=["owner", "member", "token"],
        help_text="the caller's role: a member, an owner, or an API token of the organization",
    )
    created_at = serializers.DateTimeField()


def _org_data(org: Organization, role: str) -> dict[str, Any]:
    return {"slug": org.slug, "name": org.name, "role": role, "created_at": org.created_at}


def _roles(view: ApiView, orgs: list[Organization]) -> dict[int, str]:
    actor = view.actor()
    if actor.token is not None:
        return {org.pk: "token" for org in orgs}
    return dict(
        Membership.objects.filter(user=actor.user, organization__in=orgs).values_list(
            "organization_id", "role"
        )
    )


class OrganizationListApi(ApiView):
    @extend_schema(
        operation_id="organizations_list",
        summary="The caller's organizations",
        description="A user sees the organizations they belong to; a token sees its own.",
        responses=inline_serializer("OrganizationList", {"results": OrganizationOutput(many=True)}),
    )
    def get(self, request: Request) -> Response:
        orgs = list(self.actor().organizations().order_by("name", "pk"))
        roles = _roles(self, orgs)
        return Response({"results": [_org_data(o, roles.get(o.pk, "member")) for o in orgs]})


class OrganizationDetailApi(ApiView):
    not_found = "Organization {slug} not found."

    @extend_schema(operation_id="organizations_retrieve", responses=OrganizationOutput)
    def get(self, request: Request, slug: str) -> Response:
        org = get_organization(self.actor(), slug)
        return Response(_org_data(org, _roles(self, [org]).get(org.pk, "member")))


# --- API tokens -----------------------------------------------------------------------------


class TokenOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    hint = serializers.CharField(help_text="the token's first characters, to tell tokens apart")
    active = serializers.BooleanField(source="is_active")
    created_by = serializers.EmailField(source="created_by.email", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class TokenCreatedOutput(TokenOutput):
    token = serializers.CharField(help_text="the token itself: shown this once, never again")


class TokenListApi(ApiView):
    not_found = "Organization {slug} not found."

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=80)

        class Meta:
            ref_name = "TokenIssue"

    @extend_schema(
        operation_id="tokens_list",
        summary="The organization's API tokens (owners only)",
        responses=inline_serializer("TokenList", {"results": TokenOutput(many=True)}),
    )
    def get(self, request: Request, slug: str) -> Response:
        org = get_organization_as_owner(self.actor(), slug)
        tokens = selectors.organization_tokens(org)
        return Response({"results": TokenOutput(tokens, many=True).data})

    @extend_schema(
        operation_id="tokens_create",
        summary="Issue an API token (owners only, signed in: a token cannot issue tokens); the"
        " response shows it once",
        request=InputSerializer,
        responses={201: TokenCreatedOutput},
    )
    def post(self, request: Request, slug: str) -> Response:
        actor = self.actor()
        org = get_organization_as_owner(actor, slug)
        if actor.token is not None:
            # A leaked token must not be able to mint others that outlive its revocation.
            raise PermissionDenied(
                "An API token cannot issue tokens: an owner issues them signed in (the"
                " organization's API tokens page, or this endpoint with a session)."
            )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, raw = services.token_issue(
            organization=org, name=data.validated_data["name"], created_by=actor.user
        )
        body = dict(TokenOutput(token).data)
        body["token"] = raw
        return Response(body, status=status.HTTP_201_CREATED)


class TokenRevokeApi(ApiView):
    not_found = "Organization {slug} or its token {token_id} not found."

    @extend_schema(
        operation_id="tokens_revoke",
        summary="Revoke an API token at once (owners only)",
        request=None,
        responses=TokenOutput,
    )
    def post(self, request: Request, slug: str, token_id: int) -> Response:
        actor = self.actor()
        org = get_organization_as_owner(actor, slug)
        token = get_for_actor(ApiToken.objects.filter(organization=org), actor, pk=token_id)
        token = services.token_revoke(token=token)
        return Response(TokenOutput(token).data)


# --- embed sites ----------------------------------------------------------------------------


class SiteOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    origin = serializers.CharField()
    key = serializers.CharField(help_text="the public key in the site's script tag")
    active = serializers.BooleanField()
    script_tag = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_script_tag(self, site: EmbedSite) -> str:
        return site.script_tag(self.context["base_url"])


def _base_url(request: Request) -> str:
    return settings.SITE_URL or request.build_absolute_uri("/").rstrip("/")


class SiteListApi(ApiView):
    not_found = "Organization {slug} not found."

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=80)
        origin = serializers.CharField(
            max_length=270, help_text="the site's origin, e.g. https://example.com"
        )

        class Meta:
            ref_name = "SiteRegister"

    @extend_schema(
        operation_id="sites_list",
        summary="The organization's embed sites",
        responses=inline_serializer("SiteList", {"results": SiteOutput(many=True)}),
    )
    def get(self, request: Request, slug: str) -> Response:
        org = get_organization(self.actor(), slug)
        sites = selectors.organization_sites(org)
        context = {"base_url": _base_url(request)}
        return Response({"results": SiteOutput(sites, many=True, context=context).data})

    @extend_schema(
        operation_id="sites_create",
        summary="Register a site that may embed the contributor script (owners only)",
        request=InputSerializer,
        responses={201: SiteOutput},
    )
    def post(self, request: Request, slug: str) -> Response:
        org = get_organization_as_owner(self.actor(), slug)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        site = services.site_register(organization=org, **data.validated_data)
        context = {"base_url": _base_url(request)}
        return Response(SiteOutput(site, context=context).data, status=status.HTTP_201_CREATED)
