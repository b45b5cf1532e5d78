"""The REST API's JSON parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES), apart from ccgsc.api:
DRF reads its settings when rest_framework.views is imported, which ccgsc.api does."""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, parsers

TOO_DEEP = "nested too deeply for the parser (at most a few hundred levels)"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering a body nested deeper than Python's recursion limit (the
    json module recurses once per level) with a 400 rather than a RecursionError's 500, and
    reading at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes: DRF reads the request stream itself,
    which Django bounds only when Content-Length is declared (not a chunked body). Over the
    limit it raises Django's RequestDataTooBig, which the API answers with 413."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and stream is not None:
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise RequestDataTooBig(
                    "Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE."
                )
            stream = io.BytesIO(data)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(f"JSON parse error - the body is {TOO_DEEP}.") from None
