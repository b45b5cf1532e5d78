"""Kernels: list, upload (multipart form or the module as the raw request body), detail."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, parsers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Organization
from accounts.tenancy import get_for_actor, get_organization
from campaigns.api.base import (
    RAW_KERNEL_PARSERS,
    ApiView,
    IdCursorPagination,
    Rejected,
    organization_for_write,
    request_media_type,
)
from campaigns.models import Kernel
from campaigns.services.base import limits
from campaigns.services.kernels import kernel_get_or_upload

#: The extension a kernel's blob URL carries (it sets the Content-Type the blob is served with).
BLOB_EXTENSIONS: dict[str, str] = {
    Kernel.Kind.WASM: "wasm",
    Kernel.Kind.JS: "js",
    Kernel.Kind.GPU: "wgsl",
}


#: A raw-body upload's kind when the query does not say, by Content-Type.
RAW_KINDS: dict[str, str] = {"text/javascript": Kernel.Kind.JS, "text/wgsl": Kernel.Kind.GPU}


class KernelOutput(serializers.ModelSerializer):
    organization: serializers.SlugRelatedField[Organization] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    download_url = serializers.SerializerMethodField(
        help_text="the module's bytes by hash (immutable, cacheable forever)"
    )

    class Meta:
        model = Kernel
        fields = [
            "id",
            "organization",
            "name",
            "description",
            "kind",
            "sha256",
            "size",
            "memory_max",
            "original_sha256",
            "imports",
            "manifest",
            "created_at",
            "download_url",
        ]

    def get_download_url(self, kernel: Kernel) -> str:
        ext = BLOB_EXTENSIONS.get(kernel.kind, "")
        path = reverse("blob", kwargs={"sha256": kernel.sha256, "ext": ext})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


#: An organization's slug, as the URLs use it (an empty value is no slug).
SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"
ORG_FILTER = OpenApiParameter(
    "organization",
    str,
    description="only this organization's rows (its slug)",
    pattern=SLUG_PATTERN,
)


class KernelListApi(ApiView, generics.GenericAPIView):
    not_found = "Organization not found."

    parser_classes = [parsers.MultiPartParser, parsers.FormParser, *RAW_KERNEL_PARSERS]
    pagination_class = IdCursorPagination
    serializer_class = KernelOutput

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(
            help_text="the .wasm module (or .js module, or .wgsl source for kind gpu)"
        )
        name = serializers.CharField(max_length=120, required=False, allow_blank=True)
        kind = serializers.ChoiceField(choices=Kernel.Kind.choices, default=Kernel.Kind.WASM)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        manifest = serializers.CharField(
            required=False,
            max_length=4096,
            help_text="kind gpu only: the manifest, a JSON object (docs/kernels.md, GPU kernels)",
        )
        organization = serializers.SlugField(
            required=False, help_text="required when the caller belongs to several"
        )

        class Meta:
            ref_name = "KernelUpload"

    def get_queryset(self) -> Any:
        kernels = Kernel.objects.for_actor(self.actor()).select_related("organization")
        slug = self.request.query_params.get("organization")
        if slug is not None:  # an empty slug names no organization: 404, as an unknown one
            kernels = kernels.filter(organization=get_organization(self.actor(), slug))
        return kernels

    @extend_schema(
        operation_id="kernels_list", parameters=[ORG_FILTER], responses=KernelOutput(many=True)
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="kernels_create",
        summary="Upload a kernel",
        description=(
            "Either a multipart form with `file` (and `name`, `kind`, `description`, "
            "`organization`), or the module itself as the body (Content-Type application/wasm, "
            "text/javascript or application/octet-stream) with `name`, `kind` and "
            "`organization` (and `manifest`) as query parameters. The module is validated (it "
            "must compile, export what the kernel contract needs and declare a memory maximum "
            "within the platform cap); the error says which check failed. A gpu kernel is WGSL "
            "source (kind `gpu`, Content-Type text/wgsl for a raw body) with its `manifest`, a "
            "JSON object checked against the GPU kernel contract; the WGSL is compiled (naga) "
            "where the server has a wgpu adapter, else only its entry point, workgroup size "
            "and bindings are checked. Kernels are content-addressed: "
            "uploading bytes the organization already has stores nothing and returns the "
            "existing kernel as it is, with the name it was first uploaded under (200 instead "
            "of 201)."
        ),
        parameters=[
            OpenApiParameter("name", str, description="raw body uploads only"),
            OpenApiParameter("kind", str, enum=Kernel.Kind.values, description="raw body only"),
            OpenApiParameter(
                "manifest", str, description="raw body uploads of kind gpu only (JSON text)"
            ),
            OpenApiParameter(
                "organization", str, description="raw body uploads only", pattern=SLUG_PATTERN
            ),
        ],
        request={
            "multipart/form-data": InputSerializer,
            "application/wasm": OpenApiTypes.BINARY,
            "application/octet-stream": OpenApiTypes.BINARY,
            "text/javascript": OpenApiTypes.BINARY,
            "text/wgsl": OpenApiTypes.BINARY,
        },
        responses={201: KernelOutput, 200: KernelOutput},
    )
    def post(self, request: Request) -> Response:
        actor = self.actor()
        media_type = request_media_type(request)
        if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = self.InputSerializer(data=request.data)
            form.is_valid(raise_exception=True)
            upload = form.validated_data["file"]
            if upload.size > limits()["KERNEL_MAX_BYTES"]:
                raise Rejected(
                    f"The kernel is {upload.size} bytes; the limit is "
                    f"{limits()['KERNEL_MAX_BYTES']} bytes."
                )
            data = upload.read()
            fields = dict(form.validated_data)
            name = fields.get("name") or upload.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        else:
            # Parsed (size-capped) by RawBodyParser; an empty body parses as {}.
            data = request.data if isinstance(request.data, bytes) else b""
            query = self.InputSerializer(
                data={k: v for k, v in request.query_params.items() if k != "file"},
                partial=True,
            )
            query.is_valid(raise_exception=True)
            fields = dict(query.validated_data)
            if "kind" not in request.query_params:
                fields["kind"] = RAW_KINDS.get(media_type, Kernel.Kind.WASM)
            name = fields.get("name") or "kernel"
        organization = organization_for_write(actor, fields.get("organization"))
        kernel, created = kernel_get_or_upload(
            organization=organization,
            name=name,
            data=data,
            kind=fields.get("kind") or Kernel.Kind.WASM,
            description=fields.get("description") or "",
            created_by=actor.user,
            manifest=fields.get("manifest"),
        )
        return Response(
            KernelOutput(kernel, context={"request": request}).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class KernelDetailApi(ApiView):
    not_found = "Kernel {kernel_id} not found."

    @extend_schema(operation_id="kernels_retrieve", responses=KernelOutput)
    def get(self, request: Request, kernel_id: int) -> Response:
        kernel = get_for_actor(
            Kernel.objects.select_related("organization"), self.actor(), pk=kernel_id
        )
        return Response(KernelOutput(kernel, context={"request": request}).data)
