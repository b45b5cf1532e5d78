"""What every REST endpoint shares: the actor, the organization a write goes to, the error
conversions into the one error shape, pagination, and the streaming body parsers.

Tenant scoping happens only through accounts.tenancy (`Actor`, `for_actor`, `get_for_actor`,
`get_organization`): a view never filters by organization by hand.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any, cast

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signals import got_request_exception
from django.http import Http404
from rest_framework import exceptions, pagination, parsers, permissions, serializers
from rest_framework.request import Request, is_form_media_type
from rest_framework.views import APIView

from accounts.models import ApiToken, Organization
from accounts.tenancy import Actor, get_organization
from campaigns.inputs import (
    InputError,
    TaskSpec,
    args_problem,
    env_problem,
    iter_task_file,
)
from campaigns.services.base import ServiceError

log = logging.getLogger(__name__)


class Rejected(exceptions.APIException):
    """A request the platform refuses for a reason the caller can fix (HTTP 400)."""

    status_code = 400
    default_code = "rejected"
    default_detail = "The request was rejected."


class StateConflict(exceptions.APIException):
    """A well-formed request the object's current state refuses (HTTP 409)."""

    status_code = 409
    default_code = "conflict"
    default_detail = "The object's state does not allow this."


class ServerError(exceptions.APIException):
    status_code = 500
    default_code = "server_error"
    default_detail = "The server failed to handle the request; the error was logged."


class TooLarge(exceptions.APIException):
    """A request body over DATA_UPLOAD_MAX_MEMORY_SIZE (UPLOAD_MAX_BYTES) (HTTP 413)."""

    status_code = 413
    default_code = "too_large"
    default_detail = "The request body is too large."


def too_large() -> TooLarge:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return TooLarge(
        f"The request body is larger than the {limit} bytes this server takes "
        "(UPLOAD_MAX_BYTES); send less, or split the tasks over several requests."
    )


class InvalidTasks(Rejected):
    """A task stream or task file with a bad line or object (HTTP 400)."""

    default_code = "invalid_tasks"


class BodyRequest(Request):
    """DRF's Request, reading a body sent with `Transfer-Encoding: chunked` too. DRF takes a
    missing Content-Length for "no body" and hands the parsers nothing; a chunked body (what
    streaming clients send when they do not know the size up front) has no Content-Length.
    The ASGI server has already de-chunked it, so the Django request reads it like any other:
    task streams and raw kernels as they come. A chunked form (multipart or urlencoded) is
    spooled first, up to DATA_UPLOAD_MAX_MEMORY_SIZE (over it: RequestDataTooBig, a 413), and
    its size set as its Content-Length: Django's form parsers read nothing without one."""

    def _load_stream(self) -> None:
        super()._load_stream()  # type: ignore[misc]
        meta = self._request.META
        if (
            self._stream is None
            and not meta.get("CONTENT_LENGTH")
            and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            if is_form_media_type(self.content_type or ""):
                self._stream = _spooled(self._request)
                meta["CONTENT_LENGTH"] = str(self._stream.seek(0, io.SEEK_END))
                self._stream.seek(0)
            else:
                self._stream = self._request


def _spooled(source: Any) -> IO[bytes]:
    """The rest of `source` in a temporary file (in memory while small), at most
    DATA_UPLOAD_MAX_MEMORY_SIZE bytes."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    # Returned open: the request reads it, and it goes when the request does.
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)  # noqa: SIM115
    size = 0
    while chunk := source.read(64 * 1024):
        size += len(chunk)
        if limit is not None and size > limit:
            body.close()
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        body.write(chunk)
    return cast(IO[bytes], body)


class IsMemberOrToken(permissions.BasePermission):
    """A signed-in user or an organization's API token. A token acts for its organization even
    when the person who created it is gone (request.user is then anonymous)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return isinstance(request.auth, ApiToken) or bool(request.user.is_authenticated)


# Base of every endpoint: turns the services' refusals into the one error shape. ServiceError
# and Django's ValidationError carry messages written for the person asking; InputError says
# which line of a task stream is bad. All become 400 with that message. (A comment, not a
# docstring: the schema generator would show a docstring as every operation's description.)
class ApiView(APIView):
    permission_classes = [IsMemberOrToken]
    #: The 404 message, formatted with the URL's arguments.
    not_found = "Not found."

    def initialize_request(self, request: Any, *args: Any, **kwargs: Any) -> Request:
        return BodyRequest(
            request,
            parsers=self.get_parsers(),
            authenticators=self.get_authenticators(),
            negotiator=self.get_content_negotiator(),
            parser_context=self.get_parser_context(request),
        )

    def handle_exception(self, exc: Exception) -> Any:
        # The project's handler reads the code from the exception class (`default_code`), so
        # Django's own exceptions are turned into DRF's here to get "not_found" and so on.
        if isinstance(exc, Http404):
            # The same sentence whether the row is missing or another organization's.
            exc = exceptions.NotFound(self.not_found.format(**self.kwargs))
        elif isinstance(exc, DjangoPermissionDenied):
            exc = exceptions.PermissionDenied(str(exc) or None)
        elif isinstance(exc, RequestDataTooBig):
            exc = too_large()
        elif isinstance(exc, InputError):
            exc = InvalidTasks(f"The task stream was rejected: {exc}")
        elif isinstance(exc, ServiceError):
            exc = Rejected(str(exc))
        elif isinstance(exc, DjangoValidationError):
            exc = Rejected(" ".join(exc.messages))
        elif not isinstance(exc, exceptions.APIException):
            # A bug: logged with its traceback (and sent to Django's error signal, so error
            # reporting sees it), answered in the error shape rather than an HTML page.
            log.exception("unexpected error in %s", type(self).__name__)
            got_request_exception.send(sender=type(self), request=self.request._request)
            exc = ServerError()
        return super().handle_exception(exc)

    def actor(self) -> Actor:
        return Actor.from_request(self.request)


def organization_for_write(actor: Actor, slug: str | None) -> Organization:
    """The organization a new kernel or campaign goes to: the one named by `slug` (404 when the
    actor is not in it), or, when no slug is given, the actor's only organization."""
    if slug:
        return get_organization(actor, slug)
    organizations = list(actor.organizations().order_by("pk")[:2])
    if not organizations:
        raise exceptions.NotFound("You are not a member of any organization.")
    if len(organizations) > 1:
        raise exceptions.ValidationError(
            {
                "organization": [
                    "You belong to several organizations: name one by its slug "
                    "(GET /api/v1/organizations lists them)."
                ]
            }
        )
    return organizations[0]


class InvalidCursor(Rejected):
    default_code = "invalid_cursor"
    default_detail = (
        "The cursor is not one this API gave out: follow a page's `next` or `previous` URL as "
        "it is, or leave `cursor` out for the first page."
    )


class IdCursorPagination(pagination.CursorPagination):
    """Stable pages however many rows: `?cursor=` from the previous page's `next`."""

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-id"

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters

    def get_page_size(self, request: Request) -> int | None:
        # DRF ignores a malformed `limit` (and uses the default); the schema says it is an
        # integer, so anything else is refused as bad input.
        values = request.query_params.getlist(self.page_size_query_param or "limit")
        top = self.max_page_size or 1000
        if values and (
            len(values) > 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= top
        ):
            raise exceptions.ValidationError({"limit": [f"An integer from 1 to {top}, once."]})
        return super().get_page_size(request)

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        # DRF answers a malformed cursor with 404 "Invalid cursor"; it is bad input (400). A
        # well-formed cursor whose position is no integer (both orderings are integer
        # columns) would fail in the database instead: refused here the same way.
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            raise InvalidCursor() from None
        position = cursor.position if cursor is not None else None
        if position is not None and not re.fullmatch(r"[0-9]{1,18}", str(position)):
            raise InvalidCursor()
        return cursor


class SeqCursorPagination(IdCursorPagination):
    ordering = "seq"


# --- streaming task bodies -------------------------------------------------------------------


def _max_input() -> int:
    return int(settings.CCGSC["TASK_INPUT_MAX_BYTES"])


class TaskStreamParser(parsers.BaseParser):
    """Parses nothing up front: returns a lazy iterator of TaskSpec read from the request body
    as the service consumes it, so a body of any size is parsed in constant memory."""

    fmt = "jsonl"

    # The stubs say parsers return a mapping; DRF hands back whatever parse() returns.
    def parse(  # type: ignore[override]
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Iterator[TaskSpec]:
        if stream is None:
            return iter(())
        return iter_task_file(stream, fmt=self.fmt, max_input=_max_input())


class NdjsonParser(TaskStreamParser):
    media_type = "application/x-ndjson"


class JsonlParser(TaskStreamParser):
    media_type = "application/jsonl"


class MsgpackParser(TaskStreamParser):
    media_type = "application/msgpack"
    fmt = "msgpack"


class XMsgpackParser(MsgpackParser):
    media_type = "application/x-msgpack"


class TextLinesParser(TaskStreamParser):
    """Plain text: one task per line, the line (without its ending) as the input."""

    media_type = "text/plain"
    fmt = "text"


TASK_STREAM_PARSERS = [NdjsonParser, JsonlParser, MsgpackParser, XMsgpackParser, TextLinesParser]


class RawBodyParser(parsers.BaseParser):
    """A kernel module as the whole request body (application/wasm, text/javascript, text/wgsl
    or application/octet-stream), read up to the kernel size cap."""

    media_type = "application/wasm"

    # Returns the bytes themselves (see TaskStreamParser.parse on the stubs).
    def parse(  # type: ignore[override]
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if stream is None:
            return b""
        cap = int(settings.CCGSC["KERNEL_MAX_BYTES"])
        data = stream.read(cap + 1)
        if len(data) > cap:
            raise exceptions.ValidationError(
                {"file": [f"The kernel is larger than the {cap}-byte limit."]}
            )
        return bytes(data)


class OctetStreamParser(RawBodyParser):
    media_type = "application/octet-stream"


class JavaScriptParser(RawBodyParser):
    media_type = "text/javascript"


class WgslParser(RawBodyParser):
    media_type = "text/wgsl"


RAW_KERNEL_PARSERS = [RawBodyParser, OctetStreamParser, JavaScriptParser, WgslParser]


def request_media_type(request: Request) -> str:
    return (request.content_type or "").split(";")[0].strip().lower()


class _FormText(str):
    """A field's text from a multipart or urlencoded form, which holds JSON. In a JSON body the
    value is already decoded, and a string there is just a string (of the wrong type)."""


def _form_value(field: serializers.Field, dictionary: Any) -> Any:
    if hasattr(dictionary, "getlist"):  # a form: the field holds JSON text
        text = dictionary.get(field.field_name)
        return _FormText(text) if text else serializers.empty
    return serializers.Field.get_value(field, dictionary)


def _decode_form_json(field: serializers.Field, data: Any, example: str) -> Any:
    if not isinstance(data, _FormText):
        return data
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        deep = " (nested too deeply)" if isinstance(exc, RecursionError) else ""
        raise serializers.ValidationError(
            f"{field.field_name} is not valid JSON{deep}: in a form, give it JSON-encoded, "
            f"like {example}."
        ) from None


class _Text(serializers.CharField):
    """A string, and only a string: 5 is not "5" here, as in task files and streams."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class _CheckedField(serializers.Field):
    """A JSON value (in forms, JSON-encoded text) checked by the same rule as the services and
    task files use (campaigns.inputs); errors of single items ({1: [...]}) are worded
    "args[1]: ..." by ccgsc.api."""

    default_name = ""
    example = ""
    shape: type = object

    def problem(self, value: Any, name: str) -> str | None:
        raise NotImplementedError

    def get_value(self, dictionary: Any) -> Any:
        return _form_value(self, dictionary)

    def to_internal_value(self, data: Any) -> Any:
        name = self.field_name or self.default_name
        data = _decode_form_json(self, data, self.example)
        if not isinstance(data, self.shape):
            raise serializers.ValidationError(f"{self.problem(data, name)}.")
        value = super().to_internal_value(data)
        problem = self.problem(value, name)
        if problem is not None:
            raise serializers.ValidationError(f"{problem}.")
        return value


class StringListField(_CheckedField, serializers.ListField):
    """A list of strings; in forms a JSON-encoded list."""

    child = _Text(allow_blank=True, trim_whitespace=False)
    default_name, example, shape = "args", '["-n", "5"]', list

    def problem(self, value: Any, name: str) -> str | None:
        return args_problem(value, name)


class StringMapField(_CheckedField, serializers.DictField):
    """A map of environment variable names to strings; in forms a JSON-encoded object."""

    child = _Text(allow_blank=True, trim_whitespace=False)
    default_name, example, shape = "env", '{"MODE": "fast"}', dict

    def problem(self, value: Any, name: str) -> str | None:
        return env_problem(value, name)
