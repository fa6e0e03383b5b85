"""The `sql_query` tool: one read-only SELECT on a connector's database (see pipelines.connectors)."""

from __future__ import annotations

from typing import Any

from pipelines.connectors import ConnectorError, run_read_query
from pipelines.models import Connector
from pipelines.tools import Tool, ToolContext, ToolError, register

MAX_QUERY_LENGTH = 20000
"""Most characters in one query."""


def _sql_query(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Run `arguments["query"]` on the active connector named `arguments["connector"]`.

    Returns:
        dict: run_read_query's `{"columns", "rows", "rowCount", "truncated"}`.

    Raises:
        ToolError: the connector is unknown or inactive (the message lists the active ones), or the query
            was rejected, timed out, failed, or the database is unavailable (ConnectorError's message).
    """
    name = arguments["connector"]
    connector = Connector.objects.filter(name=name, is_active=True).first()
    if connector is None:
        available = list(Connector.objects.filter(is_active=True).values_list("name", flat=True))
        listed = ", ".join(available) if available else "none"
        raise ToolError(f"There is no active connector named {name!r}. Available connectors: {listed}.")
    try:
        return run_read_query(connector, arguments["query"])
    except ConnectorError as exc:
        raise ToolError(exc.message) from exc


register(
    Tool(
        name="sql_query",
        description=(
            "Run one read-only SQL query (PostgreSQL dialect: a single SELECT, or WITH ... SELECT) on a named "
            "database connector and get back its columns and rows. Writes, DDL and multiple statements are "
            "refused; long queries are stopped, and only the first rows are returned (`truncated` says when "
            "there were more), so aggregate or use LIMIT where you can."
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
