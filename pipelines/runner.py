"""Produce one reply: claim it, build its prompt, run the provider, publish events, save the outcome.

Plain Python with no request in sight: the Celery task (`pipelines.tasks.generate_reply`) hands a message id
here. Every reply that is claimed ends in exactly one terminal event, `end` or `error`, published after the
row that records the same outcome has been saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from chats import events
from chats.actions import do_claim_reply, do_finish_reply
from chats.events import EventPublisher
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

    Returns None (and does nothing) when the reply is not `queued`: it does not exist, or another
    delivery of the same task already claimed it.

    Raises:
        redis.RedisError: when events cannot be published (the reply is saved as failed first).
    """
    publisher = publisher or EventPublisher()
    message = do_claim_reply(message_id)
    if message is None:
        logger.info("reply %s is not queued; nothing to do", message_id)
        return None

    publisher.publish(
        message_id,
        events.start_event(
            message_id=message_id,
            chat_id=str(message.chat_id),
            user_message_id=str(message.parent_id) if message.parent_id else None,
            model=message.model_id,
            workflow_id=str(message.workflow_id) if message.workflow_id else None,
        ),
    )
    parts: list[str] = []
    try:
        plan = plan_reply(message)
        finish_reason, prompt_tokens, completion_tokens = "stop", 0, 0
        for delta in plan.provider.stream_chat(plan.messages, max_tokens=plan.max_tokens, temperature=plan.temperature):
            if delta.text:
                parts.append(delta.text)
                publisher.publish(message_id, events.content_event(delta.text))
            if delta.finish_reason:
                finish_reason = delta.finish_reason
            if delta.prompt_tokens is not None:
                prompt_tokens = delta.prompt_tokens
            if delta.completion_tokens is not None:
                completion_tokens = delta.completion_tokens
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


def _fail(
    publisher: EventPublisher, message_id: str, content: str, code: str, text: str, retryable: bool
) -> str | None:
    error = {"code": code, "message": text, "retryable": retryable}
    if do_finish_reply(message_id, status=Message.Status.FAILED, content=content, error=error):
        publisher.publish(message_id, events.error_event(code=code, message=text, retryable=retryable))
        return Message.Status.FAILED
    return None


def fail_unstarted_reply(message_id: str, *, code: str, message: str, retryable: bool = True) -> None:
    """End a reply that never reached a worker (still `queued`) with an `error` event.

    Publishing is best effort: the saved `failed` status is what resuming clients will read.
    """
    error = {"code": code, "message": message, "retryable": retryable}
    if not do_finish_reply(
        message_id, status=Message.Status.FAILED, content="", error=error, from_statuses=(Message.Status.QUEUED,)
    ):
        return
    try:
        EventPublisher().publish(message_id, events.error_event(code=code, message=message, retryable=retryable))
    except Exception:
        logger.exception("could not publish the error event of reply %s", message_id)
