"""The text-to-SQL step types (seed 001) and the rule for their order, checked by `pipelines.steps.validate_steps`.

- `classify`: is the question about the data? A model answers; a question that is not ends the reply as a
  non-SQL question (the step's `finished` event says `outcome: "non_sql"`) with a short explanation written by
  the model in `language`. Optional `model`, `instructions`, `language`.
- `retrieve_schema`: the connector's semantic model (tables, columns, types, keys and comments, introspected
  and cached, `pipelines.text_to_sql.schema`), narrowed to the `max_tables` (1-50, default 8) tables closest to
  the question by embedding similarity and names.
- `generate_sql`: the model writes one SELECT from those tables and the thread's earlier questions and SQL
  (`history_turns`, 0-10, default 3); it is checked (`pipelines.text_to_sql.checks`: one SELECT, only known
  tables and columns, a LIMIT added) and, when the check or the database refuses it, repaired by the model at
  most `repair_rounds` times (0-3, default 1) across the whole reply. Optional `model`, `instructions`,
  `max_tokens` (16-2048, default 256).
- `execute_sql`: runs it on the connector (`pipelines.connectors.run_read_query`: read-only transaction,
  statement timeout, row limit), with the caller's grants; the `finished` event carries `sql`, `columns`, the
  first `preview_rows` rows (1-100, default 20) and `rowCount`.
- `summarize`: the model answers the question in `language` (default English) from a sample of `sample_size`
  rows (1-500, default 20), streamed as the reply's text. Optional `model`, `instructions`, `max_tokens`
  (1-2048, default 256).

Every step may name the `connector` (a `pipelines.Connector` slug); the first step that names one sets it for
the whole pipeline, and none names one: CHATSITE_TEXT_TO_SQL_CONNECTOR (the seeded `demo`). It is used only
when the person asking is granted it (`pipelines.access.usable_connectors`), whoever wrote the workflow: the
model writes the query, so the asker's own grants apply.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from chats.fields import StrictCharField, StrictSlugField

CLASSIFY, RETRIEVE_SCHEMA, GENERATE_SQL, EXECUTE_SQL, SUMMARIZE = (
    "classify",
    "retrieve_schema",
    "generate_sql",
    "execute_sql",
    "summarize",
)
STEP_TYPES = (CLASSIFY, RETRIEVE_SCHEMA, GENERATE_SQL, EXECUTE_SQL, SUMMARIZE)
DEFAULT_LANGUAGE = "English"


class _TextToSqlStep(serializers.Serializer):
    type = StrictCharField(max_length=40)
    connector = StrictSlugField(max_length=100, required=False)


class ClassifyStep(_TextToSqlStep):
    model = StrictCharField(max_length=100, required=False)
    instructions = StrictCharField(max_length=4000, required=False)
    language = StrictCharField(max_length=40, required=False, default=DEFAULT_LANGUAGE)


class RetrieveSchemaStep(_TextToSqlStep):
    max_tables = serializers.IntegerField(min_value=1, max_value=50, required=False, default=8)


class GenerateSqlStep(_TextToSqlStep):
    model = StrictCharField(max_length=100, required=False)
    instructions = StrictCharField(max_length=4000, required=False)
    max_tokens = serializers.IntegerField(min_value=16, max_value=2048, required=False, default=256)
    repair_rounds = serializers.IntegerField(min_value=0, max_value=3, required=False, default=1)
    history_turns = serializers.IntegerField(min_value=0, max_value=10, required=False, default=3)


class ExecuteSqlStep(_TextToSqlStep):
    preview_rows = serializers.IntegerField(min_value=1, max_value=100, required=False, default=20)


class SummarizeStep(_TextToSqlStep):
    model = StrictCharField(max_length=100, required=False)
    instructions = StrictCharField(max_length=4000, required=False)
    sample_size = serializers.IntegerField(min_value=1, max_value=500, required=False, default=20)
    language = StrictCharField(max_length=40, required=False, default=DEFAULT_LANGUAGE)
    max_tokens = serializers.IntegerField(min_value=1, max_value=2048, required=False, default=256)


SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    CLASSIFY: ClassifyStep,
    RETRIEVE_SCHEMA: RetrieveSchemaStep,
    GENERATE_SQL: GenerateSqlStep,
    EXECUTE_SQL: ExecuteSqlStep,
    SUMMARIZE: SummarizeStep,
}

ORDER_RULE = (
    "A text-to-SQL workflow runs classify (optional), retrieve_schema, generate_sql, execute_sql (optional) and "
    "summarize (optional, after execute_sql), in that order, each at most once, after any system_prompt or "
    "rewrite_query steps, and has no generate step."
)
_ALLOWED_SEQUENCES = {
    (RETRIEVE_SCHEMA, GENERATE_SQL),
    (RETRIEVE_SCHEMA, GENERATE_SQL, EXECUTE_SQL),
    (RETRIEVE_SCHEMA, GENERATE_SQL, EXECUTE_SQL, SUMMARIZE),
}
_ALLOWED_SEQUENCES |= {(CLASSIFY, *sequence) for sequence in _ALLOWED_SEQUENCES}


def is_text_to_sql(steps: list[dict[str, Any]]) -> bool:
    """Whether any of `steps` is a text-to-SQL step (then the pipeline answers without a `generate` step)."""
    return any(step.get("type") in STEP_TYPES for step in steps)


def order_problem(steps: list[dict[str, Any]]) -> str | None:
    """Why these (individually valid) steps are not a text-to-SQL pipeline (ORDER_RULE), or None when they are."""
    kinds = [step["type"] for step in steps]
    first = next(i for i, kind in enumerate(kinds) if kind in STEP_TYPES)
    before, rest = kinds[:first], tuple(kinds[first:])
    if rest not in _ALLOWED_SEQUENCES or any(kind not in ("system_prompt", "rewrite_query") for kind in before):
        return ORDER_RULE
    return None
