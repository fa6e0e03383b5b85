"""The text-to-SQL steps (seed 001) as a reply runs them: `run_step(generation, step)` for each step type of
`pipelines.text_to_sql.definitions`, on the `pipelines.generation.ReplyGeneration` of the reply.

What each step reports in its `step` `finished` event (chats.event_schema, EVENT_TYPES["step"]):
- classify: `outcome` (`sql` or `non_sql`); after a `non_sql` outcome the model's explanation streams as the
  reply's text and the reply ends there (`end`, finishReason `stop`);
- retrieve_schema: `tables` (the names chosen, best first);
- generate_sql: `sql` (checked, with its LIMIT), `repaired` (whether a repair round was needed); its prompt
  holds the schema, one worked example (a count on the best table), the thread's earlier questions and SQL;
- execute_sql: `sql` (the statement run), `columns`, `rows` (the first `preview_rows`, JSON-safe lists),
  `rowCount` (rows returned, at most the connector's row limit), `truncated`, `repaired`;
- summarize: `summary` (the text it streamed).
The reply's saved text is what a person reads in the UI: the final SQL as a ```sql block, then the summary
(or the explanation of a non-SQL question). Later questions in the thread see the earlier questions and the
SQL blocks of their answers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from chats.models import Message
from pipelines.connectors import ConnectorError, run_read_query
from pipelines.providers.base import ChatMessage, GenerationError, Provider, get_provider
from pipelines.reply_control import BudgetExceeded, active_model, release_database_connection
from pipelines.text_to_sql import definitions as kinds
from pipelines.text_to_sql import prompts
from pipelines.text_to_sql.checks import SqlRefused, check_generated_sql, extract_sql
from pipelines.text_to_sql.schema import SemanticModel, Table, relevant_tables, semantic_model

if TYPE_CHECKING:
    from pipelines.generation import ReplyGeneration
    from pipelines.models import Connector, ModelConfig

logger = logging.getLogger(__name__)

PROMPT_MARGIN_TOKENS = 96
"""Tokens kept free when the schema is fitted into the prompt."""
CLASSIFY_MAX_TOKENS = 4
EXPLAIN_MAX_TOKENS = 160
_SQL_BLOCK = re.compile(r"```sql\s*\n(.*?)\n```", re.DOTALL)
# Database failures a better query may fix; the others (timeout, unreachable, misconfigured) it cannot.
_REPAIRABLE = ("sql_error", "sql_rejected")


@dataclass
class SqlPipeline:
    """What the text-to-SQL steps of one reply share."""

    connector: Connector
    model: SemanticModel | None = None
    tables: list[Table] = field(default_factory=list)
    sql: str = ""
    repairs_left: int = 1
    repaired: bool = False
    history: list[ChatMessage] = field(default_factory=list)  # the generate prompt, for repair rounds
    max_tokens: int = 256
    config: ModelConfig | None = None
    result: dict[str, Any] | None = None
    sql_written: bool = False


def _connector(gen: ReplyGeneration) -> Connector:
    """The pipeline's connector: named by its first step that names one, else CHATSITE_TEXT_TO_SQL_CONNECTOR;
    usable only when granted to the person asking.

    Raises:
        GenerationError: `connector_unavailable`, the same words whether it is missing, inactive or not granted.
    """
    from pipelines.access import usable_connectors

    named = [s["connector"] for s in gen.steps if s.get("type") in kinds.STEP_TYPES and s.get("connector")]
    name = named[0] if named else settings.CHATSITE_TEXT_TO_SQL_CONNECTOR
    connector = usable_connectors(gen.message.chat.owner).filter(name=name).first()
    if connector is None:
        raise GenerationError("connector_unavailable", f"The connector '{name}' is not available to you.")
    return connector


def state(gen: ReplyGeneration) -> SqlPipeline:
    """The reply's text-to-SQL state, created (with its connector checked) by the first step that needs it."""
    if getattr(gen, "sql_pipeline", None) is None:
        gen.sql_pipeline = SqlPipeline(connector=_connector(gen))
    return gen.sql_pipeline


def _semantic_model(gen: ReplyGeneration, pipeline: SqlPipeline) -> SemanticModel:
    if pipeline.model is None:
        try:
            pipeline.model = semantic_model(pipeline.connector, timeout_ms=max(1, int(gen.time_left() * 1000)))
        except ConnectorError as exc:
            raise GenerationError(exc.code, exc.message, retryable=exc.code != "connector_misconfigured") from exc
    return pipeline.model


def ask_model(
    gen: ReplyGeneration, config: ModelConfig, prompt: list[ChatMessage], max_tokens: int, *, to_user: bool = False
) -> str:
    """Run one model call and return its text; with `to_user`, its deltas stream as the reply's text too.

    Raises:
        Cancelled, BudgetExceeded: from the reply (see `ReplyGeneration.add_content`, `check_budget`).
        GenerationError: the provider failed.
    """
    provider: Provider = get_provider(config)
    gen.last_provider, gen.last_prompt = provider, prompt
    gen.content_sent_at = None
    parts: list[str] = []
    release_database_connection()
    stream = provider.stream_chat(prompt, max_tokens=max_tokens, temperature=0.0)
    try:
        for delta in stream:
            if delta.text:
                parts.append(delta.text)
                if to_user:
                    gen.add_content(delta.text)
            if delta.finish_reason and to_user:
                gen.finish_reason = delta.finish_reason
            gen._count(delta)
            gen.check_budget()
        if to_user:
            gen.flush_content()
    finally:
        stream.close()
    return "".join(parts)


def _table_list(model: SemanticModel, limit: int = 40) -> str:
    return "; ".join(t.qualified + (f" ({t.comment})" if t.comment else "") for t in model.tables[:limit]) or "none"


def earlier_turns(history: list[Message], turns: int) -> list[tuple[str, str]]:
    """The thread's last `turns` earlier questions, each with the SQL of the answer after it ("" for none)."""
    pairs: list[tuple[str, str]] = []
    earlier = history[:-1] if history and history[-1].role == Message.Role.USER else history
    for at, message in enumerate(earlier):
        if message.role != Message.Role.USER:
            continue
        answer = earlier[at + 1] if at + 1 < len(earlier) else None
        found = _SQL_BLOCK.search(answer.content) if answer is not None and answer.content else None
        pairs.append((message.content, found.group(1).strip() if found else ""))
    return pairs[-turns:] if turns else []


# --- the steps -------------------------------------------------------------------------------------------------


def classify(gen: ReplyGeneration, step: dict[str, Any]) -> dict[str, Any]:
    pipeline = state(gen)
    model = _semantic_model(gen, pipeline)
    config = active_model(step.get("model") or gen.message.model_id)
    system = prompts.CLASSIFY.format(tables=_table_list(model))
    if step.get("instructions"):
        system += "\n\n" + step["instructions"]
    prompt: list[ChatMessage] = [
        {"role": "system", "content": system},
        {"role": "user", "content": gen._current_question()},
    ]
    verdict = ask_model(gen, config, prompt, CLASSIFY_MAX_TOKENS).strip().upper()
    # A small model may answer anything: only a clear OTHER (or NO) ends the pipeline; in doubt, try SQL.
    if not verdict.startswith(("OTHER", "NO")):
        return {"outcome": "sql"}
    language = step.get("language") or kinds.DEFAULT_LANGUAGE

    def explain() -> None:
        explain_prompt: list[ChatMessage] = [
            {"role": "system", "content": prompts.EXPLAIN.format(language=language, tables=_table_list(model, 10))},
            {"role": "user", "content": gen._current_question()},
        ]
        ask_model(gen, config, explain_prompt, EXPLAIN_MAX_TOKENS, to_user=True)

    gen.after_step = explain
    return {"outcome": "non_sql"}


def retrieve_schema(gen: ReplyGeneration, step: dict[str, Any]) -> dict[str, Any]:
    pipeline = state(gen)
    model = _semantic_model(gen, pipeline)
    chosen = relevant_tables(model, gen._current_question(), step.get("max_tables", 8))
    pipeline.tables = [table for table, _ in chosen]
    if not pipeline.tables:
        raise GenerationError(
            "no_tables", f"The connector '{pipeline.connector.name}' has no table you may read.", retryable=False
        )
    return {"tables": [t.qualified for t in pipeline.tables]}


def _fit_schema(provider: Provider, tables: list[Table], budget: int) -> str:
    """The tables' descriptions, best first, while they fit `budget` tokens (at least the first)."""
    parts: list[str] = []
    for table in tables:
        text = table.describe()
        cost = provider.count_tokens(text) + 1
        if parts and cost > budget:
            break
        budget -= cost
        parts.append(text)
    return "\n\n".join(parts)


def _checked(gen: ReplyGeneration, pipeline: SqlPipeline, answer: str) -> str:
    assert pipeline.model is not None
    return check_generated_sql(extract_sql(answer), pipeline.model, row_limit=pipeline.connector.max_rows)


def _repair(gen: ReplyGeneration, pipeline: SqlPipeline, reason: str) -> str:
    """One repair round: the model sees its query and why it failed, and writes another (checked).

    Raises:
        GenerationError: `sql_invalid` when no repair round is left or the repaired query is refused too.
    """
    if pipeline.repairs_left <= 0 or pipeline.config is None:
        raise GenerationError("sql_invalid", f"The model's query cannot run: {reason}", retryable=True)
    pipeline.repairs_left -= 1
    pipeline.repaired = True
    prompt = [
        *pipeline.history,
        {"role": "assistant", "content": f"```sql\n{pipeline.sql}\n```"},
        {"role": "user", "content": prompts.REPAIR.format(reason=reason)},
    ]
    answer = ask_model(gen, pipeline.config, prompt, pipeline.max_tokens)
    pipeline.sql = extract_sql(answer) or pipeline.sql
    try:
        return _checked(gen, pipeline, answer)
    except SqlRefused as exc:
        raise GenerationError("sql_invalid", f"The model's query cannot run: {exc}", retryable=True) from exc


def _write_sql(gen: ReplyGeneration, pipeline: SqlPipeline) -> None:
    """The final SQL into the reply's text, as a ```sql block (once)."""
    if not pipeline.sql_written:
        pipeline.sql_written = True
        gen.content_sent_at = None
        gen.add_content(f"```sql\n{pipeline.sql}\n```\n")
        gen.flush_content()


def generate_sql(gen: ReplyGeneration, step: dict[str, Any]) -> dict[str, Any]:
    pipeline = state(gen)
    _semantic_model(gen, pipeline)
    config = active_model(step.get("model") or gen.message.model_id)
    provider = get_provider(config)
    pipeline.config, pipeline.max_tokens = config, step.get("max_tokens", 256)
    pipeline.repairs_left = step.get("repair_rounds", 1)
    question = gen._current_question()
    user = prompts.earlier_turns(earlier_turns(gen.history, step.get("history_turns", 3))) + f"Question: {question}"
    instructions = [*gen.system, step["instructions"]] if step.get("instructions") else list(gen.system)
    fixed = prompts.GENERATE.format(schema="") + "\n\n".join(instructions) + user
    budget = config.context_window - pipeline.max_tokens - provider.count_tokens(fixed) - PROMPT_MARGIN_TOKENS
    system = prompts.GENERATE.format(schema=_fit_schema(provider, pipeline.tables, budget))
    if instructions:
        system += "\n\n" + "\n\n".join(instructions)
    # One worked example first (a count on the best table): small models then answer with SQL, not prose.
    example = pipeline.tables[0].qualified
    pipeline.history = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Question: How many rows does the table {example} have?"},
        {"role": "assistant", "content": f"```sql\nSELECT COUNT(*) AS row_count FROM {example}\n```"},
        {"role": "user", "content": user},
    ]
    answer = ask_model(gen, config, pipeline.history, pipeline.max_tokens)
    pipeline.sql = extract_sql(answer)
    try:
        pipeline.sql = _checked(gen, pipeline, answer)
    except SqlRefused as exc:
        pipeline.sql = _repair(gen, pipeline, str(exc))
    if not any(s.get("type") == kinds.EXECUTE_SQL for s in gen.steps):
        _write_sql(gen, pipeline)
    return {"sql": pipeline.sql, "repaired": pipeline.repaired}


def _run(gen: ReplyGeneration, pipeline: SqlPipeline) -> dict[str, Any]:
    gen.check_budget()
    left_ms = max(1, int(gen.time_left() * 1000))
    try:
        return run_read_query(pipeline.connector, pipeline.sql, None, timeout_ms=left_ms, message_id=gen.message_id)
    except ConnectorError as exc:
        if exc.code == "sql_timeout" and left_ms < pipeline.connector.statement_timeout_ms:
            raise BudgetExceeded from exc
        raise


def execute_sql(gen: ReplyGeneration, step: dict[str, Any]) -> dict[str, Any]:
    pipeline = state(gen)
    try:
        result = _run(gen, pipeline)
    except ConnectorError as exc:
        if exc.code not in _REPAIRABLE:
            retryable = exc.code in ("sql_timeout", "connector_unavailable")
            raise GenerationError(exc.code, exc.message, retryable=retryable) from exc
        pipeline.sql = _repair(gen, pipeline, exc.message)
        try:
            result = _run(gen, pipeline)
        except ConnectorError as again:
            raise GenerationError(again.code, again.message, retryable=again.code != "sql_rejected") from again
    pipeline.result = result
    _write_sql(gen, pipeline)
    preview = result["rows"][: step.get("preview_rows", 20)]
    return {
        "sql": pipeline.sql,
        "columns": result["columns"],
        "rows": preview,
        "rowCount": result["rowCount"],
        "truncated": result["truncated"],
        "repaired": pipeline.repaired,
    }


def summarize(gen: ReplyGeneration, step: dict[str, Any]) -> dict[str, Any]:
    pipeline = state(gen)
    result = pipeline.result or {"columns": [], "rows": [], "rowCount": 0, "truncated": False}
    config = active_model(step.get("model") or gen.message.model_id)
    sample = result["rows"][: step.get("sample_size", 20)]
    system = prompts.SUMMARIZE.format(language=step.get("language") or kinds.DEFAULT_LANGUAGE)
    if step.get("instructions"):
        system += "\n\n" + step["instructions"]
    table = prompts.result_table(result["columns"], sample, result["rowCount"], result["truncated"])
    prompt: list[ChatMessage] = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Question: {gen._current_question()}\n\nSQL: {pipeline.sql}\n\n{table}"},
    ]
    gen.add_content("\n")
    summary = ask_model(gen, config, prompt, step.get("max_tokens", 256), to_user=True)
    return {"summary": summary.strip()}


RUNNERS = {
    kinds.CLASSIFY: classify,
    kinds.RETRIEVE_SCHEMA: retrieve_schema,
    kinds.GENERATE_SQL: generate_sql,
    kinds.EXECUTE_SQL: execute_sql,
    kinds.SUMMARIZE: summarize,
}


def run_step(gen: ReplyGeneration, step: dict[str, Any]) -> dict[str, Any]:
    """Run one text-to-SQL step of the reply and return its `finished` event's fields.

    Raises:
        GenerationError: with a code and a sentence (`connector_unavailable`, `sql_invalid`, `sql_error`,
            `sql_timeout`, `no_tables`, `model_unavailable`, a provider's); Cancelled and BudgetExceeded
            from the reply.
    """
    return RUNNERS[step["type"]](gen, step)
