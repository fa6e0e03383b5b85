"""Tools a `generate` step may offer the model: one module each in this package, registered by name.

A tool is a name, a description, the JSON Schema of its arguments, and a function. `run_tool` checks the
arguments against the schema and turns every failure (unknown tool, bad JSON, invalid arguments, an error
inside the tool) into an error result, so that a tool never fails a reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema


class ToolError(Exception):
    """A tool could not do what it was asked; the message is shown to the model (and the user)."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the reply it serves: the user's id and name, the message id, and the names of
    the connectors the request narrowed the reply to (None: every connector granted to the user)."""

    user_id: str
    user_name: str
    message_id: str
    connectors: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Tool:
    """A callable tool. `function(arguments, context)` returns a JSON-serialisable result or raises ToolError."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[[dict[str, Any], ToolContext], Any]

    def schema(self) -> dict[str, Any]:
        """The tool in OpenAI's `tools` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


_registry: dict[str, Tool] = {}
_builtins_loaded = False


def register(tool: Tool) -> Tool:
    """Add a tool to the registry (each tool module calls this once)."""
    _registry[tool.name] = tool
    return tool


def _load_builtins() -> None:
    # Importing the modules registers their tools.
    from pipelines.tools import calculator, clock, sql_query  # noqa: F401


def registry() -> dict[str, Tool]:
    """Every registered tool by name."""
    global _builtins_loaded
    if not _builtins_loaded:
        # A flag, not "is the registry empty": importing one tool module first must not hide the others.
        _load_builtins()
        _builtins_loaded = True
    return dict(_registry)


def run_tool(name: str, arguments: str, context: ToolContext) -> dict[str, Any]:
    """Run tool `name` with `arguments` (the JSON text the model wrote).

    Returns `{"result": ...}` on success or `{"error": "<what went wrong, for the model and the user>"}`;
    never raises for the tool's or the model's mistakes.
    """
    tool = registry().get(name)
    if tool is None:
        return {"error": f"There is no tool named {name!r}."}
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        return {"error": f"The arguments are not valid JSON: {exc.msg}."}
    try:
        jsonschema.validate(parsed, tool.parameters)
    except jsonschema.ValidationError as exc:
        return {"error": f"Invalid arguments: {exc.message}."}
    try:
        return {"result": tool.function(parsed, context)}
    except ToolError as exc:
        return {"error": str(exc)}
