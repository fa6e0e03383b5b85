"""Models side by side (issue 18) on the live stack (daphne, a Celery worker, Redis, PostgreSQL): a compare's
replies each stream on their resume stream, read at the same time by one client, and end with the saved text."""

import threading

import pytest

from chats.models import Message
from pipelines.models import ModelConfig
from tests.live import new_chat, resume

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_both_replies_of_a_compare_stream_and_end_with_the_saved_text(session, carol, scripted_model):
    scripted_model.options = {"script": ["Alpha", " one", " two"], "delay": 0.05}
    scripted_model.save()
    ModelConfig.objects.create(
        model_id="scripted-b",
        display_name="Scripted B",
        provider="scripted",
        context_window=1000,
        options={"script": ["Beta", " three", " four"], "delay": 0.05},
    )
    client, token = session
    chat_id = new_chat(client, token)
    body = {
        "content": "Which is better?",
        "userId": str(carol.id),
        "targets": [{"modelId": "scripted"}, {"modelId": "scripted-b"}],
    }
    response = client.post(f"/api/chats/{chat_id}/messages/compare", json=body, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.text
    answer = response.json()
    ids = [r["messageId"] for r in answer["replies"]]

    # While the replies run, a send in the chat is refused.
    blocked = client.post(
        f"/api/chats/{chat_id}/messages/stream",
        json={"content": "too soon", "modelId": "scripted", "userId": str(carol.id)},
        headers={"X-CSRFToken": token},
    )
    assert blocked.status_code == 409

    received = {}

    def read(message_id: str) -> None:
        received[message_id] = resume(client, chat_id, message_id)

    threads = [threading.Thread(target=read, args=(message_id,)) for message_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for message_id, expected in zip(ids, ["Alpha one two", "Beta three four"], strict=True):
        stream = received[message_id]
        assert stream.status == 200 and stream.types[0] == "start" and stream.types[-1] == "end", stream.types
        saved = Message.objects.get(id=message_id)
        assert saved.status == "completed" and stream.text == saved.content == expected
        assert str(saved.parent_id) == answer["questionId"]
    listed = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
    siblings = {m["id"]: m["siblingIds"] for m in listed}
    assert siblings[ids[0]] == siblings[ids[1]] == ids
