"""Share links end to end (issue 18), in full mode (daphne, a Celery worker, Redis, PostgreSQL): a viewer with
no session watches a reply stream through a link, resumes it with Last-Event-ID, and is cut off when the owner
revokes the link."""

import threading
import time

import httpx
import pytest

from tests.live import entry_key, new_chat, read_sse, resume, send

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def make_share(client: httpx.Client, token: str, chat_id: str) -> dict:
    response = client.post(f"/api/chats/{chat_id}/shares", json={}, headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.text
    return response.json()


def streaming_ref(viewer: httpx.Client, share_token: str) -> str:
    """The share reference of the reply being written, once the shared chat shows it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = viewer.get(f"/api/shares/{share_token}").json()["messages"]
        running = [m for m in messages if m["role"] == "assistant" and m["status"] in ("queued", "streaming")]
        if running:
            return running[-1]["ref"]
        time.sleep(0.05)
    raise AssertionError("the shared chat never showed a reply in progress")


def test_a_viewer_without_a_session_resumes_a_streaming_reply(live_stack, session, carol, scripted_model):
    script = [f" w{i}" for i in range(20)]
    scripted_model.options = {"script": script, "delay": 0.1}
    scripted_model.save()
    client, token = session
    chat_id = new_chat(client, token)
    share = make_share(client, token, chat_id)
    started = send(client, token, chat_id, carol, "count", stop_after=1)  # the owner leaves; the reply goes on
    message_id = started.events[0]["messageId"]
    with httpx.Client(base_url=live_stack.base_url, timeout=30) as viewer:
        ref = streaming_ref(viewer, share["token"])
        path = f"/api/shares/{share['token']}/messages/{ref}/stream"
        first = read_sse(viewer, "GET", path, stop_after=4)
        assert first.status == 200 and first.types[0] == "start"
        assert first.events[0]["messageId"] == ref and first.events[0]["chatId"] is None
        rest = read_sse(viewer, "GET", path, headers={"Last-Event-ID": first.ids[-1]})
    assert rest.status == 200
    events, ids = first.events + rest.events, first.ids + rest.ids
    assert [e["type"] for e in events] == ["start"] + ["content"] * len(script) + ["end"]
    assert "".join(e["delta"] for e in events if e["type"] == "content") == "".join(script)
    assert len(set(ids)) == len(ids) and ids == sorted(ids, key=entry_key)
    assert events[-1]["messageId"] == ref
    # The same events, with the same ids, as the owner's own resume of the reply.
    owner = resume(client, chat_id, message_id)
    assert owner.ids == ids
    assert [e.get("delta") for e in owner.events] == [e.get("delta") for e in events]
    body = str(events)
    assert chat_id not in body and message_id not in body and str(carol.id) not in body


def test_revoking_a_link_ends_its_viewers_stream_at_once(live_stack, session, carol, scripted_model):
    scripted_model.options = {"script": [f" w{i}" for i in range(150)], "delay": 0.1}
    scripted_model.save()
    client, token = session
    chat_id = new_chat(client, token)
    share = make_share(client, token, chat_id)
    message_id = send(client, token, chat_id, carol, "count", stop_after=1).events[0]["messageId"]
    received = {}
    with httpx.Client(base_url=live_stack.base_url, timeout=30) as viewer:
        ref = streaming_ref(viewer, share["token"])
        path = f"/api/shares/{share['token']}/messages/{ref}/stream"
        watcher = threading.Thread(target=lambda: received.update(seen=read_sse(viewer, "GET", path)))
        watcher.start()
        time.sleep(1.0)  # the viewer is watching the reply's text arrive
        revoked_at = time.time()
        response = client.delete(f"/api/chats/{chat_id}/shares/{share['id']}", headers={"X-CSRFToken": token})
        assert response.status_code == 204
        watcher.join(timeout=10)
        assert not watcher.is_alive(), "the viewer's stream did not end after the link was revoked"
        seen = received["seen"]
        assert seen.status == 200 and "content" in seen.types
        assert seen.events[-1] == {
            "type": "error",
            "error": "share_unavailable",
            "message": "This share link does not exist or is no longer available.",
            "retryable": False,
        }
        took = seen.arrived[-1] - revoked_at
        print(f"viewer stream ended {took * 1000:.0f} ms after the revocation request was sent")
        assert took < 1.5, took
        assert viewer.get(f"/api/shares/{share['token']}").status_code == 404
        assert viewer.get(f"/s/{share['token']}").status_code == 404
        assert viewer.get(path).status_code == 404
    # Only the viewer was cut off: the owner still follows the reply, which goes on.
    owner = resume(client, chat_id, message_id, stop_after=3)
    assert owner.status == 200 and owner.types[0] == "start"
    response = client.post(f"/api/chats/{chat_id}/messages/{message_id}/cancel", headers={"X-CSRFToken": token})
    assert response.status_code == 200
