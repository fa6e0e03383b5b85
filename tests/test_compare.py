"""Models side by side (issue 18): `POST /api/chats/<chatId>/messages/compare`. Replies are generated
in-process by the runner (scripted provider), as in tests/test_branches.py."""

import json

import pytest

from chats import actions
from chats.models import Message
from pipelines.models import ModelConfig
from pipelines.runner import run_reply
from tests.test_branches import prompt_of, turn


def compare(client, chat, data):
    return client.post(f"/api/chats/{chat.id}/messages/compare", data, format="json")


def send(client, chat, content="next"):
    return client.post(
        f"/api/chats/{chat.id}/messages/stream",
        {"content": content, "modelId": "echo", "userId": str(chat.owner_id)},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )


@pytest.fixture
def echo(db) -> ModelConfig:
    """A scripted model that answers with the prompt it was given (JSON of the messages)."""
    return ModelConfig.objects.create(
        model_id="echo", display_name="Echo", provider="scripted", context_window=100000, options={"echo_prompt": True}
    )


@pytest.fixture
def no_worker(django_capture_on_commit_callbacks):
    # Nothing is enqueued: each test runs the replies it needs with run_reply.
    with django_capture_on_commit_callbacks(execute=False):
        yield


@pytest.fixture
def echo2(db) -> ModelConfig:
    return ModelConfig.objects.create(
        model_id="echo2",
        display_name="Echo 2",
        provider="scripted",
        context_window=100000,
        options={"echo_prompt": True},
    )


def two_targets(workflow=None):
    first = {"modelId": "echo"}
    if workflow is not None:
        first["workflowId"] = str(workflow.id)
    return [first, {"modelId": "echo2"}]


def test_compare_makes_sibling_replies_that_each_see_only_their_own_branch(
    alice_client, alice, alice_chat, echo, echo2, shared_workflow, no_worker
):
    _q1, a1 = turn(alice_chat, echo, "first question")
    response = compare(
        alice_client,
        alice_chat,
        {"content": "which is better?", "userId": str(alice.id), "targets": two_targets(shared_workflow)},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    question = Message.objects.get(id=body["questionId"])
    assert question.role == "user" and question.content == "which is better?" and question.parent_id == a1.id
    replies = [Message.objects.get(id=r["messageId"]) for r in body["replies"]]
    assert [(r["modelId"], r["workflowId"]) for r in body["replies"]] == [
        ("echo", str(shared_workflow.id)),
        ("echo2", None),
    ]
    assert all(r.parent_id == question.id and r.status == "queued" for r in replies)
    listed = {
        m["id"]: m["siblingIds"] for m in alice_client.get(f"/api/chats/{alice_chat.id}/messages").json()["results"]
    }
    assert listed[str(replies[0].id)] == listed[str(replies[1].id)] == [str(r.id) for r in replies]

    # Both run (the chat's one-reply rule does not stop the compare's own siblings), each with its own branch.
    assert run_reply(str(replies[0].id)) == "completed"
    assert run_reply(str(replies[1].id)) == "completed"
    for reply in replies:
        reply.refresh_from_db()
    expected = [("user", "first question"), ("assistant", a1.content), ("user", "which is better?")]
    assert prompt_of(replies[1]) == expected
    # The workflow's system prompt goes to the first target only.
    assert prompt_of(replies[0]) == [("system", shared_workflow.system_prompt), *expected]

    # Continue with the second reply: the next question's prompt holds it, not its sibling.
    _q3, a3 = turn(alice_chat, echo, "go on", parent_id=str(replies[1].id))
    contents = [c for _, c in prompt_of(a3)]
    assert replies[1].content in contents and replies[0].content not in contents


def test_compare_follows_parent_id(alice_client, alice_chat, echo, echo2, no_worker):
    _q1, a1 = turn(alice_chat, echo, "one")
    turn(alice_chat, echo, "two")
    response = compare(alice_client, alice_chat, {"content": "again", "targets": two_targets(), "parentId": str(a1.id)})
    assert response.status_code == 201
    assert Message.objects.get(id=response.json()["questionId"]).parent_id == a1.id


@pytest.mark.parametrize(
    "targets, field",
    [
        ([{"modelId": "echo"}], "targets"),
        ([{"modelId": "echo"}] * 5, "targets"),
        ([{"modelId": "echo"}, {"modelId": "nope"}], "targets"),
        ([{"modelId": "echo"}, {"modelId": 1}], "targets"),
        ("echo", "targets"),
    ],
)
def test_bad_targets_are_400_and_write_nothing(alice_client, alice_chat, echo, echo2, targets, field, no_worker):
    response = compare(alice_client, alice_chat, {"content": "q", "targets": targets})
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert not Message.objects.filter(chat=alice_chat).exists()


def test_an_unknown_model_and_bobs_private_workflow_are_named(
    alice_client, alice_chat, echo, echo2, bob_workflow, no_worker
):
    response = compare(
        alice_client, alice_chat, {"content": "q", "targets": [{"modelId": "echo"}, {"modelId": "nope"}]}
    )
    assert response.status_code == 400
    assert "nope" in json.dumps(response.json()["fields"]["targets"])
    targets = [{"modelId": "echo"}, {"modelId": "echo2", "workflowId": str(bob_workflow.id)}]
    response = compare(alice_client, alice_chat, {"content": "q", "targets": targets})
    assert response.status_code == 400
    assert str(bob_workflow.id) in json.dumps(response.json()["fields"]["targets"])
    assert not Message.objects.filter(chat=alice_chat).exists()


def test_empty_content_and_a_foreign_parent_are_400(alice_client, alice_chat, bob_chat, echo, echo2, no_worker):
    assert compare(alice_client, alice_chat, {"content": "  ", "targets": two_targets()}).status_code == 400
    _q, bob_reply = turn(bob_chat, echo, "bob's")
    response = compare(
        alice_client, alice_chat, {"content": "q", "targets": two_targets(), "parentId": str(bob_reply.id)}
    )
    assert response.status_code == 400 and "parentId" in response.json()["fields"]


def test_ownership(alice_client, bob_client, anon, alice, alice_chat, echo, echo2, no_worker):
    body = {"content": "q", "targets": two_targets()}
    assert compare(bob_client, alice_chat, body).status_code == 403
    assert compare(anon, alice_chat, body).status_code == 401
    assert (
        alice_client.post(
            "/api/chats/00000000-0000-0000-0000-000000000000/messages/compare", body, format="json"
        ).status_code
        == 404
    )
    assert compare(alice_client, alice_chat, {**body, "userId": "someone-else"}).status_code == 403
    assert not Message.objects.filter(chat=alice_chat).exists()


def test_409_while_a_reply_runs_and_while_the_compare_replies_run(alice_client, alice_chat, echo, echo2, no_worker):
    _q, _a, _ = actions.do_send_message(alice_chat.owner, alice_chat, content="q", model=echo, workflow=None)
    response = compare(alice_client, alice_chat, {"content": "x", "targets": two_targets()})
    assert response.status_code == 409 and response.json()["error"] == "reply_in_progress"
    assert Message.objects.filter(chat=alice_chat).count() == 2
    run_reply(str(_a.id))

    replies = compare(alice_client, alice_chat, {"content": "x", "targets": two_targets()}).json()["replies"]
    # While either compare reply is queued or streaming, a later send (or compare) in the chat is 409.
    assert send(alice_client, alice_chat).status_code == 409
    run_reply(replies[0]["messageId"])
    assert send(alice_client, alice_chat).status_code == 409
    assert compare(alice_client, alice_chat, {"content": "y", "targets": two_targets()}).status_code == 409
    run_reply(replies[1]["messageId"])
    assert send(alice_client, alice_chat).status_code == 200


def test_a_compare_over_the_reply_cap_is_429_with_nothing_written(
    alice_client, alice, alice_chat, echo, echo2, settings, no_worker
):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 3
    other = actions.do_create_chat(alice)
    actions.do_send_message(alice, other, content="busy", model=echo, workflow=None)  # 1 in progress
    # 1 + 2 fits a cap of 3; 1 + 3 does not.
    three = [{"modelId": "echo"}, {"modelId": "echo2"}, {"modelId": "echo"}]
    response = compare(alice_client, alice_chat, {"content": "q", "targets": three})
    assert response.status_code == 429 and response.json()["error"] == "too_many_replies"
    assert "Retry-After" in response
    assert not Message.objects.filter(chat=alice_chat).exists()
    assert compare(alice_client, alice_chat, {"content": "q", "targets": two_targets()}).status_code == 201
    assert Message.objects.filter(chat__owner=alice, status="queued").count() == 3
