"""Workflow steps: their definitions, and the validation every save goes through (API and admin).

A workflow's `steps` is a list of objects, each with a `type`:
- `system_prompt`: `text` (up to 20,000 characters) added to the system prompt; `{date}`, `{time}`,
  `{weekday}` and `{user_name}` are replaced (other braces are left as they are);
- `rewrite_query`: an LLM call, not streamed to the user, whose answer replaces the question for the steps
  after it: optional `instructions`, `model` (a modelId), `max_tokens` (1-512, default 64);
- `sql`: a read-only `query` on the `connector` named (a `pipelines.Connector` granted to the workflow's
  owner; a shared workflow, written by staff, may name any active one); `%(text)s` in the query is bound to
  the current question; the columns and rows go to the `generate` step as context;
- `retrieve`: passages of the user's documents for the question (seed 002's RAG options): `sources` (each
  a `collection` id, or none for every collection the user may search, with `limit` 1-50 (5),
  `similarity_threshold` 0-1 (0.25: all-MiniLM-L6-v2 scores related passages about 0.25-0.7, so seed
  002's 0.7 would drop most answers), `weight` 0-2 (1) and `metadata_filters` {key: value or [values]});
  no `sources` means every collection the user may search, with the step's own `limit` and
  `similarity_threshold`; `retrieval_strategy` (`merge`, `sequential`, `ensemble`; see
  `knowledge.retrieval`) and `max_total_results` 1-50 (10). The passages go to the `generate` step,
  numbered for citations, and out in one `sources` event before the first `content` event;
- `generate`: the answer, streamed: optional `model`, `temperature` (0-2), `max_tokens`, `tools` (names from
  the tool registry), `max_tool_rounds` (0-10, default 3) and `tool_choice` (`auto`, `required`, or the name of
  one of its tools to force that call while tool rounds are left: some servers call tools only when forced).
There is exactly one `generate` step and it comes last, except in a text-to-SQL pipeline (seed 001): its steps
`classify`, `retrieve_schema`, `generate_sql`, `execute_sql` and `summarize` are described, with the rule for
their order, in `pipelines.text_to_sql.definitions`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from chats.fields import StrictCharField, StrictChoiceField, StrictSlugField, StrictUUIDField
from pipelines.text_to_sql import definitions as text_to_sql

MAX_STEPS = 20
DEFAULT_SIMILARITY_THRESHOLD = 0.25


class _Step(serializers.Serializer):
    type = StrictChoiceField(choices=["system_prompt", "rewrite_query", "sql", "retrieve", "generate"])


class SystemPromptStep(_Step):
    text = StrictCharField(max_length=20000, trim_whitespace=False)


class RewriteQueryStep(_Step):
    instructions = StrictCharField(max_length=4000, required=False)
    model = StrictCharField(max_length=100, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=512, required=False, default=64)


class SqlStep(_Step):
    connector = StrictSlugField(max_length=100)
    query = StrictCharField(max_length=20000)


class MetadataFiltersField(serializers.DictField):
    """`{key: value}` or `{key: [values]}`: plain keys, scalar values (see knowledge.vectors.metadata_q)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        from knowledge.vectors import METADATA_KEY

        value = super().to_internal_value(data)
        for key, wanted in value.items():
            if not METADATA_KEY.match(key):
                raise serializers.ValidationError(f"'{key}' is not a plain name (letters, digits, _).")
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
                raise serializers.ValidationError(f"'{key}': give a text, number or boolean, or a list of them.")
        return value


class RetrieveSource(serializers.Serializer):
    collection = StrictUUIDField(required=False, allow_null=True, default=None)
    limit = serializers.IntegerField(min_value=1, max_value=50, required=False, default=5)
    similarity_threshold = serializers.FloatField(
        min_value=0.0, max_value=1.0, required=False, default=DEFAULT_SIMILARITY_THRESHOLD
    )
    weight = serializers.FloatField(min_value=0.0, max_value=2.0, required=False, default=1.0)
    metadata_filters = MetadataFiltersField(required=False, default=dict)


class RetrieveStep(_Step):
    sources = serializers.ListField(child=RetrieveSource(), required=False, max_length=20, default=list)
    limit = serializers.IntegerField(min_value=1, max_value=50, required=False, default=5)
    similarity_threshold = serializers.FloatField(
        min_value=0.0, max_value=1.0, required=False, default=DEFAULT_SIMILARITY_THRESHOLD
    )
    retrieval_strategy = StrictChoiceField(choices=["merge", "sequential", "ensemble"], required=False, default="merge")
    max_total_results = serializers.IntegerField(min_value=1, max_value=50, required=False, default=10)


class GenerateStep(_Step):
    model = StrictCharField(max_length=100, required=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=100000, required=False)
    tools = serializers.ListField(child=StrictCharField(max_length=100), required=False, max_length=20)
    max_tool_rounds = serializers.IntegerField(min_value=0, max_value=10, required=False, default=3)
    tool_choice = StrictCharField(max_length=100, required=False)


STEP_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "system_prompt": SystemPromptStep,
    "rewrite_query": RewriteQueryStep,
    "sql": SqlStep,
    "retrieve": RetrieveStep,
    "generate": GenerateStep,
    **text_to_sql.SERIALIZERS,
}


def _describe(errors: Any) -> str:
    if isinstance(errors, dict):
        return "; ".join(f"{field}: {_describe(value)}" for field, value in errors.items())
    if isinstance(errors, list):
        return " ".join(_describe(e) for e in errors)
    return str(errors)


ANY_OWNER = object()


def _collection_problem(collection_id: Any, owner: Any) -> str | None:
    """Why a retrieve source may not name this collection (None: it may), for a workflow of `owner`."""
    from knowledge.models import Collection

    collection = Collection.objects.filter(id=collection_id).first()
    if collection is None:
        return f"no collection {collection_id}."
    if owner is ANY_OWNER or collection.owner_id is None:
        return None
    if owner is None or collection.owner_id != owner.id:
        # A shared workflow runs for everyone, so it may name shared collections only.
        return f"collection {collection_id} is not yours to search."
    return None


def validate_steps(steps: Any, *, owner: Any = ANY_OWNER) -> list[dict[str, Any]]:
    """Check a workflow's steps and return them normalised (defaults filled in, unknown keys dropped).

    `owner` is the workflow's owner (None: a shared workflow, written by staff): a retrieve step may name only
    collections that owner may search (a shared workflow: shared collections), and an sql step only
    connectors granted to that owner (a shared workflow: any active connector). Leave it out to skip both
    checks.

    Raises:
        serializers.ValidationError: a list of messages, one per problem, each naming the step
            ("Step 2 (sql): connector: ..."), for an unknown type, a bad field, an unknown model, tool or
            connector, a read query that is not a single SELECT, a misplaced or missing `generate` step, or
            text-to-SQL steps out of order (`pipelines.text_to_sql.definitions.ORDER_RULE`).
    """
    from pipelines.access import usable_models, workflow_connectors
    from pipelines.connectors import ConnectorError, check_read_query
    from pipelines.models import Connector
    from pipelines.tools import registry

    if not isinstance(steps, list):
        raise serializers.ValidationError(["Steps must be a list of step objects."])
    if not steps:
        return []
    if len(steps) > MAX_STEPS:
        raise serializers.ValidationError([f"A workflow has at most {MAX_STEPS} steps."])
    problems: list[str] = []
    cleaned: list[dict[str, Any]] = []
    for number, raw in enumerate(steps, start=1):
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in STEP_SERIALIZERS:
            problems.append(f"Step {number}: type must be one of {', '.join(STEP_SERIALIZERS)}.")
            continue
        step = STEP_SERIALIZERS[kind](data=raw)
        if not step.is_valid():
            problems.append(f"Step {number} ({kind}): {_describe(step.errors)}")
            continue
        data = dict(step.validated_data)
        if data.get("model") and not usable_models().filter(model_id=data["model"]).exists():
            problems.append(f"Step {number} ({kind}): model: unknown model '{data['model']}'.")
        if kind == "generate":
            unknown = [name for name in data.get("tools", []) if name not in registry()]
            if unknown:
                problems.append(f"Step {number} (generate): tools: unknown tool(s) {', '.join(unknown)}.")
            choice = data.get("tool_choice")
            if choice and choice not in ("auto", "required", *data.get("tools", [])):
                problems.append(f"Step {number} (generate): tool_choice: use auto, required, or one of its tools.")
        if kind == "retrieve":
            for source in data["sources"]:
                source["collection"] = str(source["collection"]) if source["collection"] else None
                problem = source["collection"] and _collection_problem(source["collection"], owner)
                if problem:
                    problems.append(f"Step {number} (retrieve): sources: {problem}")
        if kind == "sql" or (kind in text_to_sql.STEP_TYPES and data.get("connector")):
            allowed = Connector.objects.filter(is_active=True) if owner is ANY_OWNER else workflow_connectors(owner)
            connector = allowed.filter(name=data["connector"]).first()
            if connector is None:
                # The same words whether it is missing, inactive or not granted: names are not confirmed.
                problems.append(
                    f"Step {number} ({kind}): connector: no active connector named '{data['connector']}' that this "
                    "workflow may use."
                )
        if kind == "sql":
            try:
                check_read_query(data["query"], timeout_ms=connector.statement_timeout_ms if connector else None)
            except ConnectorError as exc:
                problems.append(f"Step {number} (sql): query: {exc.message}")
        cleaned.append(data)
    generate_at = [i for i, step in enumerate(cleaned) if step["type"] == "generate"]
    if len(cleaned) == len(steps) and text_to_sql.is_text_to_sql(cleaned):
        if problem := text_to_sql.order_problem(cleaned):
            problems.append(problem)
    elif len(cleaned) == len(steps) and (generate_at != [len(cleaned) - 1]):
        problems.append("A workflow needs exactly one generate step, and it must be the last step.")
    if problems:
        raise serializers.ValidationError(problems)
    return cleaned
