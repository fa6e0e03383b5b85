"""The SQL a model wrote: taken out of its answer, checked against the connector's tables, given a LIMIT.

`check_generated_sql` refuses, with a sentence the model can act on in its repair round:
- what `pipelines.sql_guard` refuses (anything but exactly one SELECT, dangerous functions and catalogs,
  text sqlglot cannot parse);
- tables that are not in the semantic model (CTE names are the query's own);
- columns that none of the query's tables has (sqlglot's qualifier, PostgreSQL dialect, with the model's
  column names);
and adds `LIMIT <row limit>` to a query that has none at its outer level (the database is never asked for
more rows than the connector returns).
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from pipelines import sql_guard
from pipelines.text_to_sql.schema import SemanticModel

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```(?:sql|postgresql|postgres)?\s*\n?(.*?)(?:```|$)", re.IGNORECASE | re.DOTALL)
_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
# A statement that is not a read, at the start of a line: kept, so that the check says what it is.
_OTHER_START = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|MERGE|DROP|CREATE|ALTER|TRUNCATE|GRANT|REVOKE|COPY|CALL|DO|SET|VACUUM|LOCK)\b",
    re.IGNORECASE | re.MULTILINE,
)


class SqlRefused(Exception):
    """The generated SQL may not run; the message says why (safe to show the model and the user)."""


def extract_sql(answer: str) -> str:
    """The SQL in a model's answer: the first fenced block if there is one, else the text from the first
    SELECT or WITH (or, when there is none, from a line starting with another statement, such as DELETE, for
    the check to refuse by name); cut at the first semicolon that ends a statement. Empty when there is none."""
    text = answer.strip()
    fenced = _FENCE.search(text)
    if fenced and (_START.search(fenced.group(1)) or _OTHER_START.search(fenced.group(1))):
        text = fenced.group(1)
    found = [m for m in (_START.search(text), _OTHER_START.search(text)) if m is not None]
    if not found:
        return ""
    start = min(found, key=lambda m: m.start(1))
    text = text[start.start(1) :]
    # Keep one statement: the model may write prose or a second statement after a semicolon.
    try:
        tokens = sqlglot.tokenize(text, read="postgres")
    except SqlglotError:
        return text.strip().rstrip(";").strip()
    for token in tokens:
        if token.token_type == sqlglot.TokenType.SEMICOLON:
            return text[: token.start].strip()
    return text.strip().rstrip(";").strip()


def _mapping(model: SemanticModel) -> dict[str, dict[str, dict[str, str]]]:
    """sqlglot's schema shape: {schema: {table: {column: type}}}."""
    schemas: dict[str, dict[str, dict[str, str]]] = {}
    for table in model.tables:
        schemas.setdefault(table.schema, {})[table.name] = {c.name: c.type for c in table.columns}
    return schemas


def _has_limit(tree: exp.Expression) -> bool:
    while isinstance(tree, exp.Subquery):
        if tree.args.get("limit"):
            return True
        tree = tree.this
    return bool(tree.args.get("limit") or tree.args.get("fetch"))


def check_generated_sql(sql: str, model: SemanticModel, *, row_limit: int) -> str:
    """Check `sql` against the connector's tables and return the text to run (with a LIMIT when it had none).

    Args:
        sql: the statement the model wrote (see `extract_sql`).
        model: the connector's semantic model (every table, not only the ones shown to the model).
        row_limit: the connector's row limit, the LIMIT added to a query without one.

    Raises:
        SqlRefused: with a sentence saying what is wrong.
    """
    if not sql.strip():
        raise SqlRefused("The answer held no SQL query: write one SELECT statement.")
    try:
        sql = sql_guard.check(sql)
    except sql_guard.QueryRefused as exc:
        raise SqlRefused(str(exc)) from None
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except SqlglotError:
        raise SqlRefused("The query could not be read as PostgreSQL: check its syntax.") from None
    known = model.by_name()
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not name or name in ctes or isinstance(table.this, exp.Func):
            continue  # a CTE, or a function in FROM (generate_series)
        qualified = f"{table.db}.{name}".lower() if table.db else name
        if qualified not in known:
            listed = ", ".join(sorted(t.qualified for t in model.tables)[:30])
            raise SqlRefused(f"The query reads the table {qualified}, which does not exist. The tables are: {listed}.")
    try:
        qualify(
            tree.copy(),
            schema=_mapping(model),
            dialect="postgres",
            db="public",
            validate_qualify_columns=True,
            identify=False,
        )
    except OptimizeError as exc:
        raise SqlRefused(f"The query names a column that does not exist: {str(exc).rstrip('.')}.") from None
    except Exception:
        logger.info("text-to-SQL: sqlglot could not qualify a query; the database will check its columns")
    if not _has_limit(tree):
        sql = f"{sql}\nLIMIT {int(row_limit)}"
    return sql
