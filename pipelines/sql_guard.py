"""What a connector query may be, decided from its text alone (sqlglot, PostgreSQL dialect), before it is run.

`check(sql, max_sleep_ms)` accepts exactly one read query and refuses, with a sentence saying why:

- anything but one SELECT (`WITH ... SELECT`, `UNION` of SELECTs and a parenthesised SELECT included): other
  statements, several statements, a data-modifying CTE, `SELECT ... INTO`, `FOR UPDATE` / `FOR SHARE`;
- calls to functions that reach outside the query's own rows (DENIED_FUNCTIONS): server files, processes and
  signals, large objects, settings, SQL given as text, other databases, locks and notifications, transaction
  ids, and `pg_sleep` beyond the statement timeout;
- reading server-level catalogs that show other databases, roles, sessions or settings (DENIED_RELATIONS);
  information_schema and the per-database catalogs stay readable;
- Unicode-escaped identifiers (`U&"..."`), which could spell a refused name in a way no list can match;
- text that sqlglot cannot parse.

Names are matched on the tokens, not only the tree: every name followed by `(` is a call, wherever it is
(select list, FROM, a subquery, a CTE, a cast), whether schema-qualified (`pg_catalog.pg_read_file`) or quoted
(`"pg_read_file"`), in any case. This is a second line of defence: the connector's database role (least
privilege, checked before each query by `pipelines.connectors`) and the READ ONLY transaction are the others.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

MAX_QUERY_CHARS = 100_000
"""Longest query text checked; longer text is refused unparsed."""

_FILES = "reads or lists the database server's files"
_SERVER = "signals or controls the database server"
_LARGE_OBJECTS = "reads or writes large objects stored on the server"
_SETTINGS = "reads or changes the server's settings"
_DYNAMIC = "runs SQL given as text, which cannot be checked"
_OTHER_DATABASES = "reaches other databases"
_LOCKS = "takes locks, sends notifications or assigns transaction ids"
_REPLICATION = "controls replication, backups or statistics"
_ACTIVITY = "shows other sessions"

DENIED_FUNCTIONS: dict[str, str] = {
    # name or fnmatch pattern (lower case) -> why it is refused
    "pg_read_file": _FILES,
    "pg_read_binary_file": _FILES,
    "pg_ls_*": _FILES,
    "pg_stat_file": _FILES,
    "pg_file_*": _FILES,
    "pg_logdir_ls": _FILES,
    "pg_current_logfile": _FILES,
    "pg_terminate_backend": _SERVER,
    "pg_cancel_backend": _SERVER,
    "pg_reload_conf": _SERVER,
    "pg_rotate_logfile*": _SERVER,
    "pg_promote": _SERVER,
    "pg_log_backend_memory_contexts": _SERVER,
    "lo_*": _LARGE_OBJECTS,
    "loread": _LARGE_OBJECTS,
    "lowrite": _LARGE_OBJECTS,
    "set_config": _SETTINGS,
    "current_setting": _SETTINGS,
    "pg_show_all_settings": _SETTINGS,
    "pg_show_all_file_settings": _SETTINGS,
    "pg_hba_file_rules": _SETTINGS,
    "pg_ident_file_mappings": _SETTINGS,
    "query_to_xml*": _DYNAMIC,
    "table_to_xml*": _DYNAMIC,
    "cursor_to_xml*": _DYNAMIC,
    "database_to_xml*": _DYNAMIC,
    "schema_to_xml*": _DYNAMIC,
    "ts_stat": _DYNAMIC,
    "ts_rewrite": _DYNAMIC,
    "dblink*": _OTHER_DATABASES,
    "postgres_fdw_*": _OTHER_DATABASES,
    "pg_database_size": _OTHER_DATABASES,
    "pg_advisory*": _LOCKS,
    "pg_try_advisory*": _LOCKS,
    "pg_notify": _LOCKS,
    "txid_*": _LOCKS,
    "pg_current_xact_id*": _LOCKS,
    "pg_logical_*": _REPLICATION,
    "pg_replication_*": _REPLICATION,
    "pg_create_*": _REPLICATION,
    "pg_drop_replication_slot": _REPLICATION,
    "pg_copy_*_replication_slot": _REPLICATION,
    "pg_switch_wal": _REPLICATION,
    "pg_backup_*": _REPLICATION,
    "pg_wal_replay_*": _REPLICATION,
    "pg_stat_reset*": _REPLICATION,
    "pg_stat_get_activity": _ACTIVITY,
    "pg_stat_get_backend_*": _ACTIVITY,
    "pg_stat_statements*": _ACTIVITY,
}
"""Functions a connector query may not call (pg_sleep and its kin are handled on their own)."""

SLEEP_FUNCTIONS = ("pg_sleep", "pg_sleep_for", "pg_sleep_until")

DENIED_RELATIONS: frozenset[str] = frozenset(
    {
        # Roles and their secrets.
        "pg_authid", "pg_shadow", "pg_roles", "pg_user", "pg_group", "pg_auth_members", "pg_db_role_setting",
        "pg_user_mapping", "pg_user_mappings",
        # Other databases and the cluster.
        "pg_database", "pg_tablespace", "pg_shdescription", "pg_shdepend", "pg_shseclabel", "pg_subscription",
        "pg_stat_database", "pg_stat_database_conflicts", "pg_prepared_xacts", "pg_locks", "pg_config",
        "pg_replication_slots", "pg_replication_origin", "pg_replication_origin_status", "pg_stat_replication",
        "pg_stat_wal_receiver", "pg_stat_subscription",
        # Other sessions.
        "pg_stat_activity", "pg_stat_ssl", "pg_stat_gssapi", "pg_stat_statements", "pg_stat_statements_info",
        "pg_backend_memory_contexts",
        # Settings and configuration files.
        "pg_settings", "pg_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings",
        # Large objects.
        "pg_largeobject", "pg_largeobject_metadata",
    }
)  # fmt: skip
"""Server-level catalogs and views that show other databases, roles, sessions or settings."""

# Tokens whose text is data, never a name.
_STRING_TOKENS = frozenset(
    {
        TokenType.STRING, TokenType.BYTE_STRING, TokenType.HEREDOC_STRING, TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING, TokenType.UNICODE_STRING, TokenType.BIT_STRING, TokenType.HEX_STRING,
        TokenType.NUMBER,
    }
)  # fmt: skip

_KIND_NAMES = {"truncatetable": "TRUNCATE", "command": "COMMAND"}


class QueryRefused(Exception):
    """The query may not run; the message says why, in a sentence a person understands."""


def _denied_reason(name: str) -> str | None:
    for pattern, reason in DENIED_FUNCTIONS.items():
        if fnmatchcase(name, pattern):
            return reason
    return None


def _check_sleep(tokens: list[Token], at: int, max_sleep_ms: int | None) -> None:
    """`pg_sleep(<literal seconds>)` within the timeout may pass; any other sleep is refused."""
    name = tokens[at].text.lower()
    limit = f"{max_sleep_ms} ms" if max_sleep_ms else "none here"
    refused = QueryRefused(
        f"The query calls {name}(); only pg_sleep with a literal number of seconds within the statement "
        f"timeout ({limit}) may run."
    )
    literal = tokens[at + 2 : at + 4]
    if name != "pg_sleep" or not max_sleep_ms or len(literal) != 2 or literal[1].token_type != TokenType.R_PAREN:
        raise refused
    if literal[0].token_type != TokenType.NUMBER:
        raise refused
    try:
        seconds = float(literal[0].text)
    except ValueError:
        raise refused from None
    if not 0 <= seconds * 1000 <= max_sleep_ms:
        raise refused


def _check_names(tokens: list[Token], max_sleep_ms: int | None) -> None:
    """Refuse calls to DENIED_FUNCTIONS, reads of DENIED_RELATIONS and Unicode-escaped identifiers."""
    for at, token in enumerate(tokens):
        if token.token_type in _STRING_TOKENS:
            continue
        name = token.text.lower()
        following = tokens[at + 1] if at + 1 < len(tokens) else None
        if (
            name == "u"
            and following is not None
            and following.token_type == TokenType.AMP
            and at + 2 < len(tokens)
            and tokens[at + 2].token_type == TokenType.IDENTIFIER
        ) or name == "uescape":
            raise QueryRefused('The query uses a Unicode-escaped name (U&"..."); write names plainly.')
        if name in DENIED_RELATIONS:
            raise QueryRefused(
                f"The query reads {name}, a server catalog that shows other databases, roles, sessions or "
                "settings; connector queries may not read it."
            )
        if following is None or following.token_type != TokenType.L_PAREN:
            continue
        if name in SLEEP_FUNCTIONS:
            _check_sleep(tokens, at, max_sleep_ms)
            continue
        reason = _denied_reason(name)
        if reason:
            raise QueryRefused(f"The query calls {name}(), which {reason}; connector queries may not call it.")


def _kind(statement: exp.Expression) -> str:
    if isinstance(statement, exp.Command):
        return str(statement.this).split()[0].upper() if str(statement.this).split() else "COMMAND"
    return _KIND_NAMES.get(statement.key, statement.key.upper())


def _is_read(statement: exp.Expression) -> bool:
    if isinstance(statement, exp.Subquery):
        return _is_read(statement.this)
    return isinstance(statement, (exp.Select, exp.SetOperation))


def _check_tree(statement: exp.Expression) -> None:
    """Refuse anything but a read query, anywhere in the tree (a CTE, a subquery)."""
    if not _is_read(statement):
        raise QueryRefused(
            f"Only read queries (SELECT, or WITH ... SELECT) may be run; this one is {_kind(statement)}."
        )
    for node in statement.walk():
        if isinstance(node, (exp.DML, exp.DDL, exp.Command, exp.Copy, exp.TruncateTable)):
            raise QueryRefused(
                f"Only read queries may be run; this one contains {_kind(node)}, which changes data or the schema."
            )
        if isinstance(node, exp.Into):
            raise QueryRefused("Only read queries may be run; this one contains INTO, which creates a table.")
        if isinstance(node, exp.Lock):
            raise QueryRefused(
                "Only read queries may be run; this one contains FOR UPDATE or FOR SHARE, which lock rows."
            )


def check(sql: str, *, max_sleep_ms: int | None = None) -> str:
    """Check that `sql` is one read query that calls and reads nothing refused (see the module docstring).

    Args:
        sql (str): the query text; psycopg placeholders such as `%(text)s` are allowed.
        max_sleep_ms (int | None): the statement timeout it will run under, in milliseconds: `pg_sleep(s)`
            with a literal `s` up to it may pass. None: no pg_sleep at all.

    Returns:
        str: the text to run: `sql` stripped of surrounding whitespace (never rewritten by sqlglot).

    Raises:
        QueryRefused: with a sentence saying what is wrong.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("The query is empty; write one SELECT statement.")
    if len(sql) > MAX_QUERY_CHARS:
        raise QueryRefused(f"The query is longer than {MAX_QUERY_CHARS} characters.")
    try:
        tokens = sqlglot.tokenize(sql, read="postgres")
        parsed = sqlglot.parse(sql, read="postgres")
    except RecursionError:
        raise QueryRefused("The query is too deeply nested to check.") from None
    except SqlglotError:
        raise QueryRefused(
            "The query could not be read as PostgreSQL: check its syntax (chatsite checks every query before "
            "it runs, and refuses what it cannot read)."
        ) from None
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if not statements:
        raise QueryRefused("The query holds only comments; write one SELECT statement.")
    if len(statements) > 1:
        raise QueryRefused(f"The query holds {len(statements)} statements; send exactly one SELECT statement.")
    _check_tree(statements[0])
    _check_names(tokens, max_sleep_ms)
    return sql.strip()
