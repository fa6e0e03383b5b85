"""A resume's Last-Event-ID (header or `lastEventId` query parameter) is checked before any stream is read:
its form and Redis's limits (two unsigned 64-bit integers), then against the reply's stream, or the saved reply
once the stream is gone. Anything else is 400 `invalid_last_event_id` with a sentence (issue 13, finding 4)."""

from urllib.parse import urlencode

import pytest
from django.utils import timezone

from chats import events
from chats.bus import MAX_ID_PART, parse_entry_id
from chats.models import Message
from chats.streaming import LastEventIdError, parse_last_event_id

MAX = str(MAX_ID_PART)

VALID = ["0-0", "0-1", "1-0", "1700000000000-3", f"{MAX}-{MAX}", f"{MAX}-0", f"0-{MAX}"]
MALFORMED = [
    "", "garbage", "1", "12-", "-12", "-", "+", "$", ">", "*", "-1-0", "1--1", "+1-0", "1-+0", "01-0", "1-00",
    "00-0", " 1-0", "1-0 ", "1 -0", "1- 0", "1-0\n", "1-2-3", "1-0,2-0", "0x1-0", "1e3-0", "1_000-0", "1.0-0",
    "\u0661-\u0660", "\uff11-\uff10", "\u00b2-0", "1-0\x00", "(1-0", "1-0" + "0" * 10_000,
]  # fmt: skip
OUT_OF_RANGE = [
    "1-99999999999999999999999", f"{MAX_ID_PART + 1}-0", f"0-{MAX_ID_PART + 1}", "9" * 20 + "-0", "1" + "0" * 30 + "-1",
]  # fmt: skip
# As a client can send them (HTTP drops the spaces around a header's value; an empty one means no id).
SENDABLE = [v for v in MALFORMED if v and v == v.strip() and v.isprintable()] + OUT_OF_RANGE


@pytest.mark.parametrize("value", VALID)
def test_ids_within_redis_limits_are_read(value):
    ms, seq = value.split("-")
    assert parse_entry_id(value) == parse_last_event_id(value) == (int(ms), int(seq))


@pytest.mark.parametrize("value", MALFORMED)
def test_anything_but_two_canonical_numbers_is_refused(value):
    with pytest.raises(ValueError):
        parse_entry_id(value)
    with pytest.raises(LastEventIdError, match="is not an event id"):
        parse_last_event_id(value)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_parts_above_two_to_the_64_are_refused_as_out_of_range(value):
    with pytest.raises(ValueError):
        parse_entry_id(value)
    with pytest.raises(LastEventIdError, match="out of range"):
        parse_last_event_id(value)


# --- through the API ---


@pytest.fixture
def full_mode(settings):
    settings.CHATSITE_EMBEDDED = False


def reply(chat, status=Message.Status.COMPLETED, content="Hello") -> Message:
    return Message.objects.create(
        chat=chat,
        role=Message.Role.ASSISTANT,
        status=status,
        content=content,
        model_id="scripted",
        created_at=timezone.now(),
        prompt_tokens=1,
        completion_tokens=1,
    )


def resume(client, message, *, header=None, query=None):
    url = f"/api/chats/{message.chat_id}/messages/{message.id}/stream"
    if query is not None:
        url += "?" + urlencode({"lastEventId": query})
    extra = {"HTTP_LAST_EVENT_ID": header} if header is not None else {}
    return client.get(url, HTTP_ACCEPT="text/event-stream", **extra)


def assert_refused(response, *words: str) -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_last_event_id"
    assert body["fields"]["lastEventId"] == [body["message"]]
    for word in words:
        assert word in body["message"]
    return body["message"]


def published(message, count: int) -> list[str]:
    publisher = events.EventPublisher()
    return [publisher.publish(str(message.id), events.content_event(f"{n} ")).entry_id for n in range(count)]


@pytest.mark.parametrize("value", SENDABLE)
@pytest.mark.parametrize("where", ["header", "query"])
def test_a_bad_id_in_the_header_or_the_query_is_400(full_mode, alice_client, alice_chat, value, where):
    message = reply(alice_chat, status=Message.Status.STREAMING)
    published(message, 2)
    assert_refused(resume(alice_client, message, **{where: value}), "Last-Event-ID")


def test_ids_beyond_the_streams_last_event_are_400(full_mode, alice_client, alice_chat):
    message = reply(alice_chat, status=Message.Status.STREAMING)
    ids = published(message, 3)
    ms, seq = parse_entry_id(ids[-1])
    for beyond in (f"{ms}-{seq + 1}", f"{ms + 1}-0", f"{MAX}-{MAX}", "99999999999999-0"):
        for where in ("header", "query"):
            assert_refused(resume(alice_client, message, **{where: beyond}), "beyond", ids[-1])
    for fine in ("0-0", ids[0], ids[-1], f"{ms}-0"):
        response = resume(alice_client, message, header=fine)
        assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"


def test_the_header_wins_and_surrounding_spaces_or_an_empty_value_are_ignored(full_mode, alice_client, alice_chat):
    message = reply(alice_chat, status=Message.Status.STREAMING)
    ids = published(message, 1)
    assert resume(alice_client, message, header=f" \t{ids[0]} ").status_code == 200
    assert resume(alice_client, message, header="", query=ids[0]).status_code == 200
    assert resume(alice_client, message, header=ids[0], query="garbage").status_code == 200
    assert_refused(resume(alice_client, message, header="garbage", query=ids[0]), "garbage")


def test_a_reply_with_no_events_yet_takes_only_0_0(full_mode, alice_client, alice_chat):
    message = reply(alice_chat, status=Message.Status.QUEUED, content="")
    assert resume(alice_client, message, header="0-0").status_code == 200
    assert_refused(resume(alice_client, message, header="1-0"), "none yet")
    assert_refused(resume(alice_client, message, query="0-1"), "none yet")


def test_a_finished_reply_whose_stream_is_gone_takes_only_its_replay_ids(full_mode, alice_client, alice_chat):
    message = reply(alice_chat)  # start 0-1, content 0-2, end 0-3
    assert resume(alice_client, message, header="0-0").status_code == 200
    assert resume(alice_client, message, header="0-3").status_code == 200
    assert_refused(resume(alice_client, message, header="0-4"), "beyond", "0-3")
    assert_refused(resume(alice_client, message, query=f"0-{MAX}"), "beyond")
    assert_refused(resume(alice_client, message, header="1700000000000-0"), "expired")


def test_someone_elses_reply_is_403_whatever_the_id(full_mode, bob_client, alice_chat):
    message = reply(alice_chat)
    assert resume(bob_client, message, header="garbage").status_code == 403
