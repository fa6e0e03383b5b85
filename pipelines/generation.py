"""Generate one claimed reply: run its workflow's steps, stream its events, call tools, save the outcome.

`ReplyGeneration.run()` is what a worker (or an embedded thread) does for one reply once `pipelines.runner`
has claimed it. Steps run in order (see `pipelines.steps`); a workflow with explicit steps reports each one
with `step` events (`started`, `finished`, `failed`). The `generate` step streams `content` events, and when
the model asks for tools it streams `tool_call` then `tool_result` for each call, feeds the results back,
and asks again, up to the step's round limit. The outcome is saved in one write, then the terminal event
(`end` or `error`) is published.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from chats import events
from chats.events import EventPublisher, StreamClosed
from chats.lifecycle import do_finish_reply
from chats.limits import do_record_usage, quota_left
from chats.models import Message
from pipelines.models import Connector, ModelConfig
from pipelines.prompts import branch_history, build_prompt, render_system_prompt, sql_context
from pipelines.providers.base import ChatMessage, GenerationError, Provider, ToolCall, get_provider
from pipelines.steps import DEFAULT_SIMILARITY_THRESHOLD
from pipelines.stops import StopScanner
from pipelines.tools import ToolContext, registry, run_tool

logger = logging.getLogger(__name__)

# Tokens kept free when numbered sources are fitted into the prompt (wrapping text, the question's label).
SOURCES_MARGIN_TOKENS = 64
CITE_INSTRUCTIONS = (
    "Answer from the numbered sources given with the question when they are relevant, and cite each source you "
    "use by its number in square brackets, like [1]. If the sources do not hold the answer, say so."
)
DEFAULT_REWRITE_INSTRUCTIONS = (
    "Rewrite the user's last question as one short, self-contained question. Answer with the question only."
)


class Cancelled(Exception):
    """The user stopped the reply."""


class BudgetExceeded(Exception):
    """The reply used up its time budget (CHATSITE_REPLY_TIME_BUDGET_SECONDS)."""


def replace_broken_connections() -> None:
    """Close this thread's database connections that had errors and no longer work (killed server-side, or left
    mid-query by a time limit), so that the next query opens (or takes from the pool) a fresh one; give the others
    back. Nothing inside a transaction (the caller's to roll back)."""
    if not connection.in_atomic_block:
        close_old_connections()


def release_database_connection() -> None:
    """Give this thread's (greenlet's) database connection back to the pool while the reply waits on its model:
    a worker process carrying a thousand replies holds a connection only while one claims, reads its prompt or
    saves, never while it streams. The next query takes one again. Nothing inside a transaction."""
    if not connection.in_atomic_block:
        connection.close()


def _model(model_id: str) -> ModelConfig:
    config = ModelConfig.objects.filter(model_id=model_id, is_active=True).first()
    if config is None:
        raise GenerationError(
            "model_unavailable", f"The model '{model_id}' is no longer available. Pick another model."
        )
    return config


@dataclass
class ReplyGeneration:
    """Everything that happens to one claimed reply, from its steps to its saved outcome."""

    message: Message
    publisher: EventPublisher
    parts: list[str] = field(default_factory=list)
    tool_records: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    last_provider: Provider | None = None
    last_prompt: list[ChatMessage] = field(default_factory=list)
    # Passages found by retrieve steps, then (at the generate step) the sources shown and saved.
    retrieved: list[Any] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Text deltas not yet published (joined over CHATSITE_DELTA_BATCH_MS), and when content last went out
    # (time.monotonic() seconds; None: the current answer has sent none yet).
    pending: list[str] = field(default_factory=list)
    content_sent_at: float | None = None
    # When the reply's time budget runs out (time.monotonic() seconds), set when it starts running.
    deadline: float = float("inf")
    # Set once a write was refused because the reply was ended or taken over elsewhere: nothing more is saved.
    stream_closed: bool = False

    @property
    def message_id(self) -> str:
        return str(self.message.id)

    # --- events ----------------------------------------------------------------------------------------

    def publish(self, event: events.Event) -> None:
        """Publish a non-terminal event, after any text still pending.

        Raises:
            Cancelled: a cancel was requested.
        """
        self.flush_content()
        if self.publisher.publish(self.message_id, event).cancel_requested:
            raise Cancelled

    def add_content(self, text: str) -> None:
        """Take a text delta: publish it at once if it is the answer's first or CHATSITE_DELTA_BATCH_MS have
        passed since content last went out; otherwise keep it to go out with the next one (one event).

        Raises:
            Cancelled: a cancel was requested (checked on each publish).
            BudgetExceeded: the reply's time is up (the delta is kept).
        """
        self.parts.append(text)
        self.pending.append(text)
        window = settings.CHATSITE_DELTA_BATCH_MS / 1000
        if self.content_sent_at is None or time.monotonic() - self.content_sent_at >= window:
            self.flush_content()
        self.check_budget()

    def flush_content(self) -> None:
        """Publish the pending text deltas as one `content` event (nothing when none are pending).

        Raises:
            Cancelled: a cancel was requested.
        """
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        self.content_sent_at = time.monotonic()
        if self.publisher.publish(self.message_id, events.content_event(text)).cancel_requested:
            raise Cancelled

    def _flush_before_end(self) -> bool:
        """Publish pending text before the outcome is saved, so the stream holds all the saved text.

        Returns False when the reply was ended or taken over elsewhere (its stream refused the text): this worker
        must then save nothing.
        """
        try:
            self.flush_content()
        except Cancelled:
            pass  # the text went out; the cancel is handled by the caller
        except StreamClosed:
            self.stream_closed = True
        except redis.RedisError:
            # The outcome must still be saved: readers that find no terminal event read it from the database.
            logger.warning("could not publish the last text of reply %s", self.message_id)
        if self.stream_closed:
            logger.info("reply %s was ended elsewhere; not saving it", self.message_id)
        return not self.stream_closed

    def check_cancel(self) -> None:
        if events.cancel_requested(self.message_id):
            raise Cancelled

    def time_left(self) -> float:
        """Seconds left of the reply's time budget (CHATSITE_REPLY_TIME_BUDGET_SECONDS), for every step."""
        return self.deadline - time.monotonic()

    def check_budget(self) -> None:
        """Raises BudgetExceeded once the reply's time is up."""
        if self.time_left() <= 0:
            raise BudgetExceeded

    # --- the whole reply -------------------------------------------------------------------------------

    def run(self) -> str | None:
        """Run the workflow and save the outcome; returns the final status (None if ended elsewhere)."""
        workflow = self.message.workflow
        # Steps a client sent with the request (seed 002's RAG options, validated by `validate_steps`) come
        # before the workflow's.
        asked_steps = (self.message.options or {}).get("steps")
        explicit = bool(asked_steps or (workflow and workflow.steps))
        steps = list(asked_steps or (workflow.steps if workflow else [])) or [{"type": "generate"}]
        self.system = [workflow.system_prompt] if workflow and workflow.system_prompt else []
        self.history = branch_history(self.message)
        # System messages in the branch (a client's own, through the OpenAI API) join the system prompt.
        self.system += [m.content for m in self.history if m.role == Message.Role.SYSTEM and m.content]
        self.question: str | None = None
        self.context: list[str] = []
        step_index, kind = 0, ""
        self.deadline = time.monotonic() + settings.CHATSITE_REPLY_TIME_BUDGET_SECONDS
        try:
            self.check_cancel()
            for step_index, step in enumerate(steps, start=1):
                kind = step["type"]
                self.check_budget()
                if explicit:
                    self.publish(events.step_event(kind, "started", step_index))
                detail = getattr(self, f"_step_{kind}")(step, explicit, step_index)
                if explicit:
                    self.publish(events.step_event(kind, "finished", step_index, **(detail or {})))
                self.check_cancel()
            return self._complete()
        except Cancelled:
            return self._finish_cancelled()
        except StreamClosed:
            logger.info("reply %s was ended elsewhere; stopping", self.message_id)
            return None
        except GenerationError as exc:
            self._step_failed(explicit, kind, step_index)
            return self._fail(exc.code, exc.message, exc.retryable)
        except BudgetExceeded:
            self._step_failed(explicit, kind, step_index)
            budget = settings.CHATSITE_REPLY_TIME_BUDGET_SECONDS
            return self._fail(
                "time_budget_exceeded",
                f"The reply used up the {budget:g} seconds it may take across its steps, and was stopped.",
                False,
            )
        except SoftTimeLimitExceeded:
            # It may have interrupted a database call mid-way: save the outcome on a fresh connection.
            replace_broken_connections()
            self._step_failed(explicit, kind, step_index)
            return self._fail("timeout", "The reply took too long and was stopped.", True)
        except Exception as exc:
            logger.exception("reply %s failed", self.message_id)
            if isinstance(exc, DatabaseError):
                # The connection may be broken (killed server-side): save the outcome on a fresh one.
                replace_broken_connections()
            self._step_failed(explicit, kind, step_index)
            return self._fail(
                "internal_error", "The reply could not be generated because of an error on our side.", True
            )

    def _step_failed(self, explicit: bool, kind: str, index: int) -> None:
        if not (explicit and kind):
            return
        if not self._flush_before_end():
            return
        try:
            self.publisher.publish(self.message_id, events.step_event(kind, "failed", index))
        except StreamClosed:
            self.stream_closed = True
        except Exception:
            logger.warning("could not publish the failed step of reply %s", self.message_id)

    # --- steps -----------------------------------------------------------------------------------------

    def _step_system_prompt(self, step: dict, explicit: bool, index: int) -> dict | None:
        owner = self.message.chat.owner
        name = owner.get_full_name() or owner.get_username()
        self.system.append(render_system_prompt(step["text"], user_name=name, now=datetime.now().astimezone()))
        return None

    def _current_question(self) -> str:
        if self.question is not None:
            return self.question
        return self.history[-1].content if self.history and self.history[-1].role == Message.Role.USER else ""

    def _step_rewrite_query(self, step: dict, explicit: bool, index: int) -> dict | None:
        config = _model(step.get("model") or self.message.model_id)
        provider = get_provider(config)
        recent = self.history[-5:-1]
        conversation = "\n".join(f"{m.role}: {m.content}" for m in recent if m.content)
        prompt: list[ChatMessage] = [
            {"role": "system", "content": step.get("instructions") or DEFAULT_REWRITE_INSTRUCTIONS},
            {
                "role": "user",
                "content": (f"Conversation so far:\n{conversation}\n\n" if conversation else "")
                + f"Question: {self._current_question()}",
            },
        ]
        text: list[str] = []
        release_database_connection()
        stream = provider.stream_chat(prompt, max_tokens=step.get("max_tokens", 64), temperature=0.0)
        try:
            for delta in stream:
                text.append(delta.text)
                self._count(delta)
                self.check_budget()
        finally:
            stream.close()
        rewritten = " ".join("".join(text).split())
        if rewritten:
            self.question = rewritten
        return {"output": self._current_question()}

    def _step_sql(self, step: dict, explicit: bool, index: int) -> dict | None:
        from pipelines.access import workflow_connectors
        from pipelines.connectors import ConnectorError, run_read_query

        workflow = self.message.workflow
        # Checked again at every run, not only on save: grants change, and rows written before grants
        # existed (or straight into the database) were never checked. A shared workflow (owner None, written
        # by staff) may name any active connector; a user's, only those granted to its owner.
        allowed = workflow_connectors(workflow.owner) if workflow is not None else Connector.objects.none()
        connector = allowed.filter(name=step["connector"]).first()
        if connector is None:
            # The same words for a missing, inactive or ungranted connector.
            raise GenerationError("connector_unavailable", f"The connector '{step['connector']}' is not available.")
        self.check_budget()
        # The query may run for the connector's timeout, or for what is left of the reply's time, if less.
        left_ms = max(1, int(self.time_left() * 1000))
        budget_limits = left_ms < connector.statement_timeout_ms
        try:
            result = run_read_query(
                connector,
                step["query"],
                {"text": self._current_question()},
                timeout_ms=left_ms,
                message_id=self.message_id,
            )
        except ConnectorError as exc:
            if exc.code == "sql_timeout" and budget_limits:
                raise BudgetExceeded from exc
            retryable = exc.code in ("sql_timeout", "connector_unavailable")
            raise GenerationError(exc.code, exc.message, retryable=retryable) from exc
        self.context.append(sql_context(connector.name, result))
        return {"rowCount": result["rowCount"], "columns": result["columns"]}

    def _step_retrieve(self, step: dict, explicit: bool, index: int) -> dict | None:
        from knowledge.embeddings import EmbeddingError
        from knowledge.retrieval import SourceConfig, retrieve

        # Steps saved through the API or the admin are normalised; rows written otherwise may lack defaults.
        defaults = {
            "limit": 5,
            "similarity_threshold": DEFAULT_SIMILARITY_THRESHOLD,
            "weight": 1.0,
            "metadata_filters": {},
        }
        sources = [
            SourceConfig(
                collection_id=source.get("collection"),
                **{key: source.get(key, default) for key, default in defaults.items()},
            )
            for source in step.get("sources") or []
        ] or [
            SourceConfig(
                limit=step.get("limit", defaults["limit"]),
                similarity_threshold=step.get("similarity_threshold", defaults["similarity_threshold"]),
            )
        ]
        try:
            found = retrieve(
                self.message.chat.owner,
                self._current_question(),
                sources,
                strategy=step.get("retrieval_strategy", "merge"),
                max_total=step.get("max_total_results", 10),
            )
        except EmbeddingError as exc:
            raise GenerationError(exc.code, exc.message, retryable=exc.retryable) from exc
        except ValueError as exc:
            # Only steps saved before validation reach this (a bad strategy or metadata key); the text of a
            # ValueError is not ours to show, so it goes to the log.
            logger.warning("reply %s: the retrieve step failed: %s", self.message_id, exc)
            raise GenerationError(
                "retrieval_failed", "The retrieve step's settings could not be used; its workflow needs fixing."
            ) from exc
        known = {r.hit.chunk_id for r in self.retrieved}
        self.retrieved += [r for r in found if r.hit.chunk_id not in known]
        return {"resultCount": len(found)}

    def _attachments(self) -> list[str]:
        question = self.history[-1] if self.history and self.history[-1].role == Message.Role.USER else None
        return [str(a) for a in (question.attachments or [])] if question is not None else []

    def _gather_sources(self, provider: Provider, budget: int) -> tuple[list[dict[str, Any]], list[str]]:
        """The sources for this answer, numbered from 1, and their texts, within `budget` tokens.

        Attached documents come first: whole when they fit, else their passages closest to the question;
        then the retrieve steps' passages, in their order, while they fit.
        """
        from knowledge.access import visible_documents
        from knowledge.embeddings import EmbeddingError
        from knowledge.models import Document
        from knowledge.retrieval import SourceConfig, retrieve

        sources: list[dict[str, Any]] = []
        texts: list[str] = []

        def add(source: dict[str, Any], text: str) -> bool:
            nonlocal budget
            block = f"[{len(sources) + 1}] {source['title']}\n{text}"
            cost = provider.count_tokens(block) + 2
            if cost > budget:
                return False
            budget -= cost
            sources.append({**source, "number": len(sources) + 1})
            texts.append(block)
            return True

        owner = self.message.chat.owner
        attached = list(
            visible_documents(owner)
            .filter(id__in=self._attachments(), status=Document.Status.READY)
            .only("id", "title", "text", "collection_id")
        )
        for document in attached:
            whole = {
                "id": str(document.id),
                "title": document.title,
                "snippet": " ".join(document.text[:300].split()),
                "score": 1.0,
                "documentId": str(document.id),
                "collectionId": str(document.collection_id),
                "page": None,
                "start": 0,
                "end": len(document.text),
            }
            if add(whole, document.text):
                continue
            try:
                passages = retrieve(
                    owner,
                    self._current_question(),
                    [SourceConfig(collection_id=str(document.collection_id), limit=8, similarity_threshold=0.0)],
                    max_total=8,
                    document_ids=[str(document.id)],
                )
            except EmbeddingError as exc:
                raise GenerationError(exc.code, exc.message, retryable=exc.retryable) from exc
            for passage in passages:
                add(passage.as_source(0), passage.hit.text)
        for passage in self.retrieved:
            add(passage.as_source(0), passage.hit.text)
        return sources, texts

    def _step_generate(self, step: dict, explicit: bool, index: int) -> dict | None:
        workflow = self.message.workflow
        config = _model(step.get("model") or self.message.model_id)
        provider = get_provider(config)
        self.last_provider = provider
        asked = self.message.options or {}
        max_tokens = (
            asked.get("max_tokens")
            or step.get("max_tokens")
            or (workflow and workflow.max_tokens)
            or config.default_max_tokens
        )
        temperature = asked.get("temperature")
        if temperature is None:
            temperature = step.get("temperature")
        if temperature is None:
            temperature = workflow.temperature if workflow and workflow.temperature is not None else None
        if temperature is None:
            temperature = config.default_temperature
        tool_names = step.get("tools") or []
        detail: dict[str, Any] = {}
        tools = [registry()[name].schema() for name in tool_names if name in registry()]
        if tools and not provider.supports_tools:
            # Say so (in the step's `finished` event) rather than fail: the model answers without the tools.
            detail["note"] = f"The model '{config.model_id}' cannot call tools; it answered without them."
            tools = []
        question = self._current_question()
        if self.retrieved or self._attachments():
            used = sum(
                provider.count_tokens(text) for text in [*self.system, CITE_INSTRUCTIONS, *self.context, question]
            )
            budget = config.context_window - max_tokens - used - SOURCES_MARGIN_TOKENS
            self.sources, texts = self._gather_sources(provider, budget)
            if self.sources:
                self.system.append(CITE_INSTRUCTIONS)
                self.context.append("Sources:\n\n" + "\n\n".join(texts))
                self.publish(events.sources_event(self.sources))
        if self.context:
            question = "\n\n".join(self.context) + f"\n\nQuestion: {question}"
        prompt = build_prompt(
            "\n\n".join(part for part in self.system if part),
            self.history,
            provider,
            context_window=config.context_window,
            max_tokens=max_tokens,
            question=question if (self.question is not None or self.context) else None,
            with_tools=provider.supports_tools,
        )
        self.last_prompt = prompt
        rounds_left = step.get("max_tool_rounds", 3) if tools else 0
        choice = step.get("tool_choice")
        if choice and choice not in ("auto", "required"):
            choice = {"type": "function", "function": {"name": choice}}
        while True:
            offered = tools if rounds_left else None
            calls = self._stream_answer(provider, prompt, max_tokens, temperature, offered, choice if offered else None)
            if not calls:
                break
            rounds_left -= 1
            prompt = prompt + self._run_tools(calls)
        return detail or None

    def _count(self, delta: Any) -> None:
        if delta.prompt_tokens is not None:
            self.prompt_tokens += delta.prompt_tokens
        if delta.completion_tokens is not None:
            self.completion_tokens += delta.completion_tokens

    def _stream_answer(
        self,
        provider: Provider,
        prompt: list[ChatMessage],
        max_tokens: int,
        temperature: float,
        tools: list | None,
        tool_choice: str | dict | None = None,
    ) -> list[ToolCall]:
        calls: list[ToolCall] = []
        release_database_connection()
        stream = provider.stream_chat(
            prompt, max_tokens=max_tokens, temperature=temperature, tools=tools, tool_choice=tool_choice
        )
        stops = StopScanner(list((self.message.options or {}).get("stop") or []))
        self.content_sent_at = None  # each answer's first delta goes out at once
        try:
            for delta in stream:
                if delta.text and (text := stops.feed(delta.text)):
                    self.add_content(text)
                calls.extend(delta.tool_calls)
                if delta.finish_reason:
                    self.finish_reason = "stop" if delta.finish_reason == "tool_calls" else delta.finish_reason
                self._count(delta)
                if stops.stopped:
                    # The client's stop sequence ends the answer here (OpenAI's `stop`), whatever came after.
                    self.finish_reason, calls = "stop", []
                    if not self.completion_tokens:
                        # The provider's usage report comes last, after the text we stopped reading.
                        self.prompt_tokens = sum(provider.count_tokens(m.get("content") or "") for m in prompt)
                        self.completion_tokens = provider.count_tokens("".join(self.parts))
                    break
            if tail := stops.flush():
                self.add_content(tail)
            self.flush_content()
        finally:
            stream.close()  # let go of the model before anything else uses it
        return calls if tools else []

    def _run_tools(self, calls: list[ToolCall]) -> list[ChatMessage]:
        """Run the model's tool calls, stream them, and return the prompt messages that report them."""
        owner = self.message.chat.owner
        context = ToolContext(user_id=str(owner.id), user_name=owner.get_username(), message_id=self.message_id)
        asked: ChatMessage = {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ],
        }
        answers: list[ChatMessage] = []
        for call in calls:
            self.check_budget()
            try:
                args: Any = json.loads(call.arguments or "{}")
            except json.JSONDecodeError:
                args = call.arguments
            self.publish(events.tool_call_event(call.id, call.name, args))
            outcome = run_tool(call.name, call.arguments, context)
            record = {"callId": call.id, "toolName": call.name, "toolArgs": args, **outcome}
            self.tool_records.append(record)
            self.publish(events.tool_result_event(call.id, call.name, outcome))
            answers.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(outcome, default=str)})
        return [asked, *answers]

    # --- outcomes --------------------------------------------------------------------------------------

    def _record_usage(self) -> int | None:
        """Count this reply's tokens against its owner's daily quota; return the quota left (None: no quota)."""
        owner = self.message.chat.owner
        do_record_usage(owner, self.prompt_tokens + self.completion_tokens)
        return quota_left(owner)

    def _complete(self) -> str | None:
        if not self._flush_before_end():
            return None
        if not do_finish_reply(
            self.message_id,
            status=Message.Status.COMPLETED,
            content="".join(self.parts),
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tool_calls=self.tool_records,
            sources=self.sources,
            attempt=self.message.attempts,
        ):
            return None
        left = self._record_usage()
        self.publisher.publish(
            self.message_id,
            events.end_event(
                message_id=self.message_id,
                finish_reason=self.finish_reason,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                quota_left=left,
            ),
        )
        return Message.Status.COMPLETED

    def _finish_cancelled(self) -> str | None:
        if not self._flush_before_end():
            return None
        content = "".join(self.parts)
        provider = self.last_provider
        if provider is not None and not self.completion_tokens:
            # The provider never reached its usage report: count what was sent and what was written.
            self.prompt_tokens = sum(provider.count_tokens(m.get("content") or "") for m in self.last_prompt)
            self.completion_tokens = provider.count_tokens(content) if content else 0
        if not do_finish_reply(
            self.message_id,
            status=Message.Status.CANCELLED,
            content=content,
            finish_reason="cancelled",
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tool_calls=self.tool_records,
            sources=self.sources,
            attempt=self.message.attempts,
        ):
            return None
        left = self._record_usage()
        with contextlib.suppress(StreamClosed):
            self.publisher.publish(
                self.message_id,
                events.end_event(
                    message_id=self.message_id,
                    finish_reason="cancelled",
                    prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens,
                    quota_left=left,
                ),
            )
        return Message.Status.CANCELLED

    def _fail(self, code: str, text: str, retryable: bool) -> str | None:
        error = {"code": code, "message": text, "retryable": retryable}
        if not self._flush_before_end():
            return None
        if not do_finish_reply(
            self.message_id,
            status=Message.Status.FAILED,
            content="".join(self.parts),
            error=error,
            tool_calls=self.tool_records,
            sources=self.sources,
            attempt=self.message.attempts,
        ):
            return None
        self._record_usage()
        with contextlib.suppress(StreamClosed):
            self.publisher.publish(self.message_id, events.error_event(code=code, message=text, retryable=retryable))
        return Message.Status.FAILED
