"""Stop sequences for any provider: cut a streamed answer where one of them first appears.

OpenAI's `stop` parameter (up to 4 strings): the answer ends before the first occurrence of any of them, which
is not part of the answer, and the finish reason is `stop`. Providers differ in whether they honour it, so the
generate step applies it to the text deltas itself: text that could be the start of a stop sequence is held
back until the next delta shows whether it is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StopScanner:
    """Feed it text deltas in order; it returns what may be shown and says when a stop sequence was met.

    Attributes:
        stops (list[str]): the stop sequences (empty strings are ignored).
        stopped (bool): True once a stop sequence was found: the caller ends the answer there.
    """

    stops: list[str]
    stopped: bool = False
    _held: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.stops = [s for s in self.stops if s]

    def feed(self, text: str) -> str:
        """Take the next delta; return the text that can go out now ('' while it may begin a stop sequence).

        After a stop sequence is found, returns the text before it and ignores every later delta.
        """
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        first = min((i for i in (buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:first]
        # Hold back the longest tail of the buffer that is a prefix of some stop sequence.
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The text still held back when the answer ends without meeting a stop sequence."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
