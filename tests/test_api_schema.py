"""The REST API behaves as its OpenAPI schema says: schemathesis generates requests for every
operation of the schema drf-spectacular generates (valid ones and, through its negative
checks, invalid ones) and checks each response's status code, content type, headers and body
against the schema, over WSGI against the test database, authenticated with an API token.

Bounded: a fixed number of examples per operation, derandomized (the same requests every run),
no shrinking, no example database written to disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from accounts import services as account_services
from campaigns import services
from campaigns.api.schema import ApiSchemaGenerator
from tests.conftest import kernel_bytes

EXAMPLES_PER_OPERATION = 25


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: Any, value: Any) -> bytes:
    items = value if isinstance(value, list) else [value]
    return b"".join(msgpack.packb(item) for item in items)


schema = schemathesis.openapi.from_dict(ApiSchemaGenerator().get_schema(request=None, public=True))
schema.app = get_wsgi_application()


@schema.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """`cursor` is an opaque token the API gives out in a page's `next` URL; a made-up one is
    refused (400, tested in tests/test_api.py), which no schema can tell from a real one. The
    examples page from the start."""
    if query:
        query.pop("cursor", None)
    return query


# Requests a schema cannot tell from valid ones, so a refusal of schema-valid data is right:
# an uploaded kernel's bytes must be a WebAssembly module that compiles (JSON Schema says only
# "binary"), and a new campaign's kernel id must name a kernel of the organization (the schema
# says "integer"; the reference is checked against the database). Every other check still runs
# on these operations, and the refusals themselves are tested in tests/test_api.py. A run's
# `input` and `input_b64` exclude each other and `input_b64` must decode, which the generated
# schema does not say either (tests/test_runs.py tests those refusals).
CONTENT_THE_SCHEMA_CANNOT_DESCRIBE = {
    "POST /api/v1/kernels": [positive_data_acceptance],
    "POST /api/v1/campaigns": [positive_data_acceptance],
    "POST /api/v1/run": [positive_data_acceptance],
}


@pytest.fixture
def api_headers(people, settings) -> Iterator[dict[str, str]]:
    """An owner's organization with a kernel and a campaign, and its API token."""
    settings.API_RATE = ""  # the examples come faster than any caller's rate limit
    # As Django's test client does: the WSGI handler would close the test database's
    # connection at the end of every request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    kernel = services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))
    services.campaign_create(organization=people.org, name="echo", kernel=kernel)
    _, raw = account_services.token_issue(
        organization=people.org, name="schemathesis", created_by=people.owner
    )
    try:
        yield {"Authorization": f"Bearer {raw}"}
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db
def test_the_api_behaves_as_its_schema_says(case: Any, api_headers: dict[str, str]) -> None:
    case.call_and_validate(
        headers=api_headers,
        excluded_checks=CONTENT_THE_SCHEMA_CANNOT_DESCRIBE.get(case.operation.label, []),
    )
