"""The prompts of the text-to-SQL steps (seed 001), in one place so that they can be read and tuned together."""

from __future__ import annotations

from typing import Any

CLASSIFY = (
    "You decide whether a message is a question that a SQL query over these database tables can answer:\n"
    "{tables}\n\n"
    "Reply with one word: SQL if a query over these tables can answer it, OTHER if it cannot (a greeting, "
    "small talk, general knowledge, or anything unrelated to this data)."
)
EXPLAIN = (
    "The user's message is not a question about the data you can query. Reply in {language}, in two or three "
    "short sentences: say that you answer questions about this data ({tables}), and suggest one question they "
    "could ask about it."
)
GENERATE = (
    "You write one PostgreSQL SELECT query that answers the user's question, using only these tables and "
    "columns:\n\n{schema}\n\n"
    "Answer with the SQL only, in a ```sql block. Join tables on the columns their REFERENCES name. Give "
    "computed columns short names (AS total_revenue)."
)
REPAIR = (
    "That query cannot run: {reason}\nWrite a corrected query that answers the question. Answer with the SQL "
    "only, in a ```sql block."
)
SUMMARIZE = (
    "You are a data analyst. Answer the user's question in {language}, in two or three sentences, using only "
    "the query result given with it. Name the numbers you use; do not invent any."
)


def earlier_turns(turns: list[tuple[str, str]]) -> str:
    """The thread's earlier questions and the SQL that answered them, oldest first."""
    if not turns:
        return ""
    lines = ["Earlier questions in this conversation and the SQL that answered them:"]
    for question, sql in turns:
        lines.append(f"Question: {question}")
        lines.append(f"SQL: {sql}" if sql else "SQL: (none)")
    return "\n".join(lines) + "\n\n"


def result_table(columns: list[str], rows: list[list[Any]], row_count: int, truncated: bool) -> str:
    """A query result as the summary prompt shows it: a header and one line per row, values separated by |."""
    shown = len(rows)
    more = " or more" if truncated else ""
    head = f"The query returned {row_count}{more} rows" + (
        f"; the first {shown} are shown" if shown < row_count else ""
    )
    if not rows:
        return "The query returned no rows."
    lines = [head + ":", " | ".join(columns)]
    lines += [" | ".join("NULL" if value is None else str(value) for value in row) for row in rows]
    return "\n".join(lines)
