"""Text-to-SQL benchmark (seed 001): execution accuracy of chatsite's pipeline on 30 questions over the demo sales
database (`bench/text_to_sql_set.py`), and the time of each phase. Run with `make bench-sql` (or
`python bench/text_to_sql.py --help`).

The model: `--model` names a configured modelId (default `smollm2-135m`, the embedded SmolLM2, offline); or
`--openai-base-url`, `--openai-model` and `--api-key-env` describe any OpenAI-compatible server (OpenAI, vLLM,
Ollama, llama.cpp server...), saved as the model `bench-openai`.

Set-up, in this process: the Django database at `--database-url` (default DATABASE_URL, else
postgres://postgres@127.0.0.1:5432/chatsite_bench_sql, created and migrated), embedded mode's in-memory event
bus (no Redis), `manage.py seed_demo_database` (CHATSITE_DEMO_DATABASE_URL, CHATSITE_DEMO_CONNECTOR_URL), and a
user granted the demo connector. Each question is a reply in a chat of its own, run by `pipelines.runner.
run_reply` with the steps classify, retrieve_schema, generate_sql, execute_sql and summarize (`--no-summary`
drops the last), exactly as `POST /api/v1/stream/ask` runs them.

Figures:
- execution accuracy: a question counts when the statement the pipeline ran returns the gold SQL's result set
  (rows compared as multisets; columns by value, in any order; numbers to 2 decimals; dates as ISO dates),
  plus how many replies failed (by error code) or were classified non-SQL;
- per phase (step started -> finished, from the instants the worker published them): mean, p50 and max seconds;
- baselines, measured in the same run: a constant answer (`SELECT COUNT(*) FROM sales` for every question)
  scored the same way (what guessing gets), and the gold SQL's own execution time (the execute phase's floor).

Prints a table and writes everything as JSON (`--json`, default var/bench-sql.json). It never asserts.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/chatsite_bench_sql"
USERNAME = "sql-bench"
PHASES = ["classify", "retrieve_schema", "generate_sql", "execute_sql", "summarize"]
CONSTANT_SQL = "SELECT COUNT(*) FROM sales"


def normalise_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return round(float(value), 2)
    if isinstance(value, datetime.datetime) and value.time() == datetime.time(0):
        return value.date().isoformat()
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, str):
        # run_read_query returns dates as ISO text: a midnight timestamp is the same day.
        return value[:10] if len(value) == 19 and value.endswith("T00:00:00") else value
    return str(value)


def result_key(rows: list[list[Any]]) -> Counter:
    """A result set as a multiset of rows, each a sorted tuple of its normalised values (column order ignored)."""
    return Counter(tuple(sorted((normalise_value(v) for v in row), key=repr)) for row in rows)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def ensure_database(url: str) -> None:
    import psycopg

    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup(args: argparse.Namespace):
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["CHATSITE_EMBEDDED"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("CHATSITE_DEMO_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatsite_demo")
    os.environ.setdefault("CHATSITE_DEMO_CONNECTOR_URL", "postgres://chatsite_demo_reader@127.0.0.1:5432/chatsite_demo")
    # The pipeline's time budget must not cut a slow local model short.
    os.environ.setdefault("CHATSITE_REPLY_TIME_BUDGET_SECONDS", "600")
    ensure_database(args.database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("seed_demo_database", stdout=open(os.devnull, "w"))  # noqa: SIM115

    from chats.models import User
    from pipelines.models import Connector, ModelConfig

    user, _ = User.objects.get_or_create(username=USERNAME)
    connector = Connector.objects.get(name="demo")
    connector.users.add(user)
    if args.openai_base_url:
        model, _ = ModelConfig.objects.update_or_create(
            model_id="bench-openai",
            defaults={
                "display_name": f"{args.openai_model} (bench)",
                "provider": "openai",
                "provider_model": args.openai_model,
                "base_url": args.openai_base_url,
                "api_key_env": args.api_key_env or "",
                "context_window": args.context_window,
                "is_active": True,
            },
        )
    else:
        model = ModelConfig.objects.get(model_id=args.model, is_active=True)
    return user, connector, model


def run_question(user, model, question: str, steps: list[dict]) -> dict[str, Any]:
    """One question as one reply: its events (with the instants they were published), outcome and SQL."""
    from chats import actions
    from chats.events import EventPublisher

    # The reply runs here, in this thread, as a worker runs it (bench/retrieval.py turns its queueing off too).
    actions.enqueue_reply = lambda message_id, lane=None: None
    from chats.models import Chat
    from pipelines.runner import run_reply

    class TimedPublisher(EventPublisher):
        """The real publisher, noting when each event went out."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[float, dict]] = []

        def publish(self, message_id, event):
            self.seen.append((time.perf_counter(), event))
            return super().publish(message_id, event)

    chat = Chat.objects.create(owner=user, title=question[:60], source="text_to_sql")
    _, reply, _ = actions.do_send_message(user, chat, content=question, model=model, workflow=None,
                                         options={"steps": steps})  # fmt: skip
    publisher = TimedPublisher()
    started = time.perf_counter()
    run_reply(str(reply.id), publisher)
    total = time.perf_counter() - started
    reply.refresh_from_db()
    phases: dict[str, float] = {}
    opened: dict[str, float] = {}
    sql, outcome = "", None
    for at, event in publisher.seen:
        if event.get("type") != "step":
            continue
        if event["state"] == "started":
            opened[event["step"]] = at
        elif event["step"] in opened:
            phases[event["step"]] = at - opened.pop(event["step"])
        if event["state"] == "finished":
            sql = event.get("sql") or sql
            outcome = event.get("outcome") or outcome
    return {
        "question": question,
        "status": reply.status,
        "error": (reply.error or {}).get("code"),
        "error_message": (reply.error or {}).get("message"),
        "non_sql": outcome == "non_sql",
        "sql": sql,
        "phases": phases,
        "seconds": total,
    }


def score(connector, sql: str, gold_key: Counter) -> bool:
    from pipelines.connectors import ConnectorError, run_read_query

    if not sql:
        return False
    try:
        rows = run_read_query(connector, sql)["rows"]
    except ConnectorError:
        return False
    return result_key(rows) == gold_key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE)
    parser.add_argument("--model", default="smollm2-135m", help="a configured modelId (default: the embedded SmolLM2)")
    parser.add_argument("--openai-base-url", help="an OpenAI-compatible server's /v1 URL (instead of --model)")
    parser.add_argument("--openai-model", default="gpt-4o-mini", help="the server's model name")
    parser.add_argument("--api-key-env", help="the environment variable holding its API key")
    parser.add_argument("--context-window", type=int, default=16384, help="the OpenAI-compatible model's context")
    parser.add_argument("--no-summary", action="store_true", help="leave out the summarize step")
    parser.add_argument("--max-tokens", type=int, default=160, help="most tokens of each SQL the model writes")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (0: all 30)")
    parser.add_argument("--json", default=str(ROOT / "var" / "bench-sql.json"))
    args = parser.parse_args()

    user, connector, model = setup(args)
    from bench.text_to_sql_set import QUESTIONS
    from pipelines.connectors import run_read_query

    questions = QUESTIONS[: args.limit] if args.limit else QUESTIONS
    steps = [
        {"type": "classify", "connector": "demo"},
        {"type": "retrieve_schema"},
        {"type": "generate_sql", "max_tokens": args.max_tokens},
        {"type": "execute_sql"},
        *([] if args.no_summary else [{"type": "summarize", "max_tokens": 160}]),
    ]
    from pipelines.steps import validate_steps

    steps = validate_steps(steps, owner=user)
    results, gold_seconds = [], []
    constant_key = result_key(run_read_query(connector, CONSTANT_SQL)["rows"])
    constant_right = 0
    print(f"text-to-SQL bench: model {model.model_id} ({model.provider}), {len(questions)} questions")
    for number, (question, gold) in enumerate(questions, start=1):
        began = time.perf_counter()
        gold_key = result_key(run_read_query(connector, gold)["rows"])
        gold_seconds.append(time.perf_counter() - began)
        constant_right += constant_key == gold_key
        result = run_question(user, model, question, steps)
        result["correct"] = score(connector, result["sql"], gold_key)
        result["gold"] = gold
        results.append(result)
        mark = "ok " if result["correct"] else ("n/s" if result["non_sql"] else (result["error"] or "bad"))
        print(f"{number:2d}. [{mark:>12}] {result['seconds']:6.1f}s  {question}", flush=True)
        said = " ".join(result["sql"].split())[:150] or f"(no SQL: {result['error_message'] or 'none'})"
        print(f"      -> {said}", flush=True)
        # Kept as it goes: a long run on a slow machine leaves its figures so far.
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"partial": True, "results": results}, indent=2, default=str))

    right = sum(r["correct"] for r in results)
    failures = Counter(r["error"] for r in results if r["error"])
    summary = {
        "model": model.model_id,
        "provider": model.provider,
        "questions": len(results),
        "execution_accuracy": right / len(results),
        "correct": right,
        "non_sql": sum(r["non_sql"] for r in results),
        "failed": dict(failures),
        "baseline_constant_accuracy": constant_right / len(results),
        "gold_execution_seconds_mean": statistics.mean(gold_seconds),
        "phases": {},
        "seconds_per_question_mean": statistics.mean(r["seconds"] for r in results),
    }
    print()
    print(f"execution accuracy: {right}/{len(results)} = {summary['execution_accuracy']:.1%}  "
          f"(constant-answer baseline: {summary['baseline_constant_accuracy']:.1%})")  # fmt: skip
    print(f"non-SQL by classify: {summary['non_sql']}; failed: {dict(failures) or 'none'}")
    print(f"{'phase':<16}{'n':>4}{'mean s':>9}{'p50 s':>9}{'max s':>9}")
    for phase in PHASES:
        times = [r["phases"][phase] for r in results if phase in r["phases"]]
        if not times:
            continue
        figures = {"n": len(times), "mean": statistics.mean(times), "p50": pct(times, 0.5), "max": max(times)}
        summary["phases"][phase] = figures
        print(f"{phase:<16}{figures['n']:>4}{figures['mean']:>9.3f}{figures['p50']:>9.3f}{figures['max']:>9.3f}")
    execute = summary["phases"].get("execute_sql")
    gold_mean = summary["gold_execution_seconds_mean"]
    if execute:
        print(f"execute_sql mean vs the gold SQL's own run ({gold_mean * 1000:.1f} ms): "
              f"{execute['mean'] / gold_mean:.1f}x")  # fmt: skip
    print(f"whole reply: {summary['seconds_per_question_mean']:.2f} s per question on average")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "results": results}, indent=2, default=str))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
