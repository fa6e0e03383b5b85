"""Text to SQL (seed 001) as workflow steps: validation, the connector's semantic model, and the pipeline's logic
run by the real runner with the scripted provider (its `rules` play each model call) on the real demo sales
database, real PostgreSQL and Redis."""

from __future__ import annotations

import json

import psycopg
import pytest

from chats import actions
from chats.event_schema import check_event
from chats.events import stream_key, sync_redis
from chats.models import Chat, Message
from pipelines.models import Connector, ModelConfig, Workflow
from pipelines.providers.scripted import ScriptedProvider
from pipelines.runner import run_reply
from pipelines.text_to_sql import pipeline, schema
from pipelines.text_to_sql.schema import Column, SemanticModel, Table
from tests.conftest import DEMO_CONNECTOR_URL

CLASSIFY = "Reply with one word: SQL"
GENERATE = "You write one PostgreSQL SELECT"
REPAIR = "That query cannot run"
SUMMARIZE = "You are a data analyst"
EXPLAIN = "is not a question about the data"
TEA_SQL = "SELECT SUM(amount) AS tea_revenue FROM sales WHERE product = 'Tea'"
PIPELINE = [
    {"type": "classify"},
    {"type": "retrieve_schema"},
    {"type": "generate_sql"},
    {"type": "execute_sql"},
    {"type": "summarize", "sample_size": 3},
]


def events_of(message) -> list[dict]:
    return [json.loads(f["data"]) for _, f in sync_redis().xrange(stream_key(str(message.id)))]


def finished(events: list[dict], step: str) -> dict:
    return next(e for e in events if e["type"] == "step" and e["step"] == step and e["state"] == "finished")


def analyst(rules: list[dict], model_id: str = "analyst") -> ModelConfig:
    """A scripted model answering each text-to-SQL call by its rule (see pipelines.providers.scripted)."""
    model, _ = ModelConfig.objects.update_or_create(
        model_id=model_id,
        defaults={"display_name": "Analyst", "provider": "scripted", "context_window": 100000,
                  "options": {"rules": rules, "script": ["(no rule)"]}},
    )  # fmt: skip
    return model


def ask(chat: Chat, model: ModelConfig, question: str = "How much tea did we sell?", steps=None) -> Message:
    workflow = Workflow.objects.create(
        owner=chat.owner, name=f"t2s {Workflow.objects.count()}", steps=steps or PIPELINE
    )
    _, reply, _ = actions.do_send_message(chat.owner, chat, content=question, model=model, workflow=workflow)
    run_reply(str(reply.id))
    reply.refresh_from_db()
    return reply


def demo_count() -> int:
    with psycopg.connect(DEMO_CONNECTOR_URL) as conn:
        return conn.execute("SELECT count(*) FROM sales").fetchone()[0]


@pytest.fixture
def demo(sql_analyst, alice) -> Connector:
    """The seeded demo database and connector, granted to alice; its semantic model read afresh."""
    connector = Connector.objects.get(name="demo")
    connector.users.add(alice)
    schema.forget()
    return connector


# --- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"type": "generate_sql"}], "A text-to-SQL workflow runs"),
        ([{"type": "retrieve_schema"}, {"type": "generate_sql"}, {"type": "generate"}], "no generate step"),
        ([{"type": "retrieve_schema"}, {"type": "generate_sql"}, {"type": "summarize"}], "in that order"),
        ([{"type": "generate_sql"}, {"type": "retrieve_schema"}], "in that order"),
        ([{"type": "retrieve_schema"}, {"type": "generate_sql"}, {"type": "sql", "connector": "demo",
          "query": "SELECT 1"}], "A text-to-SQL workflow runs"),
        ([{"type": "retrieve_schema", "max_tables": 0}, {"type": "generate_sql"}], "Step 1 (retrieve_schema)"),
        ([{"type": "retrieve_schema"}, {"type": "generate_sql", "repair_rounds": 9}], "Step 2 (generate_sql)"),
        ([{"type": "retrieve_schema"}, {"type": "generate_sql"}, {"type": "execute_sql"},
          {"type": "summarize", "sample_size": 0}], "Step 4 (summarize)"),
        ([{"type": "retrieve_schema", "connector": "demo"}, {"type": "generate_sql"}], "no active connector named"),
    ],
)  # fmt: skip
def test_text_to_sql_workflows_out_of_order_or_with_bad_fields_are_400(bob_client, sql_analyst, steps, expected):
    response = bob_client.post("/api/workflows", {"name": "Bad", "steps": steps}, format="json")
    assert response.status_code == 400, response.content
    assert expected in json.dumps(response.json())
    assert not Workflow.objects.filter(name="Bad").exists()


def test_a_text_to_sql_workflow_saves_with_its_defaults(alice_client, demo):
    steps = [{"type": "classify", "connector": "demo"}, *PIPELINE[1:]]
    response = alice_client.post("/api/workflows", {"name": "Ask", "steps": steps}, format="json")
    assert response.status_code == 201, response.content
    saved = Workflow.objects.get(name="Ask").steps
    assert saved[2]["repair_rounds"] == 1 and saved[1]["max_tables"] == 8 and saved[4]["language"] == "English"


# --- the semantic model ------------------------------------------------------------------------------------------


def test_the_semantic_model_reads_tables_columns_keys_and_comments(demo):
    model = schema.semantic_model(demo)
    tables = {t.name: t for t in model.tables}
    assert set(tables) == {"sales", "products", "regions", "region_targets"}
    sales = tables["sales"]
    assert [c.name for c in sales.columns] == ["id", "product", "region", "amount", "sold_on"]
    assert sales.primary_key == ["id"] and (["product"], "products", ["name"]) in sales.foreign_keys
    assert "Revenue of the sale" in next(c.comment for c in sales.columns if c.name == "amount")
    assert tables["region_targets"].primary_key == ["region", "month"]
    assert "REFERENCES products(name)" in sales.describe() and "numeric(10,2)" in sales.describe()
    assert schema.semantic_model(demo) is model  # cached


def test_the_tables_a_question_needs_come_first(demo, minilm):
    model = schema.semantic_model(demo)
    top = [t.name for t, _ in schema.relevant_tables(model, "Which manager runs the North region?", 1)]
    assert top == ["regions"]
    top = [t.name for t, _ in schema.relevant_tables(model, "Did each region reach its monthly quota?", 2)]
    assert set(top) == {"region_targets", "regions"}


def test_among_200_tables_the_right_ones_are_chosen_and_the_prompt_still_fits(demo, minilm):
    real = schema.semantic_model(demo).tables
    topics = ["invoice", "shipment", "employee", "ticket", "warehouse", "campaign", "payroll", "supplier"]
    noise = [
        Table("public", f"{topics[i % 8]}_{i}", f"{topics[i % 8].title()} records of department {i}.",
              [Column("id", "integer"), Column(f"{topics[i % 8]}_code", "text"), Column("created_on", "date")])
        for i in range(196)
    ]  # fmt: skip
    model = SemanticModel(tables=noise + real, read_at=0)
    chosen = [t.name for t, _ in schema.relevant_tables(model, "What was the revenue of Coffee sales?", 8)]
    assert len(chosen) == 8 and chosen[0] == "sales" and "products" in chosen
    # The whole schema would not fit a 2,048-token prompt; the chosen tables do, and a tighter budget keeps the
    # best ones only (the scripted provider counts a token per word).
    provider = ScriptedProvider(analyst([]))
    whole = pipeline._fit_schema(provider, model.tables, 10**6)
    assert provider.count_tokens(whole) > 2048
    tables = [t for name in chosen for t in model.tables if t.name == name]
    assert provider.count_tokens(pipeline._fit_schema(provider, tables, 10**6)) < 400
    tight = pipeline._fit_schema(provider, tables, 120)
    assert tight.startswith("TABLE sales") and provider.count_tokens(tight) <= 120 and tight.count("TABLE ") < 8


# --- the pipeline ------------------------------------------------------------------------------------------------


def test_ask_classifies_retrieves_generates_runs_and_summarises(alice_chat, demo, minilm):
    model = analyst([
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": ["```sql\n", TEA_SQL, "\n```"]},
        {"when": SUMMARIZE, "script": ["We sold ", "tea."]},
    ])  # fmt: skip
    reply = ask(alice_chat, model)
    events = events_of(reply)
    for event in events:
        check_event(event)
    steps = [(e["step"], e["state"]) for e in events if e["type"] == "step"]
    assert steps == [(s["type"], state) for s in PIPELINE for state in ("started", "finished")]
    assert finished(events, "classify")["outcome"] == "sql"
    assert {"sales", "products"} <= set(finished(events, "retrieve_schema")["tables"][:2])
    run = finished(events, "execute_sql")
    assert run["sql"] == TEA_SQL + "\nLIMIT 200" == finished(events, "generate_sql")["sql"]
    assert run["columns"] == ["tea_revenue"] and run["rowCount"] == 1 and isinstance(run["rows"][0][0], float)
    assert run["repaired"] is False
    assert finished(events, "summarize")["summary"] == "We sold tea."
    assert events[-1]["type"] == "end" and reply.status == "completed"
    assert reply.content == f"```sql\n{TEA_SQL}\nLIMIT 200\n```\n\nWe sold tea."


def test_the_summary_reads_only_sample_size_rows_in_the_language_asked(alice_chat, demo, minilm):
    model = analyst([
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": ["SELECT id, amount FROM sales ORDER BY id"]},
        {"when": SUMMARIZE, "echo": True},
    ])  # fmt: skip
    steps = [*PIPELINE[:4], {"type": "summarize", "sample_size": 3, "language": "French"}]
    reply = ask(alice_chat, model, steps=steps)
    prompt = json.loads(finished(events_of(reply), "summarize")["summary"])
    assert "in French" in prompt[0]["content"]
    result = prompt[1]["content"].split("returned", 1)[1]
    assert "120 rows; the first 3 are shown" in result
    assert "\n1 | " in result and "\n3 | " in result and "\n4 | " not in result


def test_a_question_not_about_the_data_ends_with_an_explanation(alice_chat, demo, minilm):
    model = analyst([
        {"when": CLASSIFY, "script": ["OTHER"]},
        {"when": EXPLAIN, "script": ["I answer ", "questions about sales."]},
    ])  # fmt: skip
    reply = ask(alice_chat, model, question="Tell me a joke")
    events = events_of(reply)
    assert [(e["step"], e["state"]) for e in events if e["type"] == "step"] == [
        ("classify", "started"), ("classify", "finished")
    ]  # fmt: skip
    assert finished(events, "classify")["outcome"] == "non_sql"
    assert reply.status == "completed" and reply.content == "I answer questions about sales."
    assert events[-1]["type"] == "end"


def test_a_query_naming_a_missing_column_is_repaired_once(alice_chat, demo, minilm):
    model = analyst([
        {"when": REPAIR, "script": [TEA_SQL]},
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": ["SELECT SUM(revenue) FROM sales"]},
        {"when": SUMMARIZE, "script": ["Done."]},
    ])  # fmt: skip
    events = events_of(ask(alice_chat, model))
    generated = finished(events, "generate_sql")
    assert generated["repaired"] is True and generated["sql"].startswith(TEA_SQL)
    assert finished(events, "execute_sql")["rowCount"] == 1


def test_a_query_the_database_refuses_is_repaired_with_its_error_sentence(alice_chat, demo, minilm):
    model = analyst([
        {"when": "divides by zero", "script": [TEA_SQL]},
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": ["SELECT amount / 0 AS broken FROM sales"]},
        {"when": SUMMARIZE, "script": ["Done."]},
    ])  # fmt: skip
    reply = ask(alice_chat, model)
    events = events_of(reply)
    assert finished(events, "generate_sql")["repaired"] is False
    run = finished(events, "execute_sql")
    assert run["repaired"] is True and run["sql"].startswith(TEA_SQL) and run["columns"] == ["tea_revenue"]
    assert reply.content.startswith(f"```sql\n{TEA_SQL}")  # the SQL that ran, not the broken one


@pytest.mark.parametrize(
    ("generated", "repaired"),
    [
        ("DELETE FROM sales", "DROP TABLE sales"),
        ("SELECT * FROM customers", "SELECT pg_read_file('/etc/passwd')"),
        ("Sorry, I cannot help.", "SELECT nothing FROM sales"),
    ],
)
def test_refused_sql_fails_the_reply_after_one_repair_and_touches_nothing(
    alice_chat, demo, minilm, generated, repaired
):
    model = analyst([
        {"when": REPAIR, "script": [repaired]},
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": [generated]},
    ])  # fmt: skip
    reply = ask(alice_chat, model)
    events = events_of(reply)
    assert events[-1]["type"] == "error" and events[-1]["error"] == "sql_invalid"
    assert ("generate_sql", "failed") in [(e["step"], e.get("state")) for e in events if e["type"] == "step"]
    assert not any(e["type"] == "step" and e["step"] == "execute_sql" for e in events)
    assert reply.status == "failed" and demo_count() == 120


def test_with_no_repair_round_the_first_refusal_fails(alice_chat, demo, minilm):
    model = analyst([
        {"when": REPAIR, "script": [TEA_SQL]},
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": ["SELECT nope FROM sales"]},
    ])  # fmt: skip
    steps = [PIPELINE[0], PIPELINE[1], {"type": "generate_sql", "repair_rounds": 0}]
    reply = ask(alice_chat, model, steps=steps)
    assert reply.error["code"] == "sql_invalid" and "nope" in reply.error["message"]


def test_generate_sql_alone_writes_the_sql_as_the_reply(alice_chat, demo, minilm):
    model = analyst([{"when": CLASSIFY, "script": ["SQL"]}, {"when": GENERATE, "script": [TEA_SQL + ";"]}])
    reply = ask(alice_chat, model, steps=PIPELINE[:3])
    assert reply.status == "completed" and reply.content == f"```sql\n{TEA_SQL}\nLIMIT 200\n```\n"


def test_the_next_question_in_a_thread_sees_the_earlier_question_and_its_sql(alice_chat, demo, minilm):
    model = analyst([
        {"when": f"Question: How much tea did we sell?\nSQL: {TEA_SQL}", "script": ["SELECT 2 AS saw_history"]},
        {"when": CLASSIFY, "script": ["SQL"]},
        {"when": GENERATE, "script": [TEA_SQL]},
    ])  # fmt: skip
    ask(alice_chat, model, steps=PIPELINE[:4])
    second = ask(alice_chat, model, question="And coffee?", steps=PIPELINE[:4])
    assert finished(events_of(second), "execute_sql")["columns"] == ["saw_history"]


def test_someone_without_a_grant_on_the_connector_gets_connector_unavailable(bob, bob_chat, demo, minilm):
    model = analyst([{"when": CLASSIFY, "script": ["SQL"]}])
    workflow = Workflow.objects.create(owner=None, name="Shared ask", steps=PIPELINE)  # staff-written
    _, reply, _ = actions.do_send_message(bob, bob_chat, content="How much tea?", model=model, workflow=workflow)
    run_reply(str(reply.id))
    reply.refresh_from_db()
    assert reply.error["code"] == "connector_unavailable" and "demo" in reply.error["message"]
    assert "sales" not in json.dumps(events_of(reply))
