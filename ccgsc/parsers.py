"""The REST API's JSON parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES), apart from ccgsc.api:
DRF reads its settings when rest_framework.views is imported, which ccgsc.api does."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers

TOO_DEEP = "nested too deeply for the parser (at most a few hundred levels)"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering a body nested deeper than Python's recursion limit (the
    json module recurses once per level) with a 400 rather than a RecursionError's 500."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(f"JSON parse error - the body is {TOO_DEEP}.") from None
