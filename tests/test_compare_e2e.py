"""Models side by side (issue 18) on the live stack (daphne, a Celery worker, Redis, PostgreSQL): a compare's
replies each stream on their resume stream, read at the same time by one client, and end with the saved text."""

import threading

import pytest
from django.conf import settings

from chats.models import Message
from pipelines.models import ModelConfig
from tests.conftest import E2E_PASSWORD, _test_database_url
from tests.live import login, new_chat, resume

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def second_model(delay: float) -> ModelConfig:
    return ModelConfig.objects.create(
        model_id="scripted-b",
        display_name="Scripted B",
        provider="scripted",
        context_window=1000,
        options={"script": ["Beta", " three", " four"], "delay": delay},
    )


def start_compare(client, token: str, chat_id: str, carol) -> dict:
    body = {
        "content": "Which is better?",
        "userId": str(carol.id),
        "targets": [{"modelId": "scripted"}, {"modelId": "scripted-b"}],
    }
    response = client.post(f"/api/chats/{chat_id}/messages/compare", json=body, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.text
    return response.json()


def read_all(client, chat_id: str, ids: list[str]) -> dict:
    """Read every reply's resume stream at the same time (one thread each), to its end."""
    received = {}

    def read(message_id: str) -> None:
        received[message_id] = resume(client, chat_id, message_id)

    threads = [threading.Thread(target=read, args=(message_id,)) for message_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return received


def test_both_replies_of_a_compare_stream_and_end_with_the_saved_text(session, carol, scripted_model):
    scripted_model.options = {"script": ["Alpha", " one", " two"], "delay": 0.05}
    scripted_model.save()
    second_model(0.05)
    client, token = session
    chat_id = new_chat(client, token)
    answer = start_compare(client, token, chat_id, carol)
    ids = [r["messageId"] for r in answer["replies"]]

    # While the replies run, a send in the chat is refused.
    blocked = client.post(
        f"/api/chats/{chat_id}/messages/stream",
        json={"content": "too soon", "modelId": "scripted", "userId": str(carol.id)},
        headers={"X-CSRFToken": token},
    )
    assert blocked.status_code == 409

    received = read_all(client, chat_id, ids)
    for message_id, expected in zip(ids, ["Alpha one two", "Beta three four"], strict=True):
        stream = received[message_id]
        assert stream.status == 200 and stream.types[0] == "start" and stream.types[-1] == "end", stream.types
        saved = Message.objects.get(id=message_id)
        assert saved.status == "completed" and stream.text == saved.content == expected
        assert str(saved.parent_id) == answer["questionId"]
    listed = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
    siblings = {m["id"]: m["siblingIds"] for m in listed}
    assert siblings[ids[0]] == siblings[ids[1]] == ids


@pytest.fixture(scope="module")
def two_worker_stack(django_db_setup, django_db_blocker):
    """A full stack whose Celery worker has two processes: enough slots for a compare's two replies at once."""
    from tests.live import start_stack

    stack = start_stack(_test_database_url(), settings.REDIS_URL, concurrency=2)
    yield stack
    stack.stop()


def test_with_two_worker_slots_the_replies_generate_at_the_same_time(two_worker_stack, carol, scripted_model):
    scripted_model.options = {"script": ["Alpha", " one", " two", " three", " four"], "delay": 0.3}
    scripted_model.save()
    second_model(0.3)
    client, token = login(two_worker_stack.base_url, carol.username, E2E_PASSWORD)
    try:
        chat_id = new_chat(client, token)
        ids = [r["messageId"] for r in start_compare(client, token, chat_id, carol)["replies"]]
        received = read_all(client, chat_id, ids)
    finally:
        client.close()
    first, second = (received[i] for i in ids)
    assert first.types[-1] == second.types[-1] == "end"
    # Each reply's first words reached the client before the other reply ended: they streamed together.
    assert first.arrived[first.types.index("content")] < second.arrived[-1]
    assert second.arrived[second.types.index("content")] < first.arrived[-1]
    assert [first.text, second.text] == [Message.objects.get(id=i).content for i in ids]
