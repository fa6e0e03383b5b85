"""Workflows with steps and tool calls, run by the real runner with the scripted provider (deterministic) on
real PostgreSQL and Redis; the demo sales database is real too."""

import json

import pytest
from django.core.management import call_command

from chats import actions
from chats.events import stream_key, sync_redis
from chats.models import Message
from pipelines.models import Connector, ModelConfig, Workflow
from pipelines.runner import run_reply
from tests.conftest import DEMO_CONNECTOR_URL, DEMO_DATABASE_URL


def events_of(message) -> list[dict]:
    return [json.loads(f["data"]) for _, f in sync_redis().xrange(stream_key(str(message.id)))]


def reply_to(chat, model, content="How much tea did we sell?", workflow=None) -> Message:
    _, reply, _ = actions.do_send_message(chat.owner, chat, content=content, model=model, workflow=workflow)
    run_reply(str(reply.id))
    reply.refresh_from_db()
    return reply


@pytest.fixture
def echo(db) -> ModelConfig:
    """A scripted model that answers with the prompt it was given."""
    return ModelConfig.objects.create(
        model_id="echo", display_name="Echo", provider="scripted", context_window=100000, options={"echo_prompt": True}
    )


@pytest.fixture
def rewriter(db) -> ModelConfig:
    return ModelConfig.objects.create(
        model_id="rewriter",
        display_name="Rewriter",
        provider="scripted",
        options={"script": ["Which", " product", " sold", " most?"]},
    )


@pytest.fixture
def demo_connector(alice, monkeypatch) -> Connector:
    """The seeded demo connector (read through its own role), granted to alice."""
    monkeypatch.setenv("CHATSITE_DEMO_DATABASE_URL", DEMO_DATABASE_URL)
    monkeypatch.setenv("CHATSITE_DEMO_CONNECTOR_URL", DEMO_CONNECTOR_URL)
    call_command("seed_demo_database")
    connector = Connector.objects.get(name="demo")
    connector.users.add(alice)
    return connector


def prompt_sent(reply: Message) -> list[dict]:
    return json.loads(reply.content)


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"type": "summon"}], "Step 1: type must be one of"),
        ([{"type": "system_prompt", "text": "x"}], "exactly one generate step"),
        ([{"type": "generate"}, {"type": "system_prompt", "text": "x"}], "must be the last step"),
        ([{"type": "generate"}, {"type": "generate"}], "exactly one generate step"),
        ([{"type": "generate", "tools": ["teleport"]}], "unknown tool(s) teleport"),
        ([{"type": "generate", "model": "gpt-99"}], "unknown model 'gpt-99'"),
        ([{"type": "generate", "temperature": 5}], "Step 1 (generate): temperature"),
        ([{"type": "sql", "connector": "nowhere", "query": "SELECT 1"}, {"type": "generate"}], "no active connector"),
        ([{"type": "sql", "connector": "demo", "query": "DELETE FROM sales"}, {"type": "generate"}], "Step 1 (sql)"),
        ([{"type": "sql", "connector": "demo", "query": "SELECT 1; DROP TABLE sales"}, {"type": "generate"}], "Step 1"),
        ("not a list", "Steps must be a list"),
    ],
)
def test_invalid_workflow_definitions_are_400_with_the_step_named_and_nothing_saved(alice_client, steps, expected):
    response = alice_client.post("/api/workflows", {"name": "Bad", "steps": steps}, format="json")
    assert response.status_code == 400, response.content
    messages = response.json()["fields"]["steps"]
    assert any(expected in m for m in messages), messages
    assert not Workflow.objects.filter(name="Bad").exists()


def test_a_valid_workflow_is_saved_with_its_defaults(alice_client, scripted_model):
    steps = [{"type": "system_prompt", "text": "Be brief."}, {"type": "generate", "tools": ["calculator"]}]
    response = alice_client.post("/api/workflows", {"name": "Good", "steps": steps}, format="json")
    assert response.status_code == 201, response.content
    saved = Workflow.objects.get(name="Good").steps
    assert saved[1] == {"type": "generate", "tools": ["calculator"], "max_tool_rounds": 3}


def test_the_admin_refuses_invalid_steps(db):
    from pipelines.admin import WorkflowForm

    form = WorkflowForm(data={"name": "x", "steps": json.dumps([{"type": "generate"}, {"type": "generate"}])})
    assert not form.is_valid() and "exactly one generate step" in str(form.errors["steps"])


# --- running steps -----------------------------------------------------------------------------------------


def test_steps_report_progress_and_the_system_prompt_gets_its_variables(alice, alice_chat, echo):
    workflow = Workflow.objects.create(
        owner=alice,
        name="Hello",
        steps=[
            {"type": "system_prompt", "text": "Greet {user_name} on {weekday}; keep {braces}."},
            {"type": "generate"},
        ],
    )
    reply = reply_to(alice_chat, echo, workflow=workflow)
    steps = [(e["step"], e["state"], e["index"]) for e in events_of(reply) if e["type"] == "step"]
    assert steps == [
        ("system_prompt", "started", 1),
        ("system_prompt", "finished", 1),
        ("generate", "started", 2),
        ("generate", "finished", 2),
    ]
    system = prompt_sent(reply)[0]
    assert system["role"] == "system" and system["content"].startswith("Greet alice on ")
    assert system["content"].endswith("; keep {braces}.")


def test_a_chat_without_steps_sends_no_step_events(alice_chat, scripted_model):
    reply = reply_to(alice_chat, scripted_model)
    assert "step" not in [e["type"] for e in events_of(reply)]


def test_rewrite_query_replaces_the_question_for_later_steps_without_streaming_it(alice, alice_chat, echo, rewriter):
    workflow = Workflow.objects.create(
        owner=alice, name="R", steps=[{"type": "rewrite_query", "model": "rewriter"}, {"type": "generate"}]
    )
    reply = reply_to(alice_chat, echo, content="uh, the thing that sold best?", workflow=workflow)
    evs = events_of(reply)
    finished = next(e for e in evs if e["type"] == "step" and e["step"] == "rewrite_query" and e["state"] == "finished")
    assert finished["output"] == "Which product sold most?"
    assert prompt_sent(reply)[-1] == {"role": "user", "content": "Which product sold most?"}
    # The rewriter's words went to the later steps, not to the user.
    assert not any(e["type"] == "content" and e["delta"] == "Which" for e in evs)


def test_an_sql_step_hands_the_rows_to_the_answer(alice, alice_chat, echo, demo_connector):
    workflow = Workflow.objects.create(
        owner=alice,
        name="S",
        steps=[
            {"type": "sql", "connector": "demo", "query": "SELECT product, COUNT(*) AS n FROM sales GROUP BY product"},
            {"type": "generate"},
        ],
    )
    reply = reply_to(alice_chat, echo, workflow=workflow)
    assert reply.status == "completed"
    finished = next(e for e in events_of(reply) if e["type"] == "step" and e["state"] == "finished")
    assert finished["rowCount"] == 4 and finished["columns"] == ["product", "n"]
    question = prompt_sent(reply)[-1]["content"]
    assert "Result of the SQL query on 'demo' (4 rows):" in question and "Tea | 30" in question
    assert question.endswith("Question: How much tea did we sell?")


def test_an_unreachable_connector_fails_the_step_and_the_reply_clearly(
    alice, alice_chat, echo, demo_connector, monkeypatch
):
    workflow = Workflow.objects.create(
        owner=alice, name="S", steps=[{"type": "sql", "connector": "demo", "query": "SELECT 1"}, {"type": "generate"}]
    )
    monkeypatch.delenv("CHATSITE_DEMO_CONNECTOR_URL")
    reply = reply_to(alice_chat, echo, workflow=workflow)
    evs = events_of(reply)
    assert [e["state"] for e in evs if e["type"] == "step"] == ["started", "failed"]
    assert evs[-1]["type"] == "error" and evs[-1]["error"] == "connector_unavailable"
    assert reply.status == "failed" and reply.error["code"] == "connector_unavailable"


# --- tool calls --------------------------------------------------------------------------------------------


def tool_workflow(owner, tools=("calculator",), rounds=3) -> Workflow:
    return Workflow.objects.create(
        owner=owner, name="Tools", steps=[{"type": "generate", "tools": list(tools), "max_tool_rounds": rounds}]
    )


def test_tool_calls_stream_in_order_and_are_saved_with_their_results(alice, alice_chat, scripted_model, alice_client):
    scripted_model.options = {
        "script": ["It", " is", " 14."],
        "tool_rounds": [[{"name": "calculator", "arguments": {"expression": "2 + 3 * 4"}}]],
    }
    scripted_model.save()
    reply = reply_to(alice_chat, scripted_model, content="What is 2 + 3 * 4?", workflow=tool_workflow(alice))
    evs = [e for e in events_of(reply) if e["type"] != "step"]
    assert [e["type"] for e in evs] == ["start", "tool_call", "tool_result", "content", "content", "content", "end"]
    call, result = evs[1], evs[2]
    assert call == {
        "type": "tool_call",
        "callId": "call_0_0",
        "toolName": "calculator",
        "toolArgs": {"expression": "2 + 3 * 4"},
    }
    assert result["callId"] == "call_0_0" and result["toolName"] == "calculator"
    assert result["result"]["value"] == 14
    assert reply.content == "It is 14." and reply.tool_calls == [
        {
            "callId": "call_0_0",
            "toolName": "calculator",
            "toolArgs": {"expression": "2 + 3 * 4"},
            "result": result["result"],
        }
    ]
    listed = alice_client.get(f"/api/chats/{alice_chat.id}/messages").json()["results"][1]
    assert listed["toolCalls"] == reply.tool_calls


@pytest.mark.parametrize(
    ("call", "error_part"),
    [
        ({"name": "teleport", "arguments": "{}"}, "no tool named 'teleport'"),
        ({"name": "calculator", "arguments": "{not json"}, "not valid JSON"),
        ({"name": "calculator", "arguments": {"expr": "1"}}, "Invalid arguments"),
        ({"name": "calculator", "arguments": {"expression": "__import__('os')"}}, ""),
    ],
)
def test_tool_errors_and_bad_arguments_become_a_tool_result_not_a_failed_reply(
    alice, alice_chat, scripted_model, call, error_part
):
    scripted_model.options = {"script": ["Sorry."], "tool_rounds": [[call]]}
    scripted_model.save()
    reply = reply_to(alice_chat, scripted_model, workflow=tool_workflow(alice))
    result = next(e for e in events_of(reply) if e["type"] == "tool_result")
    assert result["result"] is None and error_part in result["error"] and result["error"]
    assert reply.status == "completed" and reply.content == "Sorry."
    assert reply.tool_calls[0]["error"] == result["error"]


def test_the_tool_round_limit_stops_the_loop_and_the_model_answers(alice, alice_chat, scripted_model):
    again = [{"name": "current_datetime", "arguments": {}}]
    scripted_model.options = {"script": ["Done."], "tool_rounds": [again, again, again, again, again]}
    scripted_model.save()
    reply = reply_to(alice_chat, scripted_model, workflow=tool_workflow(alice, tools=["current_datetime"], rounds=2))
    types = [e["type"] for e in events_of(reply)]
    assert types.count("tool_call") == 2 and types.count("tool_result") == 2
    assert reply.status == "completed" and reply.content == "Done."


def test_tool_calls_are_part_of_the_next_turns_prompt(alice, alice_chat, scripted_model, echo):
    scripted_model.options = {
        "script": ["14."],
        "tool_rounds": [[{"name": "calculator", "arguments": {"expression": "2*7"}}]],
    }
    scripted_model.save()
    workflow = tool_workflow(alice)
    reply_to(alice_chat, scripted_model, content="2*7?", workflow=workflow)
    follow_up = reply_to(alice_chat, echo, content="And doubled?")
    prompt = prompt_sent(follow_up)
    roles = [m["role"] for m in prompt]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert prompt[1]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "2*7"}'}
    assert json.loads(prompt[2]["content"])["result"]["value"] == 14 and prompt[2]["tool_call_id"] == "call_0_0"


def test_a_model_that_cannot_call_tools_answers_and_says_so(alice, alice_chat, smollm2):
    smollm2.default_max_tokens = 8
    smollm2.save()
    workflow = Workflow.objects.create(owner=alice, name="T", steps=[{"type": "generate", "tools": ["calculator"]}])
    reply = reply_to(alice_chat, smollm2, content="What is 2+2?", workflow=workflow)
    finished = next(e for e in events_of(reply) if e["type"] == "step" and e["state"] == "finished")
    assert "cannot call tools" in finished["note"]
    assert reply.status == "completed" and reply.content


def test_an_unreachable_provider_fails_the_reply_clearly_and_keeps_the_question(alice_chat):
    dead = ModelConfig.objects.create(
        model_id="dead", display_name="Dead", provider="openai", provider_model="m",
        base_url="http://127.0.0.1:1/v1", options={"max_retries": 0, "connect_timeout": 1},
    )  # fmt: skip
    reply = reply_to(alice_chat, dead, content="Anyone there?")
    error = events_of(reply)[-1]
    assert error["type"] == "error" and error["error"] == "provider_unavailable" and error["retryable"] is True
    assert reply.status == "failed" and reply.error["code"] == "provider_unavailable"
    assert reply.parent.content == "Anyone there?" and reply.parent.status == "completed"


def test_a_send_without_workflow_id_uses_the_chats_default_workflow(
    alice, alice_chat, echo, alice_client, django_capture_on_commit_callbacks
):
    workflow = Workflow.objects.create(owner=alice, name="Default", system_prompt="Chat default prompt.")
    alice_chat.workflow = workflow
    alice_chat.save()
    body = {"content": "Hi", "modelId": "echo", "userId": str(alice.id)}
    with django_capture_on_commit_callbacks(execute=False):
        # The stream itself is not read: no worker runs here, only what the send saved is checked.
        response = alice_client.post(f"/api/chats/{alice_chat.id}/messages/stream", body, format="json")
        assert response.status_code == 200
    reply = Message.objects.get(chat=alice_chat, role="assistant")
    assert reply.workflow == workflow
    body["workflowId"] = None  # naming no workflow explicitly overrides the default
    reply.status = "completed"
    reply.save()
    with django_capture_on_commit_callbacks(execute=False):
        assert alice_client.post(f"/api/chats/{alice_chat.id}/messages/stream", body, format="json").status_code == 200
    assert Message.objects.filter(chat=alice_chat, role="assistant").order_by("-created_at").first().workflow is None
