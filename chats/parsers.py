"""The API's JSON parser, with a size limit: DRF reads the body as a stream, past Django's own limit
(DATA_UPLOAD_MAX_MEMORY_SIZE only guards `request.body` and forms)."""

from django.conf import settings
from rest_framework.parsers import JSONParser

from chats.exceptions import RequestTooLarge


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
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE bytes (CHATSITE_MAX_REQUEST_BYTES).

    Raises:
        RequestTooLarge: 413 when the declared or actual length is over the limit.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"The request body is {declared} bytes; the most is {limit}.")
        return super().parse(_Limited(stream, limit), media_type, parser_context)
