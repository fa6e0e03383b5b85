"""The reply-event contract (chats.event_schema) is the one home of the event types: the OpenAPI document, the
browser's handlers and the events the worker publishes all agree with it."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from chats.event_schema import EVENT_TYPES, check_event, end_event, error_event, step_event, tool_result_event


def test_the_openapi_document_describes_every_event_type_and_field(anon):
    schema = anon.get("/api/schema", HTTP_ACCEPT="application/json").json()
    stream = schema["paths"]["/api/chats/{chat_id}/messages/stream"]["post"]["responses"]["200"]
    description = stream["description"]
    for kind in EVENT_TYPES.values():
        assert f"`{kind.name}`" in description
        for name in [*kind.required, *kind.optional]:
            assert name in description, (kind.name, name)


def test_the_browser_handles_every_event_type():
    script = (Path(settings.BASE_DIR) / "static" / "chatsite" / "app.js").read_text()
    handled = set(re.findall(r'data\.type === "([a-z_]+)"', script))
    assert handled == set(EVENT_TYPES), (set(EVENT_TYPES) - handled, handled - set(EVENT_TYPES))


def test_constructors_build_events_the_contract_accepts():
    for event in (
        end_event(message_id="m", finish_reason="stop", prompt_tokens=1, completion_tokens=2, quota_left=5),
        error_event(code="x", message="y", retryable=False),
        step_event("sql", "finished", 2, rowCount=3, columns=["a"]),
        tool_result_event("c", "calculator", {"error": "bad"}),
    ):
        check_event(event)


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ({"type": "teleport"}, "unknown event type"),
        ({"type": "content"}, "lacks ['delta']"),
        ({"type": "content", "delta": "x", "colour": "red"}, "does not name: ['colour']"),
    ],
)
def test_events_off_the_contract_are_refused(event, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        check_event(event)
