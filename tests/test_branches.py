"""Edit a sent message, and branches (issue 18): `POST .../messages/<id>/edit`, `GET .../messages?branch=`,
`siblingIds`, and `parentId` on a send. Replies are generated in-process by the runner (scripted provider)."""

import json
import uuid

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chats import actions
from chats.models import Chat, Message
from pipelines.models import ModelConfig
from pipelines.runner import run_reply
from tests.live import new_chat, read_sse, send


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


def turn(chat, model, content: str, parent_id=None) -> tuple[Message, Message]:
    question, reply, _ = actions.do_send_message(
        chat.owner, chat, content=content, model=model, workflow=None, parent_id=parent_id
    )
    run_reply(str(reply.id))
    reply.refresh_from_db()
    return question, reply


def edit(client, chat, message, data):
    return client.post(
        f"/api/chats/{chat.id}/messages/{message.id}/edit", data, format="json", HTTP_ACCEPT="text/event-stream"
    )


def listing(client, chat, branch=None):
    query = f"?branch={branch}" if branch is not None else ""
    return client.get(f"/api/chats/{chat.id}/messages{query}")


def prompt_of(reply: Message) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in json.loads(reply.content)]


def test_edit_makes_a_sibling_question_whose_reply_sees_only_its_own_branch(alice_client, alice_chat, echo, no_worker):
    _q1, a1 = turn(alice_chat, echo, "first question")
    q2, a2 = turn(alice_chat, echo, "second question")
    response = edit(alice_client, alice_chat, q2, {"content": "second question, edited"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    new_q = Message.objects.get(chat=alice_chat, role="user", content="second question, edited")
    new_a = Message.objects.get(parent=new_q)
    assert str(new_q.parent_id) == str(q2.parent_id) == str(a1.id) and new_q.model_id == "echo"
    assert new_a.status == "queued" and new_a.role == "assistant"
    assert run_reply(str(new_a.id)) == "completed"
    new_a.refresh_from_db()
    assert prompt_of(new_a) == [
        ("user", "first question"),
        ("assistant", a1.content),
        ("user", "second question, edited"),
    ]
    # The old branch is intact.
    q2.refresh_from_db()
    a2.refresh_from_db()
    assert (q2.content, a2.parent_id, a2.status) == ("second question", q2.id, "completed")
    assert Message.objects.filter(chat=alice_chat).count() == 6


def test_edit_keeps_the_attachments_and_may_change_the_model(alice_client, alice_chat, echo, scripted_model, no_worker):
    question, _ = turn(alice_chat, echo, "with a document")
    document_id = str(uuid.uuid4())
    Message.objects.filter(id=question.id).update(attachments=[document_id])
    assert edit(alice_client, alice_chat, question, {"content": "again", "modelId": "scripted"}).status_code == 200
    new_q = Message.objects.get(chat=alice_chat, content="again")
    assert new_q.attachments == [document_id] and new_q.parent_id is None
    assert Message.objects.get(parent=new_q).model_id == "scripted"


def test_sibling_ids_and_branches_over_the_api(alice_client, alice_chat, echo, no_worker):
    q1, a1 = turn(alice_chat, echo, "one")
    q2, a2 = turn(alice_chat, echo, "two")
    edit(alice_client, alice_chat, q2, {"content": "two, edited"})
    q2b = Message.objects.get(content="two, edited")
    a2b = Message.objects.get(parent=q2b)
    run_reply(str(a2b.id))

    everything = listing(alice_client, alice_chat).json()["results"]
    assert [m["id"] for m in everything] == [str(m.id) for m in (q1, a1, q2, a2, q2b, a2b)]
    siblings = {m["id"]: m["siblingIds"] for m in everything}
    assert siblings[str(q2.id)] == siblings[str(q2b.id)] == [str(q2.id), str(q2b.id)]
    assert siblings[str(q1.id)] == [str(q1.id)] and siblings[str(a2.id)] == [str(a2.id)]

    old = listing(alice_client, alice_chat, a2.id).json()["results"]
    assert [m["id"] for m in old] == [str(q1.id), str(a1.id), str(q2.id), str(a2.id)]
    assert old[2]["siblingIds"] == [str(q2.id), str(q2b.id)]
    latest = listing(alice_client, alice_chat, "latest").json()["results"]
    assert [m["id"] for m in latest] == [str(q1.id), str(a1.id), str(q2b.id), str(a2b.id)]
    # A branch may end at any message, not only a leaf.
    assert [m["id"] for m in listing(alice_client, alice_chat, q1.id).json()["results"]] == [str(q1.id)]


def test_regenerated_replies_are_siblings(alice_client, alice_chat, echo, no_worker):
    _question, first = turn(alice_chat, echo, "q")
    second = actions.do_regenerate_reply(alice_chat, first, model=echo, workflow=None)
    listed = {m["id"]: m["siblingIds"] for m in listing(alice_client, alice_chat).json()["results"]}
    assert listed[str(first.id)] == listed[str(second.id)] == [str(first.id), str(second.id)]


def test_the_branch_list_takes_a_bounded_number_of_queries(alice_client, alice_chat, echo, no_worker):
    for i in range(6):
        turn(alice_chat, echo, f"question {i}")
    with CaptureQueriesContext(connection) as queries:
        assert listing(alice_client, alice_chat, "latest").status_code == 200
    few = len(queries)
    for i in range(6):
        turn(alice_chat, echo, f"more {i}")
    with CaptureQueriesContext(connection) as queries:
        assert len(listing(alice_client, alice_chat, "latest").json()["results"]) == 24
    assert len(queries) == few <= 6


def test_branch_of_an_empty_chat_and_bad_branch_ids(alice_client, alice_chat, bob_chat, echo, no_worker):
    assert listing(alice_client, alice_chat, "latest").json()["results"] == []
    assert listing(alice_client, alice_chat, "not-a-uuid").status_code == 400
    assert listing(alice_client, alice_chat, uuid.uuid4()).status_code == 404
    _, bobs_reply = turn(bob_chat, echo, "bob's")
    response = listing(alice_client, alice_chat, bobs_reply.id)
    assert response.status_code == 404 and "bob's" not in response.content.decode()


def test_a_send_with_parent_id_continues_that_branch(alice_client, alice, alice_chat, echo, no_worker):
    _q1, a1 = turn(alice_chat, echo, "one")
    q2, a2 = turn(alice_chat, echo, "two")
    edit(alice_client, alice_chat, q2, {"content": "two, edited"})
    run_reply(str(Message.objects.get(parent__content="two, edited").id))
    body = {"content": "three", "modelId": "echo", "userId": str(alice.id), "parentId": str(a2.id)}
    response = alice_client.post(f"/api/chats/{alice_chat.id}/messages/stream", body, format="json")
    assert response.status_code == 200
    q3 = Message.objects.get(content="three")
    a3 = Message.objects.get(parent=q3)
    assert q3.parent_id == a2.id
    run_reply(str(a3.id))
    a3.refresh_from_db()
    assert [c for _, c in prompt_of(a3)] == ["one", a1.content, "two", a2.content, "three"]
    # Without parentId the send still follows the newest message.
    _, a4 = turn(alice_chat, echo, "four")
    assert a4.parent.parent_id == a3.id


@pytest.mark.parametrize("parent", ["elsewhere", "unknown", "not-a-uuid", 42])
def test_a_parent_id_not_in_the_chat_is_400_and_writes_nothing(
    alice_client, alice, alice_chat, bob_chat, echo, no_worker, parent
):
    _, bobs = turn(bob_chat, echo, "bob's")
    parent_id = {"elsewhere": str(bobs.id), "unknown": str(uuid.uuid4())}.get(parent, parent)
    before = Message.objects.count()
    body = {"content": "x", "modelId": "echo", "userId": str(alice.id), "parentId": parent_id}
    response = alice_client.post(f"/api/chats/{alice_chat.id}/messages/stream", body, format="json")
    assert response.status_code == 400 and "parentId" in response.json()["fields"]
    assert Message.objects.count() == before


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "  \n"}, "content"),
        ({"content": None}, "content"),
        ({"content": 42}, "content"),
        ({"content": ["a"]}, "content"),
        ({"content": "x" * (settings.CHATSITE_MAX_MESSAGE_CHARS + 1)}, "content"),
        ({"content": "ok", "modelId": "gpt-99"}, "modelId"),
        ({"content": "ok", "modelId": 7}, "modelId"),
        ({"content": "ok", "workflowId": str(uuid.uuid4())}, "workflowId"),
    ],
)
def test_a_bad_edit_is_400_and_writes_nothing(alice_client, alice_chat, echo, no_worker, data, field):
    question, _ = turn(alice_chat, echo, "q")
    response = edit(alice_client, alice_chat, question, data)
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert Message.objects.count() == 2


def test_editing_a_reply_is_400(alice_client, alice_chat, echo, no_worker):
    _, reply = turn(alice_chat, echo, "q")
    response = edit(alice_client, alice_chat, reply, {"content": "new"})
    assert response.status_code == 400 and "messageId" in response.json()["fields"]
    assert Message.objects.count() == 2


def test_an_edit_while_a_reply_is_running_is_409(alice_client, alice_chat, echo, no_worker):
    question, _ = turn(alice_chat, echo, "q")
    _, running, _ = actions.do_send_message(alice_chat.owner, alice_chat, content="r", model=echo, workflow=None)
    response = edit(alice_client, alice_chat, question, {"content": "new"})
    assert response.status_code == 409
    assert response.json()["error"] == "reply_in_progress" and response.json()["messageId"] == str(running.id)
    assert Message.objects.count() == 4


def test_bob_cannot_edit_or_list_alices_chat(bob_client, anon, alice_client, alice_chat, bob_chat, echo, no_worker):
    question, _ = turn(alice_chat, echo, "alice secret")
    for client, status in ((bob_client, 403), (anon, 401)):
        response = edit(client, alice_chat, question, {"content": "hijack"})
        assert response.status_code == status and "alice secret" not in response.content.decode()
        assert listing(client, alice_chat, question.id).status_code == status
    # A message of another chat (even her own), or none, is 404; bob's chat is 403.
    other = Chat.objects.create(owner=alice_chat.owner, title="other")
    assert edit(alice_client, other, question, {"content": "x"}).status_code == 404
    assert edit(alice_client, bob_chat, question, {"content": "x"}).status_code == 403
    assert edit(alice_client, alice_chat, Message(id=uuid.uuid4()), {"content": "x"}).status_code == 404
    assert not Message.objects.filter(content__in=("hijack", "x")).exists()


@pytest.mark.e2e
def test_an_edit_streams_its_reply_like_a_send(session, carol, scripted_model):
    client, token = session
    chat_id = new_chat(client, token)
    first = send(client, token, chat_id, carol, "Question?")
    question_id = first.events[0]["userMessageId"]
    scripted_model.options = {"script": ["Edited", " answer"]}
    scripted_model.save()
    again = read_sse(
        client, "POST", f"/api/chats/{chat_id}/messages/{question_id}/edit", token=token, json={"content": "Better?"}
    )
    assert again.status == 200 and again.types[0] == "start" and again.types[-1] == "end"
    assert again.events[0]["userMessageId"] != question_id
    new_question = Message.objects.get(id=again.events[0]["userMessageId"])
    assert new_question.content == "Better?" and new_question.parent_id is None
    latest = client.get(f"/api/chats/{chat_id}/messages?branch=latest").json()["results"]
    assert [m["content"] for m in latest] == ["Better?", "Edited answer"]
    assert latest[0]["siblingIds"] == [question_id, str(new_question.id)]
