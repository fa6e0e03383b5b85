"""The OpenAI-compatible API (/v1/): the official `openai` SDK against a live stack, its refusals in OpenAI's
error shape, and a reply started through it being the same saved, owned, resumable, cancellable reply."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from rest_framework.test import APIClient

from chats import actions
from chats.models import Chat, Message
from pipelines.models import ModelConfig, Workflow
from pipelines.stops import StopScanner
from tests.live import resume

# --- stop sequences --------------------------------------------------------------------------------------


def feed_all(stops: list[str], deltas: list[str]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    shown = "".join(scanner.feed(d) for d in deltas) + scanner.flush()
    return shown, scanner.stopped


def test_a_stop_sequence_split_across_deltas_ends_the_text_before_it():
    assert feed_all(["END"], ["Hello E", "N", "D and more"]) == ("Hello ", True)


def test_text_that_only_looks_like_the_start_of_a_stop_sequence_is_shown_in_full():
    assert feed_all(["END"], ["Hello E", "NJOY", " E"]) == ("Hello ENJOY E", False)


def test_the_earliest_of_several_stop_sequences_wins():
    assert feed_all(["b", "xyz"], ["a xy", "z b"]) == ("a ", True)


def test_no_stop_sequences_pass_text_through_unchanged():
    assert feed_all([], ["a", "b"]) == ("ab", False)


# --- refusals, in-process --------------------------------------------------------------------------------


def key_client(user, *, read_only: bool = False) -> APIClient:
    _, key = actions.do_create_api_key(user, name="sdk", read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def completion_body(model: str = "scripted", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra}


def assert_openai_error(response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_no_key_is_401_in_openai_shape(anon, scripted_model):
    response = anon.post("/v1/chat/completions", completion_body(), format="json")
    error = assert_openai_error(response, 401, "not_authenticated")
    assert error["type"] == "authentication_error"
    assert_openai_error(anon.get("/v1/models"), 401, "not_authenticated")


def test_a_read_only_key_cannot_start_a_reply(alice, scripted_model):
    response = key_client(alice, read_only=True).post("/v1/chat/completions", completion_body(), format="json")
    assert_openai_error(response, 403, "forbidden")
    assert not Message.objects.exists()


def test_a_session_needs_the_csrf_token(alice, scripted_model):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/v1/chat/completions", completion_body(), format="json")
    assert_openai_error(response, 403, "csrf_failed")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"temperature": 3}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ],
)
def test_what_chatsite_cannot_honour_is_refused_naming_the_parameter(alice, scripted_model, extra, param):
    response = key_client(alice).post("/v1/chat/completions", completion_body(**extra), format="json")
    error = assert_openai_error(response, 400, "invalid_request", param)
    assert error["type"] == "invalid_request_error"
    assert not Chat.objects.exists()


def test_an_unknown_model_is_404_model_not_found(alice, scripted_model):
    response = key_client(alice).post("/v1/chat/completions", completion_body("gpt-9"), format="json")
    assert_openai_error(response, 404, "model_not_found", "model")
    assert_openai_error(key_client(alice).get("/v1/models/gpt-9"), 404, "model_not_found")


def test_models_lists_models_and_usable_workflows_only(alice, bob, scripted_model, shared_workflow):
    Workflow.objects.create(owner=alice, name="Alice's Helper")
    Workflow.objects.create(owner=bob, name="Bob Secret")
    ids = [item["id"] for item in key_client(alice).get("/v1/models").json()["data"]]
    assert "scripted" in ids
    assert "workflow/alices-helper" in ids and "workflow/shared" in ids
    assert "workflow/bob-secret" not in ids
    assert key_client(alice).get("/v1/models/workflow/alices-helper").json()["id"] == "workflow/alices-helper"


def test_another_users_workflow_cannot_be_named_as_a_model(alice, bob, scripted_model):
    Workflow.objects.create(owner=bob, name="Bob Secret", model=scripted_model)
    response = key_client(alice).post("/v1/chat/completions", completion_body("workflow/bob-secret"), format="json")
    assert_openai_error(response, 404, "model_not_found")
    assert not Chat.objects.exists()


def test_the_send_limits_apply(alice, scripted_model, settings):
    settings.CHATSITE_MAX_CONCURRENT_REPLIES = 1
    client = key_client(alice)
    first = Chat.objects.create(owner=alice)
    Message.objects.create(chat=first, role="assistant", status="streaming", created_at=first.created_at)
    response = client.post("/v1/chat/completions", completion_body(), format="json")
    error = assert_openai_error(response, 429, "too_many_replies")
    assert error["type"] == "rate_limit_error"
    assert response["Retry-After"]


def test_a_conversation_is_saved_as_one_branch_with_the_clients_settings(
    alice, scripted_model, monkeypatch, django_capture_on_commit_callbacks
):
    enqueued = []
    monkeypatch.setattr("chats.actions.enqueue_reply", lambda message_id, lane=None: enqueued.append(message_id))
    body = {
        "model": "scripted",
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}]},
        ],
        "temperature": 0.2,
        "max_completion_tokens": 7,
        "stop": "\n\n",
        "stream": True,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = key_client(alice).post("/v1/chat/completions", body, format="json")
    assert response.status_code == 200
    chat = Chat.objects.get(owner=alice)
    assert chat.source == "openai" and chat.title == "How are you?"
    reply = Message.objects.get(chat=chat, status="queued")
    assert response["X-Chatsite-Message-Id"] == str(reply.id) and response["X-Chatsite-Chat-Id"] == str(chat.id)
    assert reply.status == "queued" and reply.options == {"temperature": 0.2, "max_tokens": 7, "stop": ["\n\n"]}
    chain = []
    node = reply.parent
    while node is not None:
        chain.append((node.role, node.content))
        node = node.parent
    assert chain[::-1] == [
        ("system", "Answer in French."),
        ("user", "Hi"),
        ("assistant", "Bonjour"),
        ("user", "How are you?"),
    ]
    assert enqueued == [str(reply.id)]
    response.close()


# --- the official SDK against a live stack ---------------------------------------------------------------


@pytest.fixture
def sdk(live_stack, carol) -> openai.OpenAI:
    _, key = actions.do_create_api_key(carol, name="sdk")
    client = openai.OpenAI(base_url=f"{live_stack.base_url}/v1", api_key=key, max_retries=0, timeout=60)
    yield client
    client.close()


@pytest.fixture
def slow_model(db) -> ModelConfig:
    model, _ = ModelConfig.objects.update_or_create(
        model_id="scripted-slow",
        defaults={
            "display_name": "Scripted, slow",
            "provider": "scripted",
            "options": {"script": [f" word{i}" for i in range(60)], "delay": 0.1},
        },
    )
    return model


@pytest.mark.e2e
def test_the_openai_sdk_streams_a_reply_with_usage_and_it_is_the_saved_reply(sdk, carol, scripted_model, session):
    stream = sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 4 and usage.total_tokens == usage.prompt_tokens + 4
    reply = Message.objects.get(id=chunks[0].id.removeprefix("chatcmpl-"))
    assert reply.content == text and reply.status == "completed" and reply.chat.owner == carol
    # The same reply, watched over seed 004 from carol's session, replays the same text.
    client, _ = session
    replayed = resume(client, str(reply.chat_id), str(reply.id))
    assert replayed.text == text and replayed.types[-1] == "end"
    listed = client.get("/api/chats").json()["results"]
    assert any(chat["id"] == str(reply.chat_id) and chat["source"] == "openai" for chat in listed)


@pytest.mark.e2e
def test_a_non_streaming_call_returns_the_saved_text_and_honours_stop(sdk, scripted_model):
    completion = sdk.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Hi"}], stop=[" wor"]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello,"
    assert completion.choices[0].finish_reason == "stop"
    reply = Message.objects.get(id=completion.id.removeprefix("chatcmpl-"))
    assert reply.content == "Hello," and reply.completion_tokens == completion.usage.completion_tokens


@pytest.mark.e2e
def test_a_failed_reply_raises_in_the_sdk_with_its_code(sdk, db):
    ModelConfig.objects.update_or_create(
        model_id="scripted-failing",
        defaults={"display_name": "Failing", "provider": "scripted", "options": {"fail_after": 1}},
    )
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="scripted-failing", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 503 and raised.value.body["code"] == "provider_error"
    with pytest.raises(openai.APIError) as streamed:
        list(
            sdk.chat.completions.create(
                model="scripted-failing", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
        )
    assert "failed on purpose" in str(streamed.value)


@pytest.mark.e2e
def test_a_reply_started_over_openai_can_be_cancelled_over_seed_004(sdk, carol, slow_model, session):
    client, token = session
    stream = sdk.chat.completions.with_raw_response.create(
        model="scripted-slow", messages=[{"role": "user", "content": "Count"}], stream=True
    )
    chat_id, message_id = stream.headers["X-Chatsite-Chat-Id"], stream.headers["X-Chatsite-Message-Id"]
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(stream.parse()))
    reader.start()
    cancel = client.post(
        f"/api/chats/{chat_id}/messages/{message_id}/cancel", headers={"X-CSRFToken": token}, timeout=30
    )
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    reader.join(30)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert text == Message.objects.get(id=message_id).content and len(text.split()) < 60


@pytest.mark.e2e
def test_the_openai_sdk_streams_a_smollm2_reply_with_usage(sdk, smollm2):
    stream = sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert 0 < usage.completion_tokens <= 16 and usage.prompt_tokens > 0
    reply = Message.objects.get(id=chunks[0].id.removeprefix("chatcmpl-"))
    assert reply.content == text


@pytest.mark.e2e
def test_curl_style_raw_sse_ends_with_done(live_stack, carol, scripted_model):
    _, key = actions.do_create_api_key(carol, name="curl")
    with httpx.Client(base_url=live_stack.base_url, timeout=30) as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "scripted", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
