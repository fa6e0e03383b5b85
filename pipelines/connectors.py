"""Read-only queries against a connector's PostgreSQL database (the `sql` step and the `sql_query` tool).

Three independent guards stand between a query and the data:

1. `check_read_query` (pipelines.sql_guard, sqlglot) accepts exactly one SELECT that calls no server-side
   file, process, settings, dynamic-SQL or cross-database function and reads no server-level catalog, before
   anything is sent to the database.
2. The connector's database role: before each query `run_read_query` checks, in the statement that sets the
   timeout, that the role is no superuser, may not create roles, replicate or bypass row security, and is no
   member of `pg_read_server_files`, `pg_write_server_files`, `pg_execute_server_program` or
   `pg_signal_backend`; otherwise the connector refuses to run (`connector_misconfigured`). Give each connector
   a role of its own that may only SELECT what it should read (see `manage.py seed_demo_database`).
3. `run_read_query` runs the query on a fresh psycopg connection (never Django's) inside a READ ONLY
   transaction, through a server-side cursor (`DECLARE ... CURSOR`, which PostgreSQL only accepts for a single
   SELECT or VALUES), under `statement_timeout`, so a write that the parser cannot see is refused by PostgreSQL.

The database's own error text never leaves this module: it can quote data (a failed cast quotes the value),
so errors become a code and a sentence per SQLSTATE class, and the full text goes to the log.
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
from psycopg import errors as pg_errors

from pipelines import sql_guard

if TYPE_CHECKING:
    from pipelines.models import Connector

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
"""Seconds to wait for the database to accept a connection."""

_CURSOR_NAME = "chatsite_read"

DANGEROUS_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program", "pg_signal_backend")
"""Predefined roles a connector's role may not be a member of, directly or through other roles."""

# One statement, sent before each query: set the transaction's limits and read what the role may do.
# set_config(..., true) is SET LOCAL (it ends with the transaction) and, unlike SET, takes bound parameters.
# standard_conforming_strings is forced on so that PostgreSQL reads string literals as the checker did.
_SETUP = """
SELECT set_config('statement_timeout', %(timeout)s, true),
       set_config('standard_conforming_strings', 'on', true),
       r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
       ARRAY(SELECT b.rolname::text FROM pg_catalog.pg_roles b
             WHERE b.rolname::text = ANY(%(dangerous)s) AND pg_catalog.pg_has_role(r.oid, b.oid, 'MEMBER')
             ORDER BY 1)
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""


class ConnectorError(Exception):
    """A read query could not be run.

    Attributes:
        code (str): what kind of failure, one of
            `connector_unavailable` (the environment variable is unset or empty, does not hold a PostgreSQL
            URL, or the database cannot be reached within CONNECT_TIMEOUT_SECONDS or dropped the connection),
            `connector_misconfigured` (the connector's database role may do more than read: see
            DANGEROUS_ROLES; the log says which privilege is wrong),
            `sql_rejected` (not exactly one read query, a refused function or catalog, or the database
            refused a write),
            `sql_timeout` (the query ran past its statement timeout),
            `sql_error` (any other database error; a sentence for its SQLSTATE, never the database's words).
        message (str): a sentence a person understands; safe to show (never holds the database URL, nor
            anything the database said).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _rejected(message: str) -> ConnectorError:
    return ConnectorError("sql_rejected", message)


def check_read_query(sql: str, *, timeout_ms: int | None = None) -> str:
    """Check that `sql` is exactly one read query that calls and reads nothing refused, without touching any
    database (pipelines.sql_guard: one SELECT, `WITH ... SELECT` and `WITH RECURSIVE` included; no write, no
    `SELECT ... INTO`, no `FOR UPDATE`, no server file, signal, settings, large-object, dynamic-SQL or
    cross-database function, no server-level catalog). Parameter placeholders (`%(name)s`) are allowed.

    Args:
        sql (str): the query text.
        timeout_ms (int | None): the statement timeout the query will run under (milliseconds): a
            `pg_sleep` of a literal number of seconds within it may pass. None: no pg_sleep.

    Returns:
        str: the query's text, stripped of surrounding whitespace (what `run_read_query` sends).

    Raises:
        ConnectorError: code `sql_rejected`, with a message saying why.
    """
    try:
        return sql_guard.check(sql, max_sleep_ms=timeout_ms)
    except sql_guard.QueryRefused as exc:
        raise _rejected(str(exc)) from None


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


# Safe sentences for the SQLSTATEs a read query meets most, then for their classes (the first two characters).
_SQLSTATE_SENTENCES = {
    "42703": "the query names a column that does not exist",
    "42P01": "the query names a table or view that does not exist",
    "42883": "the query calls a function or operator that does not exist for those argument types",
    "42601": "the query has a syntax error",
    "42501": "the connector's role may not read that",
    "42702": "a column name in the query is ambiguous; qualify it with its table",
    "42725": "a function call in the query is ambiguous; cast its arguments",
    "42803": "the query uses a column that is neither grouped nor aggregated",
    "42804": "a value in the query has the wrong type where it is used",
    "42846": "a value in the query cannot be cast to the type asked for",
    "42P18": "the type of a value could not be determined; add a cast, such as %(text)s::text",
    "22012": "the query divides by zero",
    "22P02": "a value could not be converted to the type asked for (invalid input for that type)",
    "22003": "a number is out of range for its type",
    "22007": "a date or time value is not valid",
    "22008": "a date or time value is out of range",
    "21000": "a subquery returned more than one row where one value was expected",
}
_CLASS_SENTENCES = {
    "22": "a value is not valid for its type",
    "42": "the query is not valid for this database (a name, a type or the syntax)",
    "21": "a subquery returned more rows than it may",
    "0A": "the query uses a feature PostgreSQL does not support there",
    "2F": "a function the query called failed",
    "38": "a function the query called failed",
    "39": "a function the query called failed",
    "P0": "a function the query called raised an error",
    "40": "the query conflicted with another transaction; try again",
    "53": "the database ran out of resources running the query",
    "54": "the query is too complex for the database",
}


def _database_error(
    connector: Connector, exc: psycopg.Error, *, timeout_ms: int, message_id: str | None
) -> ConnectorError:
    """Map a psycopg error raised while running a query to a ConnectorError that quotes nothing the database
    said (its text may hold data: a failed cast quotes the value); the full text is logged."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    # message_primary is the database's own sentence, without the DECLARE wrapper that str(exc) would quote.
    said = (diag.message_primary if diag is not None else None) or str(exc).strip()
    logger.warning(
        "Connector %s (message %s): the query failed with SQLSTATE %s: %s",
        connector.name, message_id or "-", sqlstate or "none", said[:1000],
    )  # fmt: skip
    if isinstance(exc, pg_errors.QueryCanceled):
        return ConnectorError(
            "sql_timeout",
            f"The query ran longer than the {timeout_ms} ms allowed on the connector '{connector.name}' and was "
            "stopped.",
        )
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return _rejected("The database refused the query because the connector is read-only (it tried to write).")
    if sqlstate.startswith(("08", "57P")) or (isinstance(exc, psycopg.OperationalError) and not sqlstate):
        return ConnectorError(
            "connector_unavailable", f"The database of the connector '{connector.name}' dropped the connection."
        )
    if not sqlstate and isinstance(exc, psycopg.ProgrammingError):
        # psycopg's own complaint about the query's placeholders, before anything reached the database.
        return ConnectorError(
            "sql_error",
            "The query's placeholders could not be bound: use %(text)s for the question and, when a query "
            "has parameters, write a literal % as %%.",
        )
    sentence = _SQLSTATE_SENTENCES.get(sqlstate) or _CLASS_SENTENCES.get(sqlstate[:2]) or "the query failed"
    suffix = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    return ConnectorError("sql_error", f"The database could not run the query: {sentence}{suffix}.")


def _role_problems(row: tuple | None) -> list[str]:
    """What is wrong with the connector's role, from the _SETUP row (empty: nothing)."""
    if row is None:
        return ["its role could not be found in pg_roles"]
    role, superuser, createrole, replication, bypassrls, memberships = row[2:]
    if superuser:
        return [f"its role {role!r} is a superuser"]  # which may do everything: the rest would only repeat it
    problems = [
        f"its role {role!r} {what}"
        for flag, what in [
            (createrole, "may create roles (CREATEROLE)"),
            (replication, "may replicate (REPLICATION)"),
            (bypassrls, "bypasses row-level security (BYPASSRLS)"),
        ]
        if flag
    ]
    problems += [f"its role {role!r} is a member of {granted}" for granted in memberships or []]
    return problems


def run_read_query(
    connector: Connector,
    sql: str,
    params: dict[str, Any] | None = None,
    *,
    timeout_ms: int | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Run one read query on the connector's database and return its rows, JSON-safe.

    The query is checked by `check_read_query` first, then run on a fresh connection (closed afterwards,
    whatever happens) in a READ ONLY transaction that is never committed, under `statement_timeout`, after
    the connector's role is checked (see DANGEROUS_ROLES). At most `max_rows` rows are returned.

    Args:
        connector (Connector): which database (its `url_env` names the environment variable holding the URL),
            `statement_timeout_ms` (milliseconds each statement may run; 0 is treated as 1, never as "no
            limit") and `max_rows` (most rows returned). It need not be saved.
        sql (str): one SELECT; it may use psycopg placeholders such as `%(text)s`.
        params (dict | None): values for the placeholders, bound by psycopg (never formatted into the text).
            When given, a literal `%` in the query must be written `%%` (psycopg's rule).
        timeout_ms (int | None): at most this many milliseconds; the smaller of it and the connector's
            `statement_timeout_ms` is used (None: the connector's).
        message_id (str | None): the reply this query serves, named in the log lines about it.

    Returns:
        dict: `{"columns": [str], "rows": [[value]], "rowCount": int, "truncated": bool}`, where `rowCount`
        counts the rows returned and `truncated` says whether the query had more than `max_rows` rows.

    Raises:
        ConnectorError: `sql_rejected` before anything runs (or if the database refuses a write),
            `connector_unavailable`, `connector_misconfigured`, `sql_timeout` or `sql_error`; see ConnectorError.
    """
    # What a query may ask for (a pg_sleep) is the connector's policy; what is left of a reply's time budget
    # only shortens the statement timeout, so a query that runs out of it is stopped (and reported) as such.
    statement = check_read_query(sql, timeout_ms=max(1, int(connector.statement_timeout_ms)))
    limit_ms = int(connector.statement_timeout_ms)
    if timeout_ms is not None:
        limit_ms = min(limit_ms, int(timeout_ms))
    # PostgreSQL reads 0 as "no limit", so never send it.
    limit_ms = max(1, limit_ms)
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
            setup.execute(_SETUP, {"timeout": str(limit_ms), "dangerous": list(DANGEROUS_ROLES)})
            problems = _role_problems(setup.fetchone())
        if problems:
            logger.error(
                "Connector %s refused to run: %s. Point %s at a role that may only CONNECT and SELECT.",
                connector.name, "; ".join(problems), connector.url_env,
            )  # fmt: skip
            raise ConnectorError(
                "connector_misconfigured",
                f"The connector '{connector.name}' is misconfigured, so it was not used: an administrator must fix it.",
            )
        # A server-side cursor fetches only the rows asked for (not the whole result), and DECLARE refuses
        # anything but one SELECT or VALUES, and any data-modifying WITH.
        with conn.cursor(name=_CURSOR_NAME) as cursor:
            cursor.execute(statement, params if params else None)
            rows = cursor.fetchmany(max_rows + 1)
            columns = [column.name for column in cursor.description or []]
    except psycopg.Error as exc:
        raise _database_error(connector, exc, timeout_ms=limit_ms, message_id=message_id) from exc
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
