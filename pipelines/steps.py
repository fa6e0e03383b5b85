"""Workflow steps: their definitions, and the validation every save goes through (API and admin).

A workflow's `steps` is a list of objects, each with a `type`:
- `system_prompt`: `text` (up to 20,000 characters) added to the system prompt; `{date}`, `{time}`,
  `{weekday}` and `{user_name}` are replaced (other braces are left as they are);
- `rewrite_query`: an LLM call, not streamed to the user, whose answer replaces the question for the steps
  after it: optional `instructions`, `model` (a modelId), `max_tokens` (1-512, default 64);
- `sql`: a read-only `query` on the `connector` named (a `pipelines.Connector`); `%(text)s` in the query is
  bound to the current question; the columns and rows go to the `generate` step as context;
- `generate`: the answer, streamed: optional `model`, `temperature` (0-2), `max_tokens`, `tools` (names from
  the tool registry), `max_tool_rounds` (0-10, default 3) and `tool_choice` (`auto`, `required`, or the name of
  one of its tools to force that call while tool rounds are left: some servers call tools only when forced).
There is exactly one `generate` step and it comes last.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

MAX_STEPS = 20


class _Step(serializers.Serializer):
    type = serializers.ChoiceField(choices=["system_prompt", "rewrite_query", "sql", "generate"])


class SystemPromptStep(_Step):
    text = serializers.CharField(max_length=20000, trim_whitespace=False)


class RewriteQueryStep(_Step):
    instructions = serializers.CharField(max_length=4000, required=False)
    model = serializers.CharField(max_length=100, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=512, required=False, default=64)


class SqlStep(_Step):
    connector = serializers.SlugField(max_length=100)
    query = serializers.CharField(max_length=20000)


class GenerateStep(_Step):
    model = serializers.CharField(max_length=100, required=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=100000, required=False)
    tools = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=20)
    max_tool_rounds = serializers.IntegerField(min_value=0, max_value=10, required=False, default=3)
    tool_choice = serializers.CharField(max_length=100, required=False)


STEP_SERIALIZERS: dict[str, type[_Step]] = {
    "system_prompt": SystemPromptStep,
    "rewrite_query": RewriteQueryStep,
    "sql": SqlStep,
    "generate": GenerateStep,
}


def _describe(errors: Any) -> str:
    if isinstance(errors, dict):
        return "; ".join(f"{field}: {_describe(value)}" for field, value in errors.items())
    if isinstance(errors, list):
        return " ".join(_describe(e) for e in errors)
    return str(errors)


def validate_steps(steps: Any) -> list[dict[str, Any]]:
    """Check a workflow's steps and return them normalised (defaults filled in, unknown keys dropped).

    Raises:
        serializers.ValidationError: a list of messages, one per problem, each naming the step
            ("Step 2 (sql): connector: ..."), for an unknown type, a bad field, an unknown model, tool or
            connector, a read query that is not a single SELECT, or a misplaced or missing `generate` step.
    """
    from pipelines.access import usable_models
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
        if kind == "sql":
            if not Connector.objects.filter(name=data["connector"], is_active=True).exists():
                problems.append(f"Step {number} (sql): connector: no active connector named '{data['connector']}'.")
            try:
                check_read_query(data["query"])
            except ConnectorError as exc:
                problems.append(f"Step {number} (sql): query: {exc.message}")
        cleaned.append(data)
    generate_at = [i for i, step in enumerate(cleaned) if step["type"] == "generate"]
    if len(cleaned) == len(steps) and (generate_at != [len(cleaned) - 1]):
        problems.append("A workflow needs exactly one generate step, and it must be the last step.")
    if problems:
        raise serializers.ValidationError(problems)
    return cleaned
