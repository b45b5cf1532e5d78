"""The OpenAPI schema: token authentication, the one error shape on every operation, and the
public status endpoint (a plain Django view of workers/, described here by hand)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.generators import SchemaGenerator

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error of the API has this shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "not_found"},
                "message": {"type": "string", "example": "Not found."},
                "fields": {
                    "type": "object",
                    "description": "per-field messages, for invalid input",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}

ERROR_RESPONSES = {
    "400": "Invalid input, or refused by the platform; the message says why.",
    "401": "No credentials, or an invalid or revoked API token.",
    "403": "Signed in but not allowed (for example a member where owners only may act).",
    "404": "No such object, or it belongs to another organization.",
}

STATUS_PATH: dict[str, Any] = {
    "get": {
        "operationId": "status_retrieve",
        "summary": "Public health and throughput",
        "description": "Connected workers, tasks done, tasks per second over the last "
        "minute, campaigns running. No authentication; cached for a second.",
        "tags": ["status"],
        "security": [],
        "responses": {
            "200": {
                "description": "",
                "content": {
                    "application/json": {"schema": {"type": "object", "additionalProperties": True}}
                },
            }
        },
    }
}


class OrganizationTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_auth.OrganizationTokenAuthentication"
    name = "organizationToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An organization's API token: `Authorization: Bearer ccgsc_...`",
        }


class ApiSchemaGenerator(SchemaGenerator):
    def get_schema(self, request: Any = None, public: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = super().get_schema(request, public)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        ref = {"$ref": "#/components/schemas/Error"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code, response in responses.items():
                    # An operation's own error responses (a 409) get the one error shape.
                    if code.startswith(("4", "5")) and "content" not in response:
                        response["content"] = {"application/json": {"schema": ref}}
                for code, text in ERROR_RESPONSES.items():
                    responses.setdefault(
                        code,
                        {"description": text, "content": {"application/json": {"schema": ref}}},
                    )
        schema["paths"]["/api/v1/status"] = STATUS_PATH
        schema["paths"] = dict(sorted(schema["paths"].items()))
        return schema
