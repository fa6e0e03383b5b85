"""The built-in tools (calculator, current_datetime, sql_query) and `run_tool`'s error handling."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator

import pytest

from pipelines import tools
from pipelines.models import Connector

# registry() loads the built-in modules only while the registry is empty, so importing one tool module
# directly would hide the others: sql_query is imported too, which registers it.
from pipelines.tools import (  # noqa: F401
    Tool,
    ToolContext,
    ToolError,
    calculator,
    clock,
    registry,
    run_tool,
    sql_query,
)
from tests.test_connectors import SAMPLE_ENV, sales_rows, sample_database

CONTEXT = ToolContext(user_id="1", user_name="alice", message_id="00000000-0000-0000-0000-000000000001")


def call(name: str, arguments: dict | str, context: ToolContext = CONTEXT) -> dict:
    """run_tool with `arguments` as the model would send them (JSON text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return run_tool(name, text, context)


def context_of(user) -> ToolContext:
    """The context of a reply that runs for `user`."""
    return ToolContext(user_id=str(user.id), user_name=user.username, message_id=CONTEXT.message_id)


# The registry


def test_registry_holds_the_builtin_tools_with_strict_schemas():
    tools = registry()

    assert {"calculator", "current_datetime", "sql_query"} <= set(tools)
    for name in ("calculator", "current_datetime", "sql_query"):
        schema = tools[name].schema()
        assert schema["type"] == "function"
        assert schema["function"]["name"] == name
        assert schema["function"]["description"]
        assert schema["function"]["parameters"]["type"] == "object"
        assert schema["function"]["parameters"]["additionalProperties"] is False
    assert tools["calculator"].parameters["required"] == ["expression"]
    assert tools["sql_query"].parameters["required"] == ["connector", "query"]
    assert tools["current_datetime"].parameters["required"] == []


# calculator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("sqrt(16)", 4.0),
        ("2 ** 10", 1024),
        ("7 // 2 + 7 % 2", 4),
        ("round(pi, 4)", 3.1416),
        ("round(log(e), 6)", 1.0),
        ("log10(1000)", 3.0),
        ("log(8, 2)", 3.0),
        ("floor(2.7) + ceil(2.1)", 5),
        ("abs(-3) + min(4, 5) + max(1, 2)", 9),
        ("round(sin(pi / 2) + cos(0) + tan(0), 6)", 2.0),
        ("round(exp(1), 6)", 2.718282),
        ("1 / 4", 0.25),
    ],
)
def test_calculator_gives_right_answers(expression, value):
    assert call("calculator", {"expression": expression}) == {"result": {"expression": expression, "value": value}}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "attribute access"),
        ("__import__('os')", "Unknown function '__import__'"),
        ("(1).real", "attribute access"),
        ("pi.hex()", "attribute access"),
        ("open('/etc/passwd')", "Unknown function 'open'"),
        ("x + 1", "Unknown name 'x'"),
        ("[1, 2][0]", "indexing"),
        ("1 / 0", "Division by zero"),
        ("sqrt(-1)", "math domain error"),
        ("exp(1000)", "too large"),
        ("1 < 2", "operator"),
        ("'a' * 10", "not a number"),
        ("x = 1", "not valid"),
        ("1; 2", "not valid"),
        ("2 +", "not valid"),
        ("(-8) ** (1 / 3)", "complex"),
    ],
)
def test_calculator_refuses_with_a_clear_error(expression, message):
    with pytest.raises(ToolError, match=message):
        calculator.evaluate(expression)


@pytest.mark.parametrize("expression", ["9 ** 9 ** 9", "3999999 ** 3999999", "2 ** 100000", "10 ** 5000"])
def test_calculator_refuses_huge_powers_quickly(expression):
    started = time.monotonic()
    with pytest.raises(ToolError, match="too large"):
        calculator.evaluate(expression)
    assert time.monotonic() - started < 1


def test_calculator_keeps_simpleeval_string_size_limit():
    with pytest.raises(ToolError, match="too long"):
        calculator.evaluate("'a' * 1000000")


def test_calculator_error_reaches_the_model_as_an_error_result():
    outcome = call("calculator", {"expression": "__import__('os').system('true')"})
    assert set(outcome) == {"error"}
    assert "attribute access" in outcome["error"]


# current_datetime


def test_clock_gives_the_time_in_the_named_timezone():
    outcome = call("current_datetime", {"timezone": "Asia/Tokyo"})["result"]

    assert outcome["timezone"] == "Asia/Tokyo"
    moment = datetime.datetime.fromisoformat(outcome["iso"])
    assert moment.utcoffset() == datetime.timedelta(hours=9)
    assert abs(moment - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=5)
    assert outcome["date"] == moment.date().isoformat()
    assert outcome["time"] == moment.time().isoformat()
    assert outcome["weekday"] == moment.strftime("%A")


def test_clock_defaults_to_utc():
    outcome = call("current_datetime", {})["result"]

    assert outcome["timezone"] == "UTC"
    assert datetime.datetime.fromisoformat(outcome["iso"]).utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime"])
def test_clock_refuses_an_unknown_timezone(name):
    with pytest.raises(ToolError, match="Unknown time zone"):
        clock.now_in(name)
    assert "Unknown time zone" in call("current_datetime", {"timezone": name})["error"]


# run_tool's error handling


def test_run_tool_with_an_unknown_tool_is_an_error():
    assert call("no_such_tool", {}) == {"error": "There is no tool named 'no_such_tool'."}


def test_run_tool_with_invalid_json_is_an_error():
    outcome = call("calculator", '{"expression": ')
    assert "not valid JSON" in outcome["error"]


def test_run_tool_with_a_missing_required_argument_is_an_error():
    outcome = call("calculator", {})
    assert "Invalid arguments" in outcome["error"]
    assert "expression" in outcome["error"]


def test_run_tool_with_an_extra_argument_is_an_error():
    outcome = call("calculator", {"expression": "1 + 1", "precision": 3})
    assert "Invalid arguments" in outcome["error"]
    assert "precision" in outcome["error"]


def test_run_tool_with_a_wrongly_typed_argument_is_an_error():
    assert "Invalid arguments" in call("current_datetime", {"timezone": 5})["error"]


def test_run_tool_turns_a_tool_error_into_an_error_result(monkeypatch):
    def failing(arguments: dict, context: ToolContext) -> dict:
        raise ToolError(f"Cannot help {context.user_name}.")

    registry()  # Load the built-ins first: an empty registry is what triggers loading them.
    # setitem so the test tool leaves the registry when the test ends.
    monkeypatch.setitem(
        tools._registry,
        "test_failing_tool",
        Tool(
            name="test_failing_tool",
            description="Always fails.",
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
            function=failing,
        ),
    )
    assert call("test_failing_tool", {}) == {"error": "Cannot help alice."}


# sql_query


@pytest.fixture(scope="session")
def sample_url() -> Iterator[str]:
    with sample_database() as url:
        yield url


@pytest.fixture
def sample_connector(alice, sample_url, monkeypatch) -> Connector:
    """The sample database's connector, granted to alice (the tool's calls below run for her)."""
    monkeypatch.setenv(SAMPLE_ENV, sample_url)
    connector = Connector.objects.create(name="sample", url_env=SAMPLE_ENV, statement_timeout_ms=2000, max_rows=50)
    connector.users.add(alice)
    return connector


def sql_call(arguments: dict) -> dict:
    """The sql_query tool, called for alice."""
    from chats.models import User

    return call("sql_query", arguments, context_of(User.objects.get(username="alice")))


def test_sql_query_runs_a_select_end_to_end(sample_connector):
    outcome = sql_call(
        {
            "connector": "sample",
            "query": "SELECT region, SUM(amount) AS revenue FROM sales GROUP BY region ORDER BY revenue DESC",
        },
    )

    assert outcome == {
        "result": {
            "columns": ["region", "revenue"],
            "rows": [["north", 112.49], ["west", 45.1], ["south", 7.25], ["east", 3.0]],
            "rowCount": 4,
            "truncated": False,
        }
    }


def test_sql_query_reports_truncation(sample_connector):
    sample_connector.max_rows = 1
    sample_connector.save()

    result = sql_call({"connector": "sample", "query": "SELECT id FROM sales ORDER BY id"})["result"]
    assert result["rows"] == [[1]]
    assert result["truncated"] is True


def test_sql_query_refuses_a_write_and_changes_nothing(sample_connector, sample_url):
    before = sales_rows(sample_url)
    outcome = sql_call({"connector": "sample", "query": "DELETE FROM sales"})

    assert "Only read queries" in outcome["error"]
    assert sales_rows(sample_url) == before


def test_sql_query_reports_a_database_error_as_a_sentence(sample_connector):
    outcome = sql_call({"connector": "sample", "query": "SELECT nope FROM sales"})
    assert "a column that does not exist" in outcome["error"] and "nope" not in outcome["error"]


def test_sql_query_with_an_unknown_connector_lists_the_available_ones(sample_connector):
    outcome = sql_call({"connector": "warehouse", "query": "SELECT 1"})

    assert "no active connector named 'warehouse' that you may use" in outcome["error"]
    assert "sample" in outcome["error"]


def test_sql_query_with_an_inactive_connector_is_refused(sample_connector):
    sample_connector.is_active = False
    sample_connector.save()

    outcome = sql_call({"connector": "sample", "query": "SELECT 1"})
    assert "no active connector named 'sample'" in outcome["error"]


def test_sql_query_with_an_unconfigured_connector_says_so(sample_connector, monkeypatch):
    monkeypatch.delenv(SAMPLE_ENV)
    outcome = sql_call({"connector": "sample", "query": "SELECT 1"})
    assert SAMPLE_ENV in outcome["error"]
