"""Read-only connectors (pipelines.connectors) against a real PostgreSQL sample database.

The sample database is created once per session on the server DATABASE_URL points at (as `postgres`) and
dropped at the end, with a role of its own that may only CONNECT and SELECT (connectors refuse superusers).
Connectors here are unsaved model instances: `run_read_query` needs no Django database.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from pipelines import connectors
from pipelines.connectors import ConnectorError, check_read_query, run_read_query
from pipelines.models import Connector

SAMPLE_ENV = "CHATSITE_TEST_SAMPLE_DB_URL"

SALES = [
    # (product, region, amount, sold_on)
    ("widget", "north", "12.50", "2024-01-15"),
    ("widget", "south", "7.25", "2024-01-16"),
    ("gadget", "north", "99.99", "2024-02-01"),
    ("gizmo", "east", "3.00", "2024-02-10"),
    ("gadget", "west", "45.10", "2024-03-05"),
]


def _server_url(database: str, role: str | None = None) -> str:
    """A URL for `database` on the server the test run uses (DATABASE_URL's host and port), as postgres (or
    as `role`, without a password: the test server trusts local connections)."""
    parts = urlsplit(os.environ.get("DATABASE_URL", ""))
    netloc = parts.netloc if parts.scheme in ("postgres", "postgresql") else "postgres@127.0.0.1:5432"
    if role is not None:
        netloc = f"{role}@{netloc.rpartition('@')[2]}"
    return urlunsplit(("postgresql", netloc, f"/{database}", "", ""))


def create_reader(admin: psycopg.Connection, role: str, database: str, *extra: str) -> None:
    """Create `role` as a connector's role should be: LOGIN, nothing else, CONNECT on `database` (`extra`:
    more attributes, such as SUPERUSER, for the tests of misconfigured roles)."""
    attributes = " ".join(["LOGIN", "NOINHERIT", *extra])
    admin.execute(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(role)))
    admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))


@contextlib.contextmanager
def sample_database() -> Iterator[str]:
    """Create a database holding `sales` (and a function that deletes from it) and a role that may only read
    it; yield the URL of the database as that role; drop both."""
    name = f"chatsite_sample_{uuid.uuid4().hex[:12]}"
    reader = f"{name}_reader"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        create_reader(admin, reader, name)
    try:
        with psycopg.connect(_server_url(name), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE sales (id serial PRIMARY KEY, product text NOT NULL, region text NOT NULL, "
                "amount numeric(10, 2) NOT NULL, sold_on date NOT NULL)"
            )
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO sales (product, region, amount, sold_on) VALUES (%s, %s, %s, %s)", SALES
                )
            # A write no SQL parser can see from the call site: the read-only transaction must refuse it.
            conn.execute(
                "CREATE FUNCTION delete_all_sales() RETURNS bigint LANGUAGE sql VOLATILE AS "
                "$$ DELETE FROM sales; SELECT 0::bigint $$"
            )
            conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(reader)))
            # DELETE too, so that only the READ ONLY transaction stands between delete_all_sales() and the rows.
            conn.execute(sql.SQL("GRANT SELECT, DELETE ON sales TO {}").format(sql.Identifier(reader)))
        yield _server_url(name, reader)
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(reader)))


@pytest.fixture(scope="session")
def sample_url() -> Iterator[str]:
    with sample_database() as url:
        yield url


@pytest.fixture
def connector(sample_url, monkeypatch) -> Connector:
    monkeypatch.setenv(SAMPLE_ENV, sample_url)
    return Connector(name="sample", url_env=SAMPLE_ENV, statement_timeout_ms=2000, max_rows=100)


def sales_rows(url: str) -> list[tuple]:
    """Every row of `sales`, read directly, to prove a refused query changed nothing."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, product, region, amount, sold_on FROM sales ORDER BY id").fetchall()


def connector_error(connector: Connector, query: str, params: dict | None = None) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        run_read_query(connector, query, params)
    return caught.value


def test_select_returns_column_names_and_json_safe_rows(connector):
    result = run_read_query(connector, "SELECT id, product, region, amount, sold_on FROM sales ORDER BY id")

    assert result["columns"] == ["id", "product", "region", "amount", "sold_on"]
    assert result["rows"][0] == [1, "widget", "north", 12.5, "2024-01-15"]
    assert result["rows"][2][3] == 99.99
    assert result["rowCount"] == 5
    assert result["truncated"] is False
    assert json.loads(json.dumps(result)) == result


def test_aggregates_and_cte_queries_are_read(connector):
    result = run_read_query(
        connector,
        "WITH totals AS (SELECT product, SUM(amount) AS revenue FROM sales GROUP BY product) "
        "SELECT product, revenue FROM totals ORDER BY revenue DESC;  -- biggest first",
    )

    assert result["columns"] == ["product", "revenue"]
    assert result["rows"] == [["gadget", 145.09], ["widget", 19.75], ["gizmo", 3.0]]


def test_values_of_other_types_become_json_safe(connector):
    result = run_read_query(
        connector,
        "SELECT '6f1c3d5e-7d1a-4a7e-9a55-3d7b6f0e2c11'::uuid AS id, '\\xdeadbeef'::bytea AS raw, "
        "'2024-05-06 07:08:09+00'::timestamptz AT TIME ZONE 'UTC' AS at, '13:45:00'::time AS clock, "
        "'NaN'::numeric AS nan, 'Infinity'::float8 AS inf, '{\"a\": [1, 2.5]}'::jsonb AS doc, "
        "ARRAY[1.5, 2]::numeric[] AS list, interval '1 day 2 hours' AS span, NULL AS nothing, true AS yes",
    )

    assert dict(zip(result["columns"], result["rows"][0], strict=True)) == {
        "id": "6f1c3d5e-7d1a-4a7e-9a55-3d7b6f0e2c11",
        "raw": "deadbeef",
        "at": "2024-05-06T07:08:09",
        "clock": "13:45:00",
        "nan": "NaN",
        "inf": "inf",
        "doc": {"a": [1, 2.5]},
        "list": [1.5, 2.0],
        "span": "1 day, 2:00:00",
        "nothing": None,
        "yes": True,
    }
    # Strict JSON: no NaN or Infinity tokens.
    json.dumps(result, allow_nan=False)


def test_max_rows_truncates_the_result_and_says_so(connector):
    connector.max_rows = 2
    result = run_read_query(connector, "SELECT id FROM sales ORDER BY id")

    assert result["rows"] == [[1], [2]]
    assert result["rowCount"] == 2
    assert result["truncated"] is True


def test_exactly_max_rows_is_not_truncated(connector):
    connector.max_rows = 5
    result = run_read_query(connector, "SELECT id FROM sales ORDER BY id")

    assert result["rowCount"] == 5
    assert result["truncated"] is False


# A query that would run for minutes and that the parser lets through (it calls nothing refused).
RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000000000) SELECT count(*) FROM r"


def test_query_running_past_the_statement_timeout_is_stopped(connector):
    connector.statement_timeout_ms = 200
    started = time.monotonic()
    error = connector_error(connector, RUNAWAY)

    assert error.code == "sql_timeout"
    assert "200 ms" in error.message
    assert time.monotonic() - started < 3


def test_a_shorter_timeout_given_by_the_caller_wins_and_a_longer_one_does_not(connector):
    started = time.monotonic()
    with pytest.raises(ConnectorError) as caught:
        run_read_query(connector, RUNAWAY, timeout_ms=150)
    assert caught.value.code == "sql_timeout" and "150 ms" in caught.value.message
    assert time.monotonic() - started < 1.5

    connector.statement_timeout_ms = 100
    with pytest.raises(ConnectorError) as caught:
        run_read_query(connector, RUNAWAY, timeout_ms=60000)
    assert caught.value.code == "sql_timeout" and "100 ms" in caught.value.message


def test_a_short_literal_sleep_within_the_timeout_runs_and_a_longer_one_is_refused(connector):
    assert run_read_query(connector, "SELECT 1 AS n, pg_sleep(0.05)")["rows"][0][0] == 1
    for query in ("SELECT pg_sleep(3)", "SELECT pg_sleep(1000)", "SELECT pg_sleep(n) FROM (SELECT 1 AS n) s"):
        error = connector_error(connector, query)
        assert error.code == "sql_rejected" and "2000 ms" in error.message, query
    # The caller's smaller limit is the one checked.
    with pytest.raises(ConnectorError, match="100 ms"):
        run_read_query(connector, "SELECT pg_sleep(0.5)", timeout_ms=100)


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO sales (product, region, amount, sold_on) VALUES ('x', 'y', 1, '2024-01-01')",
        "UPDATE sales SET amount = 0",
        "DELETE FROM sales",
        "DROP TABLE sales",
        "TRUNCATE sales",
        "CREATE TABLE other (id int)",
        "ALTER TABLE sales ADD COLUMN note text",
        "COPY sales TO STDOUT",
        "SET statement_timeout = 0",
        "SELECT 1; DELETE FROM sales",
        "SELECT id FROM sales; SELECT id FROM sales",
        "",
        "   \n ",
        "-- just a comment",
        "SELECT * INTO sales_copy FROM sales",
        "SELECT * FROM sales FOR UPDATE",
        "WITH gone AS (DELETE FROM sales RETURNING *) SELECT count(*) FROM gone",
        "WITH changed AS (UPDATE sales SET amount = 0 RETURNING id) SELECT id FROM changed",
    ],
)
def test_anything_but_one_select_is_rejected_and_data_is_unchanged(connector, sample_url, query):
    before = sales_rows(sample_url)
    error = connector_error(connector, query)

    assert error.code == "sql_rejected"
    assert error.message
    assert sales_rows(sample_url) == before


def test_queries_are_checked_before_connecting(connector, monkeypatch):
    # With no database configured, a write is still reported as rejected: nothing was attempted.
    monkeypatch.delenv(SAMPLE_ENV)
    assert connector_error(connector, "DELETE FROM sales").code == "sql_rejected"


def test_rejection_messages_say_what_is_wrong():
    with pytest.raises(ConnectorError, match="2 statements"):
        check_read_query("SELECT 1; SELECT 2")
    with pytest.raises(ConnectorError, match="empty"):
        check_read_query("  ")
    with pytest.raises(ConnectorError, match="this one is INSERT"):
        check_read_query("INSERT INTO sales DEFAULT VALUES")
    with pytest.raises(ConnectorError, match="this one is COPY"):
        check_read_query("COPY sales TO STDOUT")
    with pytest.raises(ConnectorError, match="contains DELETE"):
        check_read_query("WITH gone AS (DELETE FROM sales RETURNING *) SELECT * FROM gone")


def test_check_read_query_accepts_select_forms():
    assert check_read_query("  SELECT 1  ") == "SELECT 1"
    assert check_read_query("select 1; -- done") == "select 1; -- done"
    check_read_query("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r")
    check_read_query("SELECT product FROM sales WHERE product = %(text)s AND note LIKE 'a;b'")
    # What an analyst writes passes the parser: its refusals are aimed, not broad.
    for query in [
        "SELECT date_trunc('month', sold_on) AS m, SUM(amount) FROM sales GROUP BY 1 ORDER BY 1 NULLS LAST",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM sales",
        "SELECT region, string_agg(DISTINCT product, ', ' ORDER BY product) FROM sales GROUP BY region",
        "SELECT * FROM sales WHERE sold_on > now() - INTERVAL '1 month' ORDER BY amount DESC FETCH FIRST 5 ROWS ONLY",
        "SELECT DISTINCT ON (region) region, rank() OVER (PARTITION BY region ORDER BY amount DESC) FROM sales",
        "SELECT s.*, g FROM sales s CROSS JOIN LATERAL generate_series(1, 2) g WHERE product ~* 'te'",
        "SELECT count(*) FILTER (WHERE amount > 5), amount::numeric(10, 2) FROM sales GROUP BY 2",
        "SELECT product FROM sales EXCEPT SELECT product FROM sales WHERE region = 'North'",
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'",
        "SELECT relname FROM pg_class WHERE relkind = 'r'",
        "SELECT 'pg_read_file(1) from pg_shadow' AS just_text",
    ]:
        check_read_query(query)


def test_text_the_parser_cannot_read_is_refused_with_a_sentence():
    for query in ("SELECT FROM WHERE )(", "SELECT " + "(" * 200 + "1" + ")" * 200, "SELECT `x`"):
        with pytest.raises(ConnectorError) as caught:
            check_read_query(query)
        assert caught.value.code == "sql_rejected"
        assert "could not be read as PostgreSQL" in caught.value.message or "too deeply nested" in caught.value.message


def test_read_only_transaction_refuses_a_write_hidden_in_a_function(connector, sample_url):
    # The role may DELETE (see sample_database): only the READ ONLY transaction refuses it.
    before = sales_rows(sample_url)
    error = connector_error(connector, "SELECT delete_all_sales()")

    assert error.code == "sql_rejected"
    assert "read-only" in error.message
    assert sales_rows(sample_url) == before


@pytest.mark.parametrize(
    "query",
    [
        "WITH gone AS (DELETE FROM sales RETURNING *) SELECT count(*) FROM gone",
        "DELETE FROM sales",
        "SELECT 1; DELETE FROM sales",
    ],
)
def test_database_refuses_writes_even_if_the_parser_missed_them(connector, sample_url, monkeypatch, query):
    # Defence in depth: switch the parser off and the database still changes nothing.
    monkeypatch.setattr(connectors, "check_read_query", lambda text, **limits: text)
    before = sales_rows(sample_url)
    error = connector_error(connector, query)

    assert error.code in ("sql_rejected", "sql_error")
    assert sales_rows(sample_url) == before


def test_unset_environment_variable_is_connector_unavailable(connector, monkeypatch):
    monkeypatch.delenv(SAMPLE_ENV)
    error = connector_error(connector, "SELECT 1")

    assert error.code == "connector_unavailable"
    assert SAMPLE_ENV in error.message


def test_empty_environment_variable_is_connector_unavailable(connector, monkeypatch):
    monkeypatch.setenv(SAMPLE_ENV, "  ")
    assert connector_error(connector, "SELECT 1").code == "connector_unavailable"


def test_non_postgres_url_is_connector_unavailable_without_echoing_it(connector, monkeypatch):
    monkeypatch.setenv(SAMPLE_ENV, "mysql://admin:s3cret@db.example/sales")
    error = connector_error(connector, "SELECT 1")

    assert error.code == "connector_unavailable"
    assert "s3cret" not in error.message
    assert "PostgreSQL URL" in error.message


def test_unreachable_database_is_connector_unavailable(connector, monkeypatch):
    # Port 1 on localhost refuses at once; nothing listens there.
    monkeypatch.setenv(SAMPLE_ENV, "postgresql://postgres:s3cret@127.0.0.1:1/sales")
    error = connector_error(connector, "SELECT 1")

    assert error.code == "connector_unavailable"
    assert "s3cret" not in error.message


@pytest.mark.parametrize(
    ("query", "sentence", "sqlstate"),
    [
        ("SELECT product FROM sales WHERE", "syntax", None),
        ("SELECT * FROM no_such_table", "a table or view that does not exist", "42P01"),
        ("SELECT no_such_column FROM sales", "a column that does not exist", "42703"),
        ("SELECT no_such_function(1)", "a function or operator that does not exist", "42883"),
        ("SELECT CAST(product AS int) FROM sales", "could not be converted", "22P02"),
        ("SELECT 1 / 0", "divides by zero", "22012"),
        ("SELECT (SELECT id FROM sales)", "more than one row", "21000"),
    ],
)
def test_database_errors_are_a_sentence_for_their_sqlstate_never_the_database_text(
    connector, caplog, query, sentence, sqlstate
):
    error = connector_error(connector, query)

    assert error.code in ("sql_error", "sql_rejected")
    assert sentence in error.message
    if sqlstate:
        assert f"SQLSTATE {sqlstate}" in error.message
    # The database's words (which may quote data, as a failed cast quotes the value) stay in the log.
    for said in ('"widget"', "no_such_table", "no_such_column", 'does not exist"', "DECLARE"):
        assert said not in error.message
    if sqlstate:
        assert any("SQLSTATE " + sqlstate in record.getMessage() for record in caplog.records)


def test_a_failed_cast_never_shows_the_value_it_quoted(connector, caplog):
    error = connector_error(connector, "SELECT CAST(product || ':secret-row' AS int) FROM sales")

    assert error.code == "sql_error"
    assert "secret-row" not in error.message and "widget" not in error.message
    assert "secret-row" in caplog.text  # the operator reads the whole text in the log


def test_parameters_are_bound_as_values_not_sql(connector, sample_url):
    before = sales_rows(sample_url)
    hostile = "widget'; DROP TABLE sales; --"
    result = run_read_query(
        connector, "SELECT count(*) AS n, %(text)s AS echoed FROM sales WHERE product = %(text)s", {"text": hostile}
    )

    assert result["rows"] == [[0, hostile]]
    assert sales_rows(sample_url) == before

    result = run_read_query(connector, "SELECT count(*) AS n FROM sales WHERE product = %(text)s", {"text": "widget"})
    assert result["rows"] == [[2]]


def test_unused_parameters_are_ignored(connector):
    # The sql step always passes the question as `text`, whether the query uses it or not.
    result = run_read_query(connector, "SELECT count(*) AS n FROM sales", {"text": "anything"})
    assert result["rows"] == [[5]]


def test_connections_are_closed_after_success_and_failure(connector, sample_url):
    run_read_query(connector, "SELECT 1")
    for query in ("SELECT * FROM no_such_table", "SELECT delete_all_sales()"):
        connector_error(connector, query)
    connector.statement_timeout_ms = 50
    connector_error(connector, RUNAWAY)

    database = urlsplit(sample_url).path.lstrip("/")
    deadline = time.monotonic() + 5
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        while True:
            (open_connections,) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                (database, "chatsite-connector"),
            ).fetchone()
            # A closed connection's backend exits a moment after the client goes.
            if open_connections == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert open_connections == 0
