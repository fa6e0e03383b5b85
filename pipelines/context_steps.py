"""The steps that gather context before the answer (`pipelines.steps`): `rewrite_query`, `sql` and `retrieve`,
with the attached documents and retrieved passages fitted to the prompt as numbered sources.

`ContextSteps` is a part of `pipelines.generation.ReplyGeneration` (which it is mixed into): its methods use the
reply's state (`message`, `history`, `question`, `context`, `retrieved`) and its event and budget helpers.
"""

from __future__ import annotations

import logging
from typing import Any

from chats.models import Message
from pipelines.models import Connector
from pipelines.prompts import sql_context
from pipelines.providers.base import ChatMessage, GenerationError, Provider, get_provider
from pipelines.reply_control import BudgetExceeded, active_model, release_database_connection
from pipelines.steps import DEFAULT_SIMILARITY_THRESHOLD

logger = logging.getLogger("pipelines.generation")

# Most rows of an `sql` step's result that its `step` finished event carries (protocols preview them).
SQL_EVENT_ROWS = 20
DEFAULT_REWRITE_INSTRUCTIONS = (
    "Rewrite the user's last question as one short, self-contained question. Answer with the question only."
)


class ContextSteps:
    """The context steps of a reply (see the module)."""

    def _step_rewrite_query(self, step: dict, explicit: bool, index: int) -> dict | None:
        config = active_model(step.get("model") or self.message.model_id)
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
        return {
            "sql": step["query"],
            "connector": connector.name,
            "columns": result["columns"],
            "rows": result["rows"][:SQL_EVENT_ROWS],
            "rowCount": result["rowCount"],
        }

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
