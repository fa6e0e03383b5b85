"""Produce one reply: claim it, build its prompt, run the provider, publish events, save the outcome.

Plain Python with no request in sight: the Celery task (`pipelines.tasks.generate_reply`) hands a message id
here. Every reply that is claimed ends in exactly one terminal event, `end` or `error`, published after the
row that records the same outcome has been saved.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from chats import events
from chats.actions import (
    do_claim_reply,
    do_end_lost_reply,
    do_end_reply_from_stream,
    do_finish_reply,
    do_reclaim_reply,
    do_requeue_reply,
    enqueue_reply,
)
from chats.events import EventPublisher, Heartbeat, StreamClosed
from chats.models import Message
from pipelines.models import ModelConfig
from pipelines.providers.base import ChatMessage, GenerationError, Provider, get_provider

logger = logging.getLogger(__name__)

# Tokens a chat template adds around each message (role markers, separators); a safe upper bound.
MESSAGE_OVERHEAD_TOKENS = 8


@dataclass
class ReplyPlan:
    """Everything needed to generate one reply."""

    config: ModelConfig
    provider: Provider
    messages: list[ChatMessage]
    max_tokens: int
    temperature: float


def branch_history(message: Message) -> list[Message]:
    """The messages a reply answers: its chain of parents, oldest first (the reply itself excluded).

    Loads the chat's messages in one query and walks the `parent` links in memory, so a reply made by
    regenerate or edit sees only its own branch of the conversation.
    """
    rows = {
        m.id: m
        for m in Message.objects.filter(chat_id=message.chat_id).only("id", "parent_id", "role", "content", "status")
    }
    chain: list[Message] = []
    current = rows.get(message.parent_id)
    while current is not None and len(chain) < len(rows):
        chain.append(current)
        current = rows.get(current.parent_id)
    chain.reverse()
    return chain


def build_prompt(
    system_prompt: str, history: list[Message], provider: Provider, *, context_window: int, max_tokens: int
) -> list[ChatMessage]:
    """Turn a branch into prompt messages that fit the model's context window.

    Keeps the system prompt and the newest message; drops the oldest turns until the prompt plus
    `max_tokens` fits in `context_window` tokens. Assistant turns that produced no text are left out.

    Raises:
        GenerationError: `prompt_too_long` when the system prompt and the newest message alone do not fit.
    """
    turns: list[ChatMessage] = [
        {"role": m.role, "content": m.content}
        for m in history
        if m.role in (Message.Role.USER, Message.Role.ASSISTANT) and m.content
    ]
    system: list[ChatMessage] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    budget = context_window - max_tokens

    def cost(msg: ChatMessage) -> int:
        return provider.count_tokens(msg["content"]) + MESSAGE_OVERHEAD_TOKENS

    used = sum(cost(m) for m in system)
    kept: list[ChatMessage] = []
    for turn in reversed(turns):
        if used + cost(turn) > budget:
            break
        used += cost(turn)
        kept.append(turn)
    if turns and not kept:
        raise GenerationError(
            "prompt_too_long",
            f"The message is too long for this model: it needs about {used + cost(turns[-1])} tokens and the "
            f"model's window leaves {budget} for the prompt. Shorten it or pick a model with a larger window.",
        )
    kept.reverse()
    return system + kept


def plan_reply(message: Message) -> ReplyPlan:
    """Choose the model, settings and prompt for a claimed reply.

    Raises:
        GenerationError: `model_unavailable` when its model is gone or disabled; `prompt_too_long`.
    """
    config = ModelConfig.objects.filter(model_id=message.model_id, is_active=True).first()
    if config is None:
        raise GenerationError(
            "model_unavailable", f"The model '{message.model_id}' is no longer available. Pick another model."
        )
    workflow = message.workflow
    max_tokens = (workflow and workflow.max_tokens) or config.default_max_tokens
    temperature = config.default_temperature
    if workflow and workflow.temperature is not None:
        temperature = workflow.temperature
    provider = get_provider(config)
    prompt = build_prompt(
        workflow.system_prompt if workflow else "",
        branch_history(message),
        provider,
        context_window=config.context_window,
        max_tokens=max_tokens,
    )
    return ReplyPlan(config, provider, prompt, max_tokens, temperature)


def run_reply(message_id: str, publisher: EventPublisher | None = None) -> str | None:
    """Generate the reply `message_id` and stream its events; return its final status.

    A reply is generated by whoever claims it (`queued` -> `streaming`). A task delivered again after its
    worker died finds the reply `streaming`: it waits for the dead worker's heartbeat to lapse, then either
    generates the reply itself (no content had gone out yet) or ends it as `worker_lost`, keeping the
    partial text. Returns None when there was nothing for this call to do.

    Raises:
        redis.RedisError: when events cannot be published for longer than the retry budget (the reply is
            saved as failed first, so resuming clients read the outcome from the database).
    """
    publisher = publisher or EventPublisher()
    message = do_claim_reply(message_id)
    start_published = False
    if message is None:
        message, start_published = take_over_reply(message_id, publisher)
        if message is None:
            return None
    else:
        # A reply the watchdog queued again (its worker died before any text) already has its `start`.
        stream = events.snapshot(message_id)
        if stream.started:
            publisher.continue_after(message_id, stream.last_id)
            start_published = True
    with Heartbeat(message_id):
        return _generate(message, publisher, start_published)


def take_over_reply(message_id: str, publisher: EventPublisher) -> tuple[Message | None, bool]:
    """Handle a delivery of a reply that is already `streaming` (its first worker may have died).

    Returns `(message, start_published)` when this worker should generate it, `(None, False)` otherwise.
    """
    row = Message.objects.filter(id=message_id).only("status", "started_at").first()
    if row is None or row.status != Message.Status.STREAMING:
        logger.info("reply %s is not queued; nothing to do", message_id)
        return None, False
    deadline = time.monotonic() + 3 * settings.CHATSITE_HEARTBEAT_SECONDS + 1
    while events.heartbeat_alive(message_id):
        if time.monotonic() > deadline:
            logger.info("reply %s is being generated by a live worker; not taking it over", message_id)
            return None, False
        time.sleep(0.2)
    stream = events.snapshot(message_id)
    if stream.ended:
        return None, False
    if stream.has_content:
        # Some of it reached readers already: generating it again would show them a different reply.
        do_end_lost_reply(message_id)
        return None, False
    message = do_reclaim_reply(message_id, row.started_at)
    if message is None:
        return None, False
    logger.info("reply %s: its worker died before any content; generating it here", message_id)
    publisher.continue_after(message_id, stream.last_id)
    return message, stream.started


def _generate(message: Message, publisher: EventPublisher, start_published: bool) -> str | None:
    message_id = str(message.id)
    parts: list[str] = []
    try:
        if not start_published:
            publisher.publish(message_id, start_event_for(message))
        plan = plan_reply(message)
        if events.cancel_requested(message_id):
            return _finish_cancelled(publisher, message_id, plan, parts)
        finish_reason, prompt_tokens, completion_tokens = "stop", 0, 0
        stream = plan.provider.stream_chat(plan.messages, max_tokens=plan.max_tokens, temperature=plan.temperature)
        try:
            for delta in stream:
                if delta.text:
                    parts.append(delta.text)
                    if publisher.publish(message_id, events.content_event(delta.text)).cancel_requested:
                        stream.close()  # let go of the model before counting tokens with it
                        return _finish_cancelled(publisher, message_id, plan, parts)
                if delta.finish_reason:
                    finish_reason = delta.finish_reason
                if delta.prompt_tokens is not None:
                    prompt_tokens = delta.prompt_tokens
                if delta.completion_tokens is not None:
                    completion_tokens = delta.completion_tokens
        finally:
            stream.close()
        if do_finish_reply(
            message_id,
            status=Message.Status.COMPLETED,
            content="".join(parts),
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        ):
            publisher.publish(
                message_id,
                events.end_event(
                    message_id=message_id,
                    finish_reason=finish_reason,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                ),
            )
            return Message.Status.COMPLETED
        return None
    except StreamClosed:
        logger.info("reply %s was ended elsewhere; stopping", message_id)
        return None
    except GenerationError as exc:
        return _fail(publisher, message_id, "".join(parts), exc.code, exc.message, exc.retryable)
    except SoftTimeLimitExceeded:
        return _fail(publisher, message_id, "".join(parts), "timeout", "The reply took too long and was stopped.", True)
    except Exception:
        logger.exception("reply %s failed", message_id)
        return _fail(
            publisher,
            message_id,
            "".join(parts),
            "internal_error",
            "The reply could not be generated because of an error on our side.",
            True,
        )


def start_event_for(message: Message) -> events.Event:
    """The `start` event of a reply."""
    return events.start_event(
        message_id=str(message.id),
        chat_id=str(message.chat_id),
        user_message_id=str(message.parent_id) if message.parent_id else None,
        model=message.model_id,
        workflow_id=str(message.workflow_id) if message.workflow_id else None,
    )


def _finish_cancelled(publisher: EventPublisher, message_id: str, plan: ReplyPlan, parts: list[str]) -> str | None:
    content = "".join(parts)
    # The provider never reached its usage report: count what was sent and what was written.
    prompt_tokens = sum(plan.provider.count_tokens(m["content"]) for m in plan.messages)
    completion_tokens = plan.provider.count_tokens(content) if content else 0
    if not do_finish_reply(
        message_id,
        status=Message.Status.CANCELLED,
        content=content,
        finish_reason="cancelled",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    ):
        return None
    with contextlib.suppress(StreamClosed):
        publisher.publish(
            message_id,
            events.end_event(
                message_id=message_id,
                finish_reason="cancelled",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            ),
        )
    return Message.Status.CANCELLED


def _fail(
    publisher: EventPublisher, message_id: str, content: str, code: str, text: str, retryable: bool
) -> str | None:
    error = {"code": code, "message": text, "retryable": retryable}
    if not do_finish_reply(message_id, status=Message.Status.FAILED, content=content, error=error):
        return None
    with contextlib.suppress(StreamClosed):
        publisher.publish(message_id, events.error_event(code=code, message=text, retryable=retryable))
    return Message.Status.FAILED


def fail_unstarted_reply(message_id: str, *, code: str, message: str, retryable: bool = True) -> None:
    """End a reply that never reached a worker (still `queued`) with an `error` event.

    Publishing is best effort: the saved `failed` status is what resuming clients will read.
    """
    error = {"code": code, "message": message, "retryable": retryable}
    try:
        do_end_reply_from_stream(
            message_id, status=Message.Status.FAILED, error=error, from_statuses=(Message.Status.QUEUED,)
        )
    except redis.RedisError:
        logger.exception("could not publish the error event of reply %s", message_id)


def end_lost_replies() -> int:
    """The watchdog: end replies whose worker vanished; send replies lost from the queue again.

    A `streaming` reply with no live heartbeat whose stream has been silent for
    `CHATSITE_WORKER_LOST_SECONDS` has lost its worker. If some of its text went out, it is ended with
    `error` `worker_lost` (retryable), keeping that text; if none did, it is queued again and generated
    normally. A reply `queued` for longer than `CHATSITE_REQUEUE_SECONDS` is enqueued again (claiming makes
    a duplicate delivery harmless). Returns how many replies it ended.
    """
    now = timezone.now()
    lost_after = timedelta(seconds=settings.CHATSITE_WORKER_LOST_SECONDS)
    ended = 0
    for row in Message.objects.filter(status=Message.Status.STREAMING, started_at__lt=now - lost_after).only(
        "id", "started_at"
    ):
        message_id = str(row.id)
        if events.heartbeat_alive(message_id):
            continue
        stream = events.snapshot(message_id)
        last_activity = max(row.started_at.timestamp(), (stream.last_ms or 0) / 1000)
        if time.time() - last_activity < lost_after.total_seconds():
            continue
        if not (stream.has_content or stream.ended):
            if do_requeue_reply(message_id, row.started_at):
                logger.warning("watchdog: reply %s lost its worker before any text; queued again", message_id)
                enqueue_reply(message_id)
            continue
        if do_end_lost_reply(message_id):
            logger.warning("watchdog: reply %s lost its worker; ended as worker_lost", message_id)
            ended += 1
    requeue_after = timedelta(seconds=settings.CHATSITE_REQUEUE_SECONDS)
    for row in Message.objects.filter(status=Message.Status.QUEUED, created_at__lt=now - requeue_after).only("id"):
        if events.mark_requeued(str(row.id), settings.CHATSITE_REQUEUE_SECONDS):
            logger.warning("watchdog: reply %s is still queued; sending it to the queue again", row.id)
            enqueue_reply(str(row.id))
    return ended
