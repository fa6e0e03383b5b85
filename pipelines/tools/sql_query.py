"""The `sql_query` tool: one read-only SELECT on a connector's database (see pipelines.connectors).

The tool reaches only the connectors granted to the user the reply runs for (the chat's owner), whoever
wrote the workflow that offers it: a shared workflow's tool is no wider than its user's grants.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from chats.models import User
from pipelines.access import usable_connectors
from pipelines.connectors import ConnectorError, run_read_query
from pipelines.tools import Tool, ToolContext, ToolError, register

MAX_QUERY_LENGTH = 20000
"""Most characters in one query."""


def _user(context: ToolContext) -> User | None:
    try:
        return User.objects.filter(id=context.user_id).first()
    except (ValueError, ValidationError):
        return None


def _sql_query(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Run `arguments["query"]` on the connector named `arguments["connector"]`, if the reply's user may use it
    (and, when the request narrowed the reply to some connectors, `context.connectors`, it is one of those).

    Returns:
        dict: run_read_query's `{"columns", "rows", "rowCount", "truncated"}`.

    Raises:
        ToolError: no connector of that name is usable by the user (missing, inactive and not granted read
            the same; the message lists only the user's own connectors), or the query was rejected, timed
            out, failed, or the database is unavailable or misconfigured (ConnectorError's message).
    """
    name = arguments["connector"]
    usable = usable_connectors(_user(context))
    if context.connectors is not None:
        # The request chose some of the user's connectors (seed 000's connector_ids): only those.
        usable = usable.filter(name__in=context.connectors)
    connector = usable.filter(name=name).first()
    if connector is None:
        available = sorted(set(usable.values_list("name", flat=True)))
        listed = ", ".join(available) if available else "none"
        raise ToolError(
            f"There is no active connector named {name!r} that you may use. Available connectors: {listed}."
        )
    try:
        return run_read_query(connector, arguments["query"], message_id=context.message_id)
    except ConnectorError as exc:
        raise ToolError(exc.message) from exc


register(
    Tool(
        name="sql_query",
        description=(
            "Run one read-only SQL query (PostgreSQL dialect: a single SELECT, or WITH ... SELECT) on a named "
            "database connector the user has been granted, and get back its columns and rows. Writes, DDL, "
            "multiple statements, server functions and server catalogs are refused; long queries are stopped, "
            "and only the first rows are returned (`truncated` says when there were more), so aggregate or use "
            "LIMIT where you can."
        ),
        parameters={
            "type": "object",
            "properties": {
                "connector": {
                    "type": "string",
                    "pattern": "^[-a-zA-Z0-9_]+$",
                    "maxLength": 100,
                    "description": "Name of the database connector to query, such as 'demo'.",
                },
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_QUERY_LENGTH,
                    "description": "One SELECT statement, for example 'SELECT region, SUM(amount) FROM sales "
                    "GROUP BY region'.",
                },
            },
            "required": ["connector", "query"],
            "additionalProperties": False,
        },
        function=_sql_query,
    )
)
