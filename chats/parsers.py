"""The API's JSON parser, with a size limit and a nesting limit: DRF reads the body as a stream, past Django's
own limit (DATA_UPLOAD_MAX_MEMORY_SIZE only guards `request.body` and forms), and Python's JSON decoder
recurses once per level, so 100,000 `[` would end in a RecursionError (a 500) instead of a 400.

`loads_json` is the one JSON reader for request data: the parser below and JSON given inside form fields
(a document's `metadata`) use it.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from chats.exceptions import RequestTooLarge

# Deepest nesting of arrays and objects a request may send. chatsite's deepest body (a workflow's steps with
# metadata filters) nests 6 levels; the limit leaves room, and keeps whatever walks the data (serializers,
# encoders, templates) far from Python's recursion limit.
MAX_JSON_DEPTH = 64


class JSONTooDeep(ValueError):
    """The JSON nests arrays and objects deeper than `MAX_JSON_DEPTH`."""


def _strict_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative, so that checking a deep value cannot itself recurse too deep.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads_json(text: str | bytes) -> Any:
    """Parse JSON text from a request (RFC 8259; NaN and Infinity refused), nesting at most `MAX_JSON_DEPTH`.

    Raises:
        JSONTooDeep: arrays and objects nest deeper than `MAX_JSON_DEPTH`.
        ValueError: the text is not JSON (a `json.JSONDecodeError`), or not UTF-8 (a `UnicodeDecodeError`).
    """
    try:
        value = json.loads(text, parse_constant=_strict_constant)
    except RecursionError:
        # The C decoder gives up cleanly at Python's recursion limit (about 1,000 levels).
        raise JSONTooDeep(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.") from None
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise JSONTooDeep(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.")
    return value


class _Limited:
    """A stream that refuses to give more than `limit` bytes."""

    def __init__(self, stream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.read_so_far = 0

    def read(self, size: int = -1) -> bytes:
        wanted = self.limit + 1 - self.read_so_far if size is None or size < 0 else size
        chunk = self.stream.read(min(wanted, self.limit + 1 - self.read_so_far))
        self.read_so_far += len(chunk)
        if self.read_so_far > self.limit:
            raise RequestTooLarge(f"The request body is over {self.limit} bytes.")
        return chunk


class LimitedJSONParser(JSONParser):
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE bytes (CHATSITE_MAX_REQUEST_BYTES), nesting at most
    `MAX_JSON_DEPTH` levels.

    Raises:
        RequestTooLarge: 413 when the declared or actual length is over the limit.
        ParseError: 400 `malformed_json` when the body is not JSON, not in the request's charset, or too deep.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        parser_context = parser_context or {}
        request = parser_context.get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"The request body is {declared} bytes; the most is {limit}.")
        raw = _Limited(stream, limit).read()
        try:
            return loads_json(raw.decode(parser_context.get("encoding", settings.DEFAULT_CHARSET)))
        except JSONTooDeep as exc:
            raise ParseError(str(exc)) from None
        except (ValueError, LookupError) as exc:
            # DRF's own wording (JSONParser), with the decoder's position.
            raise ParseError(f"JSON parse error - {exc}") from None
