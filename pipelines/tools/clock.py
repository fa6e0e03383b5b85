"""The `current_datetime` tool: the date and time now, in a time zone the model names."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from pipelines.tools import Tool, ToolContext, ToolError, register


def now_in(timezone: str = "UTC") -> dict[str, str]:
    """The current date and time in `timezone`.

    Args:
        timezone (str): an IANA time zone name such as "Europe/Paris" or "UTC".

    Returns:
        dict: `{"iso": "2025-01-31T14:05:09+01:00", "date": "2025-01-31", "time": "14:05:09",
        "weekday": "Friday", "timezone": "Europe/Paris"}` (seconds precision, ISO 8601).

    Raises:
        ToolError: if `timezone` is not a known IANA time zone name.
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        # ValueError: names that are not even well formed (empty, absolute paths, "..").
        raise ToolError(
            f"Unknown time zone {timezone!r}; use an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'."
        ) from exc
    now = datetime.datetime.now(zone)
    return {
        "iso": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.time().isoformat(timespec="seconds"),
        # strftime("%A") follows the process locale; the model expects English names.
        "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")[now.weekday()],
        "timezone": zone.key,
    }


def _current_datetime(arguments: dict[str, Any], context: ToolContext) -> dict[str, str]:
    return now_in(arguments.get("timezone") or "UTC")


register(
    Tool(
        name="current_datetime",
        description=(
            "Get the current date, time and weekday. Give an IANA time zone name (such as 'Europe/Paris') to "
            "get the local time there; the default is UTC."
        ),
        parameters={
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "maxLength": 64,
                    "description": "IANA time zone name, such as 'UTC', 'Europe/Paris' or 'America/New_York'.",
                }
            },
            "required": [],
            "additionalProperties": False,
        },
        function=_current_datetime,
    )
)
