"""Retrieval quality benchmark: recall@5 of chatsite's retriever with the default embedding model
(all-MiniLM-L6-v2) on a small question set with known answers (`tests/retrieval_set.py`), ingestion speed and
query latency. Run with `make bench-retrieval` (or `python bench/retrieval.py --help`).

Each database is measured in a process of its own (Django reads DATABASE_URL once):
- PostgreSQL with pgvector: `--database-url`, else DATABASE_URL, else
  postgres://postgres@127.0.0.1:5432/chatsite_bench (created if missing); migrated by the script;
- SQLite with sqlite-vec (embedded mode's database): a fresh file var/bench-retrieval.sqlite3 (`--no-sqlite`
  skips it).

In each: a user and a collection with the default chunk settings; the set's documents uploaded as Markdown
(`do_upload_document`, its queueing turned off) and ingested in this process by `run_ingestion`, one after
the other. Figures:
- model load (s): the embedding model and the chunking tokenizer, loaded once before the first document;
- ingestion (chunks/s): total chunks / total `run_ingestion` seconds (extract, chunk, embed, save), the
  model load excluded;
- for every question, `retrieve()` on the collection with similarity_threshold 0 and max_total 5:
  recall@5 (chunk level: a passage from the right document that contains the answer; document level: a passage
  from the right document), MRR, and query latency p50/p95 (ms; embedding the query + the database search,
  over `--rounds` rounds of all questions);
- the baseline, in the same run: exact search in numpy over every chunk vector of the collection loaded
  from the database (brute-force cosine): its recall@5 and p50 (ms; embedding + search), and how much of the
  exact top 5 the database returned (overlap, 1.0 = identical);
- PostgreSQL only: whether the planner's plan for the search uses the HNSW index, and the same figures
  with `enable_seqscan = off`, which makes the planner use the index whenever the query allows it (so the
  approximate search is measured even on a table this small).

Prints a table and writes everything as JSON (`--json`, default var/bench-retrieval.json). It never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/chatsite_bench"
SQLITE_FILE = ROOT / "var" / "bench-retrieval.sqlite3"
USERNAME = "retrieval-bench"
K = 5


def pct(values: list[float], q: float) -> float | None:
    """The `q` quantile (0..1) of `values`, nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def ensure_postgres_database(url: str) -> None:
    """Create the database named in `url` if the server does not have it yet."""
    import psycopg

    server, name = url.rsplit("/", 1)
    name = name.split("?", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


# --- one database, in its own process -----------------------------------------------------------------------


def measure(database_url: str, rounds: int) -> dict:
    """Ingest the set into the database at `database_url` and measure retrieval there (see the module)."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ["CHATSITE_EMBEDDED"] = "1"  # no Redis probe; ingestion is called here, not queued
    import logging

    import django

    django.setup()
    for name in ("knowledge", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import numpy as np
    from django.core.management import call_command
    from django.db import connection

    from chats.models import User
    from knowledge import actions, ingest
    from knowledge.chunking import count_tokens
    from knowledge.embeddings import get_embedder
    from knowledge.ingest import run_ingestion
    from knowledge.models import Chunk, Document
    from knowledge.retrieval import SourceConfig, retrieve
    from tests.retrieval_set import DOCS, QUESTIONS, score

    call_command("migrate", "--no-input", verbosity=0)
    vendor = connection.vendor
    User.objects.filter(username=USERNAME).delete()  # an earlier run's user, collection, documents, chunks
    user = User.objects.create_user(USERNAME)
    model = actions.default_embedding_model()
    collection = actions.do_create_collection(user, name="Retrieval benchmark", embedding_model=model)

    actions.enqueue_ingestion = lambda document_id: None  # ingested below, in this process
    slugs: dict[str, str] = {}
    for doc in DOCS:
        document, _ = actions.do_upload_document(
            collection, user, filename=doc.filename, kind="markdown", data=doc.text.encode(), title=doc.title
        )
        slugs[str(document.id)] = doc.slug

    started = time.perf_counter()
    embedder = get_embedder(model)
    count_tokens("load the tokenizer")
    model_load_s = time.perf_counter() - started

    # Where ingestion's time goes: chunking (split_pages) and embedding, timed inside run_ingestion.
    phase_s = {"chunking": 0.0, "embedding": 0.0}
    split_pages, embed = ingest.split_pages, type(embedder).embed

    def timed_split(*a, **kw):
        started = time.perf_counter()
        try:
            return split_pages(*a, **kw)
        finally:
            phase_s["chunking"] += time.perf_counter() - started

    def timed_embed(self, texts):
        started = time.perf_counter()
        try:
            return embed(self, texts)
        finally:
            phase_s["embedding"] += time.perf_counter() - started

    ingest.split_pages, type(embedder).embed = timed_split, timed_embed
    ingest_seconds: list[float] = []
    for document_id in slugs:
        started = time.perf_counter()
        status = run_ingestion(document_id)
        ingest_seconds.append(time.perf_counter() - started)
        if status != "ready":
            raise SystemExit(f"{slugs[document_id]} ended {status}: {Document.objects.get(id=document_id).error}")
    ingest.split_pages, type(embedder).embed = split_pages, embed
    rows = list(Chunk.objects.filter(collection=collection).values_list("id", "document_id", "text", "embedding"))
    total_chunks = len(rows)
    ingest_s = sum(ingest_seconds)

    # The exact baseline's data: every chunk vector of the collection, from the database.
    chunk_ids = [row[0] for row in rows]
    chunk_pos = {chunk_id: i for i, chunk_id in enumerate(chunk_ids)}
    chunk_slug = [slugs[str(row[1])] for row in rows]
    chunk_text = [row[2] for row in rows]
    matrix = np.stack([np.asarray(row[3], dtype=np.float32) for row in rows])

    source = SourceConfig(collection_id=str(collection.id), limit=K, similarity_threshold=0.0)
    retrieve(user, "warm up", [source], max_total=K)

    def database_path() -> dict:
        ranked: list[list[int]] = []
        latencies: list[float] = []
        for round_number in range(rounds):
            for question in QUESTIONS:
                started = time.perf_counter()
                found = retrieve(user, question.text, [source], strategy="merge", max_total=K)
                latencies.append((time.perf_counter() - started) * 1000)
                if round_number == 0:
                    ranked.append([r.hit.chunk_id for r in found])
        return {"ranked": ranked, "latencies_ms": latencies}

    # Exact search: the query embedded the same way, cosine = dot product of unit vectors, full sort.
    exact_ranked: list[list[int]] = []
    exact_latencies: list[float] = []
    embed_latencies: list[float] = []
    for round_number in range(rounds):
        for question in QUESTIONS:
            started = time.perf_counter()
            vector = embedder.embed([question.text])[0]
            embedded = time.perf_counter()
            order = np.argsort(-(matrix @ vector), kind="stable")[:K]
            exact_latencies.append((time.perf_counter() - started) * 1000)
            embed_latencies.append((embedded - started) * 1000)
            if round_number == 0:
                exact_ranked.append([chunk_ids[i] for i in order])

    def figures(ranked: list[list[int]], latencies: list[float]) -> dict:
        scores = score([[(chunk_slug[chunk_pos[c]], chunk_text[chunk_pos[c]]) for c in ids] for ids in ranked])
        overlap = statistics.fmean(
            len(set(ids) & set(exact)) / K for ids, exact in zip(ranked, exact_ranked, strict=True)
        )
        return {
            "recall_at_5_chunk": round(scores.recall_chunk, 4),
            "recall_at_5_document": round(scores.recall_document, 4),
            "mrr": round(scores.mrr, 4),
            "overlap_with_exact_top5": round(overlap, 4),
            "query_p50_ms": round(pct(latencies, 0.5), 2),
            "query_p95_ms": round(pct(latencies, 0.95), 2),
            "misses": list(scores.misses),
        }

    result: dict = {
        "database": vendor,
        "documents": len(DOCS),
        "questions": len(QUESTIONS),
        "chunks": total_chunks,
        "chunk_tokens": collection.chunk_tokens,
        "chunk_overlap_tokens": collection.chunk_overlap_tokens,
        "model_load_s": round(model_load_s, 3),
        "ingest_s": round(ingest_s, 3),
        "ingest_chunks_per_s": round(total_chunks / ingest_s, 1),
        "ingest_chunking_s": round(phase_s["chunking"], 3),
        "ingest_embedding_s": round(phase_s["embedding"], 3),
        "query_embedding_p50_ms": round(pct(embed_latencies, 0.5), 2),
        "rounds": rounds,
    }
    measured = database_path()
    result["retriever"] = figures(measured["ranked"], measured["latencies_ms"])
    result["exact_numpy"] = figures(exact_ranked, exact_latencies)
    if vendor == "postgresql":
        result["retriever"]["plan_uses_hnsw_index"] = search_plan_uses_index(user, source)
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
        try:
            forced = database_path()
            result["retriever_index_forced"] = figures(forced["ranked"], forced["latencies_ms"])
            result["retriever_index_forced"]["plan_uses_hnsw_index"] = search_plan_uses_index(user, source)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
        result["hnsw_index_alone"] = hnsw_probe(embedder, exact_ranked, rounds)
    return result


def hnsw_probe(embedder, exact_ranked: list[list[int]], rounds: int) -> dict:
    """The HNSW index by itself: a bare `ORDER BY distance LIMIT 5` on the indexed expression, over the whole
    table (only this benchmark's chunks are in its own database), with sequential and bitmap scans off so that the index serves it.
    Returns its top-5 overlap with exact search, p50 (ms; embedding + search) and whether the plan used it."""
    from django.db import connection, transaction

    from tests.retrieval_set import QUESTIONS

    sql = (
        "SELECT id FROM knowledge_chunk WHERE dimensions = 384 "
        "ORDER BY embedding::vector(384) <=> %s::vector(384) LIMIT " + str(K)
    )
    latencies: list[float] = []
    overlaps: list[float] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        literal = lambda v: "[" + ",".join(f"{x:.7g}" for x in v) + "]"  # noqa: E731
        cursor.execute("EXPLAIN " + sql, [literal(embedder.embed(["probe"])[0])])
        uses_index = "hnsw" in "\n".join(row[0] for row in cursor.fetchall())
        for round_number in range(rounds):
            for question, exact in zip(QUESTIONS, exact_ranked, strict=True):
                started = time.perf_counter()
                cursor.execute(sql, [literal(embedder.embed([question.text])[0])])
                found = [row[0] for row in cursor.fetchall()]
                latencies.append((time.perf_counter() - started) * 1000)
                if round_number == 0:
                    overlaps.append(len(set(found) & set(exact)) / K)
    return {
        "overlap_with_exact_top5": round(statistics.fmean(overlaps), 4),
        "query_p50_ms": round(pct(latencies, 0.5), 2),
        "query_p95_ms": round(pct(latencies, 0.95), 2),
        "plan_uses_hnsw_index": uses_index,
    }


def search_plan_uses_index(user, source) -> bool | None:
    """Whether PostgreSQL's plan for the vector search that `retrieve()` sends uses the HNSW index (EXPLAIN
    of the captured statement); None if no such statement was seen."""
    from django.db import connection

    from knowledge.retrieval import retrieve

    statements: list[tuple[str, object]] = []

    def capture(execute, sql, params, many, context):
        if "<=>" in sql:
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        retrieve(user, "How do I roll back a release?", [source], max_total=K)
    if not statements:
        return None
    sql, params = statements[-1]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return "hnsw" in plan


# --- the parent: one child process per database, then the table ---------------------------------------------


def run_child(database_url: str, rounds: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", database_url, "--child-out", out.name, "--rounds", str(rounds)]
        subprocess.run(command, cwd=ROOT, check=True)
        return json.loads(Path(out.name).read_text())


ROWS = [
    ("chunks", "chunks", ""),
    ("model_load_s", "model load", "s"),
    ("ingest_chunks_per_s", "ingestion", "chunks/s"),
    ("ingest_chunking_s", "ingestion: chunking", "s"),
    ("ingest_embedding_s", "ingestion: embedding", "s"),
    ("query_embedding_p50_ms", "query embedding p50", "ms"),
]
PATH_ROWS = [
    ("recall_at_5_chunk", "recall@5, chunk level", ""),
    ("recall_at_5_document", "recall@5, document level", ""),
    ("mrr", "MRR@5", ""),
    ("overlap_with_exact_top5", "top-5 overlap with exact", ""),
    ("query_p50_ms", "query p50", "ms"),
    ("query_p95_ms", "query p95", "ms"),
    ("plan_uses_hnsw_index", "plan uses the HNSW index", ""),
]


def print_table(runs: dict[str, dict]) -> None:
    names = list(runs)
    lines: list[tuple[str, list[str]]] = []
    for key, label, unit in ROWS:
        lines.append((f"{label} ({unit})" if unit else label, [str(runs[n].get(key, "")) for n in names]))
    for path, title in (
        ("retriever", "retrieve()"),
        ("retriever_index_forced", "retrieve(), enable_seqscan=off"),
        ("hnsw_index_alone", "HNSW index alone"),
        ("exact_numpy", "exact search (numpy)"),
    ):
        if not any(path in runs[n] for n in names):
            continue
        for key, label, unit in PATH_ROWS:
            values = [runs[n].get(path, {}).get(key, "") for n in names]
            if all(v in ("", None) for v in values):
                continue
            full = f"{title}: {label}" + (f" ({unit})" if unit else "")
            lines.append((full, ["" if v is None else str(v) for v in values]))
    width = max(len(label) for label, _ in lines)
    print(f"{'':<{width}}  " + "  ".join(f"{n:>12}" for n in names))
    for label, values in lines:
        print(f"{label:<{width}}  " + "  ".join(f"{v:>12}" for v in values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_POSTGRES,
        help=f"the PostgreSQL database to use (default: DATABASE_URL, else {DEFAULT_POSTGRES})",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite (sqlite-vec) run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all questions timed (default 2)")
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "bench-retrieval.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        Path(args.child_out).write_text(json.dumps(measure(args.child, args.rounds), indent=2))
        return 0

    started = time.monotonic()
    runs: dict[str, dict] = {}
    if args.database_url.startswith("postgres"):
        ensure_postgres_database(args.database_url)
    runs["postgresql" if args.database_url.startswith("postgres") else "database"] = run_child(
        args.database_url, args.rounds
    )
    if not args.no_sqlite:
        SQLITE_FILE.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_FILE}{suffix}").unlink(missing_ok=True)
        runs["sqlite"] = run_child(f"sqlite:///{SQLITE_FILE}", args.rounds)
    figures = {"machine": {"cpus": os.cpu_count()}, "runs": runs, "seconds": round(time.monotonic() - started, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print_table(runs)
    for name, run in runs.items():
        misses = run["retriever"]["misses"]
        if misses:
            print(f"{name}: questions without a chunk-level hit in the top {K}:")
            for question in misses:
                print(f"  - {question}")
    print(f"(all figures: {args.json}; {figures['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
