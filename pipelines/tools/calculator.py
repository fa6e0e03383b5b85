"""The `calculator` tool: arithmetic with math functions, evaluated by simpleeval (never `eval`)."""

from __future__ import annotations

import ast
import math
from typing import Any

import simpleeval

from pipelines.tools import Tool, ToolContext, ToolError, register

MAX_EXPRESSION_LENGTH = 1000
"""Most characters in one expression."""

MAX_RESULT_BITS = 4096
"""Largest integer (in bits, about 1,200 decimal digits) that a power may produce or a result may be."""

FUNCTIONS = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}
NAMES = {"pi": math.pi, "e": math.e}


def _power(base: Any, exponent: Any) -> Any:
    # simpleeval only caps each operand (at 4,000,000), which still lets 3999999 ** 3999999 run for half a
    # minute; refuse integer powers whose result would exceed MAX_RESULT_BITS, then keep simpleeval's own cap.
    ints = isinstance(base, int) and isinstance(exponent, int)
    if ints and exponent > 0 and abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
        raise simpleeval.NumberTooHigh(f"{base} ** {exponent} is too large to compute.")
    return simpleeval.safe_power(base, exponent)


# Arithmetic only: comparisons, bit operations and `in`/`is` give no number, so they are left out. The
# string-size limits of simpleeval's + and * stay in place.
OPERATORS = {
    ast.Add: simpleeval.safe_add,
    ast.Sub: simpleeval.DEFAULT_OPERATORS[ast.Sub],
    ast.Mult: simpleeval.safe_mult,
    ast.Div: simpleeval.DEFAULT_OPERATORS[ast.Div],
    ast.FloorDiv: simpleeval.DEFAULT_OPERATORS[ast.FloorDiv],
    ast.Mod: simpleeval.DEFAULT_OPERATORS[ast.Mod],
    ast.Pow: _power,
    ast.USub: simpleeval.DEFAULT_OPERATORS[ast.USub],
    ast.UAdd: simpleeval.DEFAULT_OPERATORS[ast.UAdd],
}


def _refuse_attribute(node: ast.AST) -> Any:
    raise simpleeval.FeatureNotAvailable("attribute access (such as x.y) is not available in the calculator")


def _refuse_subscript(node: ast.AST) -> Any:
    raise simpleeval.FeatureNotAvailable("indexing (such as x[i]) is not available in the calculator")


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression such as `2 + 3 * 4` or `sqrt(16) * pi`.

    Offers + - * / // % **, parentheses, the functions in FUNCTIONS and the constants pi and e; no other
    names, no attribute access or indexing, no comparisons, no statements, and the result must be a number.

    Args:
        expression (str): at most MAX_EXPRESSION_LENGTH characters.

    Returns:
        int | float: the value (a finite number; integers up to MAX_RESULT_BITS bits).

    Raises:
        ToolError: with a message saying what is wrong (syntax, unknown name or function, forbidden feature,
            division by zero, a math domain error, a number too large...).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("The expression is empty.")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"The expression is longer than {MAX_EXPRESSION_LENGTH} characters.")
    try:
        # mode="eval" admits one expression only: statements (assignments, imports, several lines) fail here
        # rather than being half-run, as simpleeval would with a warning.
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"The expression is not valid: {exc.msg}.") from exc
    evaluator = simpleeval.SimpleEval(operators=OPERATORS, functions=dict(FUNCTIONS), names=dict(NAMES))
    # Refuse attribute access and subscripts outright, even those simpleeval would allow (such as `(1).real`).
    evaluator.nodes[ast.Attribute] = _refuse_attribute
    evaluator.nodes[ast.Subscript] = _refuse_subscript
    try:
        value = evaluator.eval(expression, previously_parsed=tree.body)
    except simpleeval.NumberTooHigh as exc:
        raise ToolError(f"The numbers are too large: {exc}") from exc
    except simpleeval.IterableTooLong as exc:
        raise ToolError(f"The expression would build something too long: {exc}") from exc
    except simpleeval.FunctionNotDefined as exc:
        raise ToolError(f"Unknown function '{exc.func_name}'; available: {', '.join(sorted(FUNCTIONS))}.") from exc
    except simpleeval.NameNotDefined as exc:
        raise ToolError(f"Unknown name '{exc.name}'; the constants are pi and e.") from exc
    except (simpleeval.OperatorNotDefined, KeyError) as exc:
        # simpleeval raises OperatorNotDefined for a missing binary or unary operator, and a bare KeyError
        # for a missing comparison: the calculator offers arithmetic only.
        raise ToolError(
            "The expression uses an operator the calculator does not offer (only + - * / // % ** and parentheses)."
        ) from exc
    except simpleeval.InvalidExpression as exc:
        raise ToolError(f"The expression is not allowed: {exc}.") from exc
    except ZeroDivisionError as exc:
        raise ToolError("Division by zero.") from exc
    except OverflowError as exc:
        raise ToolError("The result is too large to represent.") from exc
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"The expression cannot be computed: {exc}.") from exc
    except RecursionError as exc:
        raise ToolError("The expression is nested too deeply.") from exc
    return _check_number(value)


def _check_number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a complex number" if isinstance(value, complex) else f"a {type(value).__name__}, not a number"
        raise ToolError(f"The expression gives {kind}.")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError("The result is too large to show (more than about 1,200 digits).")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("The result is not a finite number.")
    return value


def _calculator(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    expression = arguments["expression"]
    return {"expression": expression, "value": evaluate(expression)}


register(
    Tool(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly. Supports + - * / // % ** and parentheses, the functions "
            "sqrt, sin, cos, tan (radians), log (natural, or log(x, base)), log10, exp, abs, round(x, digits), "
            "min, max, floor, ceil, and the constants pi and e. Returns the numeric value."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_EXPRESSION_LENGTH,
                    "description": "The expression, for example '2 + 3 * 4' or 'sqrt(16) * pi'.",
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
        function=_calculator,
    )
)
