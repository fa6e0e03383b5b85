"""Share links (issue 18) through the API, in process: making, listing and revoking them, what a viewer sees,
expiry and audience, and that a link opens its chat's current branch and nothing else."""

import asyncio
import hashlib
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from chats.actions import do_create_api_key
from chats.event_schema import EVENT_TYPES, check_event
from chats.models import Chat, Message, Share
from chats.share_stream import viewer_event, watched
from chats.sharing import do_create_share, do_revoke_share, is_revoked, mark_revoked, message_ref

SOURCE = {
    "id": "src-1", "number": 1, "title": "Handbook", "snippet": "Cats sleep a lot.", "score": 0.9,
    "documentId": "11111111-1111-1111-1111-111111111111", "collectionId": "22222222-2222-2222-2222-222222222222",
    "page": 3, "start": 0, "end": 17,
}  # fmt: skip


def add(chat: Chat, role: str, content: str, parent: Message | None = None, **fields) -> Message:
    # created_at is set by hand: a tree's order must not depend on the clock's resolution.
    created = timezone.now() + timedelta(milliseconds=Message.objects.filter(chat=chat).count())
    status = fields.pop("status", "completed")
    return Message.objects.create(
        chat=chat, role=role, content=content, parent=parent, status=status, created_at=created, **fields
    )


@pytest.fixture
def branched_chat(alice_chat, shared_workflow):
    """q1 -> r1 -> q2 -> (r2 old, r2 regenerated): the current branch ends with the regenerated reply."""
    q1 = add(alice_chat, "user", "What do cats do?")
    r1 = add(
        alice_chat, "assistant", "They **sleep** [1].", q1, sources=[SOURCE], model_id="scripted",
        workflow=shared_workflow, prompt_tokens=5, completion_tokens=4,
        tool_calls=[{"callId": "call-9", "toolName": "lookup", "toolArgs": {"secret": "arg-secret"}, "result": "42"}],
    )  # fmt: skip
    q2 = add(alice_chat, "user", "And dogs?", r1)
    add(alice_chat, "assistant", "Old answer about dogs.", q2)
    add(alice_chat, "assistant", "Dogs play.", q2)
    return alice_chat


def read_body(response) -> str:
    """The whole body of an in-process SSE response (an async iterator)."""

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    return asyncio.run(collect())


def make_share(client, chat, **body):
    response = client.post(f"/api/chats/{chat.id}/shares", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_owner_makes_lists_and_revokes_a_link_and_only_its_hash_is_stored(alice_client, alice_chat, anon):
    made = make_share(alice_client, alice_chat)
    assert set(made) == {"id", "token", "url", "expiresAt", "audience", "createdAt"}
    assert made["audience"] == "anyone" and made["expiresAt"] is None
    assert made["url"].endswith(f"/s/{made['token']}")
    row = Share.objects.get(id=made["id"])
    assert row.token_hash == hashlib.sha256(made["token"].encode()).hexdigest()
    assert made["token"] not in json.dumps(list(Share.objects.values()), default=str)

    listed = alice_client.get(f"/api/chats/{alice_chat.id}/shares").json()["results"]
    assert [s["id"] for s in listed] == [made["id"]]
    assert "token" not in listed[0] and "url" not in listed[0]
    assert anon.get(f"/api/shares/{made['token']}").status_code == 200

    assert alice_client.delete(f"/api/chats/{alice_chat.id}/shares/{made['id']}").status_code == 204
    assert alice_client.get(f"/api/chats/{alice_chat.id}/shares").json()["results"] == []
    assert anon.get(f"/api/shares/{made['token']}").status_code == 404
    assert anon.get(f"/s/{made['token']}").status_code == 404
    # Revoked once is gone: revoking again is a 404, like an unknown share.
    assert alice_client.delete(f"/api/chats/{alice_chat.id}/shares/{made['id']}").status_code == 404


def test_a_viewer_sees_the_current_branch_and_nothing_that_leads_elsewhere(alice, alice_client, branched_chat, anon):
    made = make_share(alice_client, branched_chat)
    response = anon.get(f"/api/shares/{made['token']}")
    assert response.status_code == 200
    body = response.json()
    assert body["title"] == "Alice's chat"
    assert [m["content"] for m in body["messages"]] == [
        "What do cats do?", "They **sleep** [1].", "And dogs?", "Dogs play."
    ]  # fmt: skip
    reply = body["messages"][1]
    assert reply["sources"] == [{"number": 1, "title": "Handbook", "snippet": "Cats sleep a lot."}]
    assert reply["toolCalls"] == [{"toolName": "lookup", "result": "42"}]
    assert reply["finishReason"] == "" and reply["status"] == "completed"
    text = response.content.decode()
    workflow_id = str(branched_chat.messages.get(content="They **sleep** [1].").workflow_id)
    leaks = [str(alice.id), str(branched_chat.id), SOURCE["documentId"], SOURCE["collectionId"], "arg-secret",
             "call-9", "scripted", workflow_id, "alice", "Tokens"]  # fmt: skip
    leaks += [str(m.id) for m in branched_chat.messages.all()]
    assert not [leak for leak in leaks if leak in text]


def test_a_shared_reply_streams_with_its_events_cut_down_for_viewers(alice, alice_client, branched_chat, anon):
    made = make_share(alice_client, branched_chat)
    ref = anon.get(f"/api/shares/{made['token']}").json()["messages"][1]["ref"]
    response = anon.get(f"/api/shares/{made['token']}/messages/{ref}/stream")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    raw = read_body(response)
    blocks = [b for b in raw.split("\n\n") if b.startswith("id: ")]
    got = [json.loads(b.split("data: ", 1)[1]) for b in blocks]
    for event in got:
        check_event(event)
    assert [e["type"] for e in got] == ["start", "sources", "content", "end"]
    assert got[0] == {"type": "start", "messageId": ref, "chatId": None, "userMessageId": None, "model": "",
                      "workflowId": None}  # fmt: skip
    assert got[1]["sources"] == [{"number": 1, "title": "Handbook", "snippet": "Cats sleep a lot."}]
    assert got[3]["messageId"] == ref
    assert not [leak for leak in (str(branched_chat.id), str(alice.id), SOURCE["documentId"]) if leak in raw]
    # Resuming after the sources gives the rest once, as on the chat page.
    resumed = anon.get(f"/api/shares/{made['token']}/messages/{ref}/stream", HTTP_LAST_EVENT_ID="0-2")
    rest = read_body(resumed)
    assert [json.loads(b.split("data: ", 1)[1])["type"] for b in rest.split("\n\n") if b] == ["content", "end"]
    bad = anon.get(f"/api/shares/{made['token']}/messages/{ref}/stream", HTTP_LAST_EVENT_ID="nope")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_last_event_id"


def test_a_link_streams_only_replies_of_its_current_branch(alice_client, branched_chat, bob_chat, anon):
    made = make_share(alice_client, branched_chat)
    share = Share.objects.get(id=made["id"])
    old = branched_chat.messages.get(content="Old answer about dogs.")
    question = branched_chat.messages.get(content="And dogs?")
    other = Share.objects.create(chat=bob_chat, token_hash="f" * 64)
    bob_reply = add(bob_chat, "assistant", "Bob's reply")
    base = f"/api/shares/{made['token']}/messages"
    for ref in (message_ref(share, str(old.id)), str(old.id), message_ref(other, str(bob_reply.id)), "x" * 32):
        assert anon.get(f"{base}/{ref}/stream").status_code == 404, ref
    # A question is in the branch but has no event stream.
    assert anon.get(f"{base}/{message_ref(share, str(question.id))}/stream").status_code == 404


def test_unknown_revoked_and_expired_links_answer_the_same_404(alice_chat, anon):
    _, revoked = do_create_share(alice_chat)
    do_revoke_share(Share.objects.get(chat=alice_chat))
    share, expired = do_create_share(alice_chat, expires_at=timezone.now() + timedelta(seconds=60))
    Share.objects.filter(id=share.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    answers = set()
    for token in ("no-such-token", revoked, expired):
        response = anon.get(f"/api/shares/{token}")
        assert response.status_code == 404
        answers.add(response.content)
        page = anon.get(f"/s/{token}")
        assert page.status_code == 404 and b"no longer available" in page.content
        assert str(alice_chat.id).encode() not in page.content + response.content
    assert len(answers) == 1, answers


def test_expiry_from_seconds_or_a_time_and_bad_expiries(alice_client, alice_chat, anon):
    made = make_share(alice_client, alice_chat, expiresInSeconds=60)
    expires = timezone.datetime.fromisoformat(made["expiresAt"])
    assert timedelta(seconds=55) < expires - timezone.now() <= timedelta(seconds=60)
    later = (timezone.now() + timedelta(days=2)).isoformat()
    assert make_share(alice_client, alice_chat, expiresAt=later)["expiresAt"] is not None
    path = f"/api/chats/{alice_chat.id}/shares"
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    for body in ({"expiresAt": past}, {"expiresAt": later, "expiresInSeconds": 60}, {"expiresInSeconds": 0},
                 {"audience": "everyone"}, {"audience": 1}, {"expiresAt": "tomorrow"}):  # fmt: skip
        response = alice_client.post(path, body, format="json")
        assert response.status_code == 400 and response.json()["error"] == "invalid_request", body
    # An expired link leaves the list too.
    Share.objects.filter(id=made["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert made["id"] not in [s["id"] for s in alice_client.get(path).json()["results"]]
    assert anon.get(f"/api/shares/{made['token']}").status_code == 404


def test_a_link_for_logged_in_users_needs_a_session(alice_client, alice_chat, anon, bob_client):
    made = make_share(alice_client, alice_chat, audience="logged_in")
    assert made["audience"] == "logged_in"
    response = anon.get(f"/api/shares/{made['token']}")
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"
    page = anon.get(f"/s/{made['token']}")
    assert page.status_code == 302 and page["Location"].startswith("/login?next=/s/")
    assert bob_client.get(f"/api/shares/{made['token']}").status_code == 200
    assert bob_client.get(f"/s/{made['token']}").status_code == 200


def test_bob_cannot_share_list_or_revoke_alices_links(alice_client, alice_chat, bob_client, bob_chat, anon):
    made = make_share(alice_client, alice_chat)
    base = f"/api/chats/{alice_chat.id}/shares"
    assert bob_client.post(base, {}, format="json").status_code == 403
    assert bob_client.get(base).status_code == 403
    assert bob_client.delete(f"{base}/{made['id']}").status_code == 403
    # Through his own chat, her share does not exist.
    assert bob_client.delete(f"/api/chats/{bob_chat.id}/shares/{made['id']}").status_code == 404
    assert anon.post(base, {}, format="json").status_code == 401
    assert anon.get(base).status_code == 401
    assert alice_client.get("/api/chats/00000000-0000-0000-0000-000000000000/shares").status_code == 404
    assert Share.objects.get(id=made["id"]).revoked_at is None


def test_a_token_opens_nothing_else(alice, alice_client, branched_chat, anon):
    made = make_share(alice_client, branched_chat)
    token = made["token"]
    reply = branched_chat.messages.get(content="Dogs play.")
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    for path in ("/api/chats", f"/api/chats/{branched_chat.id}", f"/api/chats/{branched_chat.id}/messages",
                 f"/api/chats/{branched_chat.id}/shares", "/api/documents", "/api/auth/me"):  # fmt: skip
        assert bearer.get(path).status_code == 401, path
        assert anon.get(path).status_code == 401, path
    assert bearer.post(f"/api/chats/{branched_chat.id}/messages/{reply.id}/cancel").status_code == 401
    # The token is no chat id, and a share's message reference is no message id.
    assert alice_client.get(f"/api/chats/{token}").status_code == 404
    ref = anon.get(f"/api/shares/{token}").json()["messages"][-1]["ref"]
    assert alice_client.get(f"/api/chats/{branched_chat.id}/messages/{ref}/stream").status_code == 404
    # Sharing one chat shows nothing of the owner's other chats.
    add(Chat.objects.create(owner=alice, title="Private"), "user", "alice private words")
    assert "alice private words" not in anon.get(f"/api/shares/{token}").content.decode()


def test_api_keys_and_csrf_on_share_writes(alice, alice_chat):
    _, full_key = do_create_api_key(alice, name="full")
    _, read_key = do_create_api_key(alice, name="read", read_only=True)
    path = f"/api/chats/{alice_chat.id}/shares"
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key}")
    made = keyed.post(path, {"audience": "logged_in"}, format="json")
    assert made.status_code == 201
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert reader.get(path).status_code == 200
    assert reader.post(path, {}, format="json").status_code == 403
    assert reader.delete(f"{path}/{made.json()['id']}").status_code == 403
    # A logged-in-only link opens with an API key too (the key's owner is logged in).
    assert reader.get(f"/api/shares/{made.json()['token']}").status_code == 200
    no_csrf = APIClient(enforce_csrf_checks=True)
    no_csrf.force_login(alice)
    response = no_csrf.post(path, {}, format="json")
    assert response.status_code == 403 and response.json()["error"] == "csrf_failed"
    assert keyed.delete(f"{path}/{made.json()['id']}").status_code == 204


def test_every_viewer_event_keeps_the_contract_and_leaks_nothing():
    samples = [
        {"type": "start", "messageId": "m-secret", "chatId": "c-secret", "userMessageId": "q-secret",
         "model": "model-secret", "workflowId": "w-secret"},
        {"type": "queued", "position": 2},
        {"type": "step", "step": "sql", "state": "finished", "index": 1, "rowCount": 3, "columns": ["col-secret"],
         "sql": "SELECT secret FROM t", "connector": "db-secret", "rows": [["row-secret"]]},
        {"type": "sources", "sources": [SOURCE]},
        {"type": "content", "delta": "hi"},
        {"type": "tool_call", "callId": "c1", "toolName": "calc", "toolArgs": {"x": "arg-secret"}},
        {"type": "tool_result", "callId": "c1", "toolName": "calc", "result": {"value": 4}},
        {"type": "tool_result", "callId": "c1", "toolName": "calc", "result": None, "error": "failed"},
        {"type": "end", "messageId": "m-secret", "finishReason": "stop",
         "usage": {"promptTokens": 1, "completionTokens": 2}, "quotaLeft": 99},
        {"type": "error", "error": "failed", "message": "It failed.", "retryable": True},
    ]  # fmt: skip
    assert {s["type"] for s in samples} == set(EVENT_TYPES)
    for sample in samples:
        check_event(sample)
        shown = viewer_event(sample, "ref-1")
        check_event(shown)
        text = json.dumps(shown)
        assert "secret" not in text and "quotaLeft" not in text and SOURCE["documentId"] not in text, text
    assert viewer_event({"type": "internal", "x": 1}, "ref-1") is None
    assert viewer_event(samples[6], "r")["result"] == '{"value":4}'


def test_revoking_ends_an_open_viewer_stream_within_the_check_interval(alice_chat, settings):
    """The relay's watcher, over a reply that sends nothing: the revoked flag (set by `do_revoke_share`, which
    the live test goes through) ends it with `share_unavailable`."""
    share, _ = do_create_share(alice_chat)

    async def silent():
        yield b": connected\n\n"
        await asyncio.sleep(3600)
        yield b""

    async def watch() -> tuple[list[bytes], float]:
        chunks, revoked_at = [], None
        async for chunk in watched(silent(), str(share.id), None, "ref"):
            chunks.append(chunk)
            if revoked_at is None:
                revoked_at = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(None, mark_revoked, str(share.id))
        return chunks, time.monotonic() - revoked_at

    chunks, took = asyncio.run(watch())
    assert chunks[0] == b": connected\n\n"
    assert json.loads(chunks[-1].decode().split("data: ", 1)[1])["error"] == "share_unavailable"
    assert took < settings.CHATSITE_SHARE_CHECK_SECONDS + 0.5, took


def test_an_expiring_link_ends_its_open_streams(alice_chat):
    share, _ = do_create_share(alice_chat)

    async def silent():
        await asyncio.sleep(3600)
        yield b""

    async def watch() -> list[bytes]:
        return [c async for c in watched(silent(), str(share.id), timezone.now() + timedelta(seconds=0.3), "r")]

    started = time.monotonic()
    chunks = asyncio.run(watch())
    assert len(chunks) == 1 and b"share_unavailable" in chunks[0]
    assert time.monotonic() - started < 1.5


def test_in_embedded_mode_the_revoked_flag_lives_in_the_process(alice_chat, settings):
    settings.CHATSITE_EMBEDDED = True
    share, _ = do_create_share(alice_chat)
    assert asyncio.run(is_revoked(str(share.id))) is False
    do_revoke_share(share)
    assert asyncio.run(is_revoked(str(share.id))) is True
