"""Read-only queries against a connector's PostgreSQL database (the `sql` step and the `sql_query` tool).

Two independent guards keep a query from changing data:

1. `check_read_query` parses the text with sqlparse and accepts exactly one SELECT (or WITH ... SELECT) that
   names no data-changing keyword, before anything is sent to the database.
2. `run_read_query` runs it on a fresh psycopg connection (never Django's) inside a READ ONLY transaction,
   through a server-side cursor (`DECLARE ... CURSOR`, which PostgreSQL only accepts for a single SELECT or
   VALUES), under `statement_timeout`, so a write the parser cannot see (a function that deletes, say) is
   refused by PostgreSQL itself.

Neither guard stops a SELECT from calling functions with side effects outside the transaction (such as
`pg_terminate_backend` or `dblink`): point connectors at a role that may only SELECT what it should read.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import math
import os
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import sqlparse
from psycopg import errors as pg_errors
from sqlparse import tokens as T
from sqlparse.exceptions import SQLParseError

if TYPE_CHECKING:
    from pipelines.models import Connector

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
"""Seconds to wait for the database to accept a connection."""

_CURSOR_NAME = "chatsite_read"


class ConnectorError(Exception):
    """A read query could not be run.

    Attributes:
        code (str): what kind of failure, one of
            `connector_unavailable` (the environment variable is unset or empty, does not hold a PostgreSQL
            URL, or the database cannot be reached within CONNECT_TIMEOUT_SECONDS),
            `sql_rejected` (not exactly one read query, or the database refused a write),
            `sql_timeout` (the query ran past the connector's `statement_timeout_ms`),
            `sql_error` (any other database error; the message carries the database's own words).
        message (str): a sentence a person understands; safe to show (never holds the database URL).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _rejected(message: str) -> ConnectorError:
    return ConnectorError("sql_rejected", message)


def _has_code(statement: sqlparse.sql.Statement) -> bool:
    """Whether a parsed statement holds anything besides whitespace, comments and semicolons."""
    for token in statement.flatten():
        if token.is_whitespace or token.ttype in T.Comment or token.match(T.Punctuation, ";"):
            continue
        return True
    return False


def check_read_query(sql: str) -> str:
    """Check that `sql` is exactly one read query, without touching any database.

    Accepts a single SELECT, including `WITH ... SELECT` and `WITH RECURSIVE`. Rejects empty text, several
    statements, anything else (INSERT, UPDATE, DELETE, MERGE, DDL, COPY, SET, EXPLAIN, VALUES...), and a
    SELECT that names a data-changing keyword anywhere (a `WITH x AS (DELETE ...)`, `SELECT ... INTO`,
    `FOR UPDATE`). Parameter placeholders (`%(name)s`) are allowed.

    Args:
        sql (str): the query text.

    Returns:
        str: the one statement's text, stripped of surrounding whitespace (what `run_read_query` sends).

    Raises:
        ConnectorError: code `sql_rejected`, with a message saying why.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise _rejected("The query is empty; write one SELECT statement.")
    try:
        statements = [statement for statement in sqlparse.parse(sql) if _has_code(statement)]
    except SQLParseError as exc:
        # sqlparse caps nesting depth and token count so that hostile input cannot hang the parser.
        raise _rejected(f"The query is too long or too deeply nested to check ({exc}).") from exc
    if not statements:
        raise _rejected("The query holds only comments; write one SELECT statement.")
    if len(statements) > 1:
        raise _rejected(f"The query holds {len(statements)} statements; send exactly one SELECT statement.")
    statement = statements[0]
    kind = statement.get_type()
    if kind != "SELECT":
        if kind == "UNKNOWN":
            first = statement.token_first(skip_ws=True, skip_cm=True)
            kind = first.value.split()[0][:40].upper() if first is not None and first.value.split() else kind
        raise _rejected(f"Only read queries (SELECT, or WITH ... SELECT) may be run; this one is {kind}.")
    for token in statement.flatten():
        # get_type() looks only at the main statement: a write can still hide in a CTE, and INTO or
        # FOR UPDATE make a SELECT write (a new table) or lock rows.
        writes = (token.ttype in T.Keyword.DML and token.normalized != "SELECT") or token.ttype in T.Keyword.DDL
        if writes or (token.ttype in T.Keyword and token.normalized == "INTO"):
            raise _rejected(
                f"Only read queries may be run; this one contains {token.normalized}, which changes data or locks rows."
            )
    return str(statement).strip()


def _database_url(connector: Connector) -> str:
    """The connector's PostgreSQL URL, read from its environment variable now (it is never stored).

    Raises:
        ConnectorError: `connector_unavailable` if the variable is unset or empty or holds no PostgreSQL URL.
    """
    url = os.environ.get(connector.url_env, "").strip() if connector.url_env else ""
    if not url:
        raise ConnectorError(
            "connector_unavailable",
            f"The connector '{connector.name}' is not configured: the environment variable "
            f"{connector.url_env or '(none)'} is not set.",
        )
    if urlsplit(url).scheme not in ("postgres", "postgresql"):
        # Never echo the value: it may hold a password.
        raise ConnectorError(
            "connector_unavailable",
            f"The connector '{connector.name}' is misconfigured: the environment variable {connector.url_env} "
            "does not hold a PostgreSQL URL (postgresql://user@host:port/database).",
        )
    return url


def json_safe(value: Any) -> Any:
    """`value` as something `json.dumps` writes and a model can read.

    Decimal becomes float (str for NaN and infinities), date/datetime/time become ISO 8601 strings, UUID
    becomes str, bytes become hex, non-finite floats become str, lists and dicts are converted item by item,
    and anything else that is not JSON-native goes through `str`.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    return str(value)


def _database_error(connector: Connector, exc: psycopg.Error) -> ConnectorError:
    """Map a psycopg error raised while running a query to a ConnectorError."""
    if isinstance(exc, pg_errors.QueryCanceled):
        return ConnectorError(
            "sql_timeout",
            f"The query ran longer than the {connector.statement_timeout_ms} ms allowed by the connector "
            f"'{connector.name}' and was stopped.",
        )
    diag = getattr(exc, "diag", None)
    # message_primary is the database's own sentence, without the DECLARE wrapper that str(exc) would quote.
    said = (diag.message_primary if diag is not None else None) or str(exc).strip().splitlines()[0]
    if diag is not None and diag.message_hint:
        said = f"{said} (hint: {diag.message_hint})"
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return _rejected(f"The database refused the query because the connector is read-only: {said}.")
    if isinstance(exc, psycopg.ProgrammingError) and "placeholder" in said:
        said = f"{said} (when parameters are passed, write a literal % as %%)"
    return ConnectorError("sql_error", f"The database could not run the query: {said}.")


def run_read_query(
    connector: Connector, sql: str, params: dict[str, Any] | None = None, *, timeout_ms: int | None = None
) -> dict[str, Any]:
    """Run one read query on the connector's database and return its rows, JSON-safe.

    The query is checked by `check_read_query` first, then run on a fresh connection (closed afterwards,
    whatever happens) in a READ ONLY transaction that is never committed, with `statement_timeout` set to the
    connector's `statement_timeout_ms`. At most `max_rows` rows are returned.

    Args:
        connector (Connector): which database (its `url_env` names the environment variable holding the URL),
            `statement_timeout_ms` (milliseconds each statement may run; 0 is treated as 1, never as "no
            limit") and `max_rows` (most rows returned). It need not be saved.
        sql (str): one SELECT; it may use psycopg placeholders such as `%(text)s`.
        params (dict | None): values for the placeholders, bound by psycopg (never formatted into the text).
            When given, a literal `%` in the query must be written `%%` (psycopg's rule).
        timeout_ms (int | None): milliseconds the query may run, when less than the connector's own
            `statement_timeout_ms` (a reply's time left); None: the connector's.

    Returns:
        dict: `{"columns": [str], "rows": [[value]], "rowCount": int, "truncated": bool}`, where `rowCount`
        counts the rows returned and `truncated` says whether the query had more than `max_rows` rows.

    Raises:
        ConnectorError: `sql_rejected` before anything runs (or if the database refuses a write),
            `connector_unavailable`, `sql_timeout` or `sql_error`; see ConnectorError.
    """
    statement = check_read_query(sql)
    url = _database_url(connector)
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="chatsite-connector")
    except psycopg.Error as exc:
        # The details (host, port, role) go to the log, not to the model or the user.
        logger.warning("Connector %s: cannot connect: %s", connector.name, exc)
        raise ConnectorError(
            "connector_unavailable",
            f"The database of the connector '{connector.name}' cannot be reached right now.",
        ) from exc
    max_rows = connector.max_rows
    try:
        # Every transaction psycopg opens on this connection starts with BEGIN READ ONLY.
        conn.read_only = True
        with conn.cursor() as setup:
            # set_config(..., true) is SET LOCAL: it ends with the transaction, and unlike SET it takes a
            # bound parameter. PostgreSQL reads 0 as "no limit", so never send it.
            limit_ms = max(1, int(min(connector.statement_timeout_ms, timeout_ms or connector.statement_timeout_ms)))
            setup.execute("SELECT set_config('statement_timeout', %s, true)", (str(limit_ms),))
        # A server-side cursor fetches only the rows asked for (not the whole result), and DECLARE refuses
        # anything but one SELECT or VALUES, and any data-modifying WITH.
        with conn.cursor(name=_CURSOR_NAME) as cursor:
            cursor.execute(statement, params if params else None)
            rows = cursor.fetchmany(max_rows + 1)
            columns = [column.name for column in cursor.description or []]
    except psycopg.Error as exc:
        raise _database_error(connector, exc) from exc
    finally:
        # Closing discards the (read-only) transaction: nothing is ever committed.
        conn.close()
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return {
        "columns": columns,
        "rows": [[json_safe(value) for value in row] for row in rows],
        "rowCount": len(rows),
        "truncated": truncated,
    }
