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
  from the database (brute-force cosine): its recall@5 and latency (ms; embedding + search), and how much of
  the exact top 5 each path returned (overlap, 1.0 = identical); "search alone" is a path's time without the
  query embedding (for retrieve(), the time inside `nearest_chunks`);
- PostgreSQL only: whether the plan of retrieve()'s search uses the HNSW index; the same figures with
  sequential and bitmap scans off (the planner then takes the index whenever the query allows it, even on a
  table this small); and the HNSW index alone (a bare nearest-5 query on the indexed expression), the
  approximate search itself against exact search.
Every path answers each question in turn, so that a busy machine slows them alike.

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
    from knowledge import actions, ingest, retrieval
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

    # The database search inside retrieve(), timed on its own.
    search_seconds: list[float] = []
    nearest_chunks = retrieval.nearest_chunks

    def timed_nearest_chunks(*args, **kwargs):
        started = time.perf_counter()
        try:
            return nearest_chunks(*args, **kwargs)
        finally:
            search_seconds.append(time.perf_counter() - started)

    retrieval.nearest_chunks = timed_nearest_chunks

    def planner_prefers_indexes(on: bool) -> None:
        if vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            for setting in ("enable_seqscan", "enable_bitmapscan"):
                cursor.execute(f"SET {setting} = off" if on else f"RESET {setting}")

    postgres = vendor == "postgresql"
    paths = ["retriever", "exact_numpy"] + (["retriever_index_forced", "hnsw_index_alone"] if postgres else [])
    ranked: dict[str, list[list[int]]] = {path: [] for path in paths}
    total_ms: dict[str, list[float]] = {path: [] for path in paths}
    search_ms: dict[str, list[float]] = {path: [] for path in paths}
    embed_ms: list[float] = []
    # Every path answers each question in turn, so that the machine's load falls on all of them alike.
    for round_number in range(rounds):
        for question in QUESTIONS:
            for path in paths:
                if path == "exact_numpy":
                    # Exact search: cosine = dot product of unit vectors over every chunk, full sort.
                    started = time.perf_counter()
                    vector = embedder.embed([question.text])[0]
                    embedded = time.perf_counter()
                    ids = [chunk_ids[i] for i in np.argsort(-(matrix @ vector), kind="stable")[:K]]
                    done = time.perf_counter()
                    embed_ms.append((embedded - started) * 1000)
                elif path == "hnsw_index_alone":
                    planner_prefers_indexes(True)
                    started = time.perf_counter()
                    vector = embedder.embed([question.text])[0]
                    embedded = time.perf_counter()
                    with connection.cursor() as cursor:
                        cursor.execute(HNSW_ALONE, [vector_literal(vector)])
                        ids = [row[0] for row in cursor.fetchall()]
                    done = time.perf_counter()
                    planner_prefers_indexes(False)
                else:
                    forced = path == "retriever_index_forced"
                    planner_prefers_indexes(forced)
                    search_seconds.clear()
                    started = time.perf_counter()
                    hits = retrieve(user, question.text, [source], strategy="merge", max_total=K)
                    done = time.perf_counter()
                    embedded = done - sum(search_seconds)
                    ids = [r.hit.chunk_id for r in hits]
                    if forced:
                        planner_prefers_indexes(False)
                total_ms[path].append((done - started) * 1000)
                search_ms[path].append((done - embedded) * 1000)
                if round_number == 0:
                    ranked[path].append(ids)

    def figures(path: str) -> dict:
        scores = score(
            [[(chunk_slug[chunk_pos[c]], chunk_text[chunk_pos[c]]) if c in chunk_pos else ("", "") for c in ids]
             for ids in ranked[path]]
        )  # fmt: skip
        overlap = statistics.fmean(
            len(set(ids) & set(exact)) / K for ids, exact in zip(ranked[path], ranked["exact_numpy"], strict=True)
        )
        return {
            "recall_at_5_chunk": round(scores.recall_chunk, 4),
            "recall_at_5_document": round(scores.recall_document, 4),
            "mrr": round(scores.mrr, 4),
            "overlap_with_exact_top5": round(overlap, 4),
            "query_p50_ms": round(pct(total_ms[path], 0.5), 2),
            "query_p95_ms": round(pct(total_ms[path], 0.95), 2),
            "search_p50_ms": round(pct(search_ms[path], 0.5), 3),
            "search_p95_ms": round(pct(search_ms[path], 0.95), 3),
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
        "query_embedding_p50_ms": round(pct(embed_ms, 0.5), 2),
        "rounds": rounds,
    }
    for path in paths:
        result[path] = figures(path)
    if postgres:
        result["retriever"]["plan_uses_hnsw_index"] = search_plan_uses_index(user, source)
        planner_prefers_indexes(True)
        try:
            result["retriever_index_forced"]["plan_uses_hnsw_index"] = search_plan_uses_index(user, source)
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + HNSW_ALONE, [vector_literal(embedder.embed(["probe"])[0])])
                plan = "\n".join(row[0] for row in cursor.fetchall())
            result["hnsw_index_alone"]["plan_uses_hnsw_index"] = "hnsw" in plan
        finally:
            planner_prefers_indexes(False)
    return result


# The HNSW index by itself (PostgreSQL): a bare nearest-5 query on the indexed expression over the whole table
# (only this benchmark's chunks are in its own database), run with sequential and bitmap scans off.
HNSW_ALONE = (
    "SELECT id FROM knowledge_chunk WHERE dimensions = 384 ORDER BY embedding::vector(384) <=> %s::vector(384) LIMIT 5"
)


def vector_literal(vector) -> str:
    """pgvector's text form of a vector: `[x1,x2,...]`."""
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


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
    ("search_p50_ms", "search alone p50", "ms"),
    ("search_p95_ms", "search alone p95", "ms"),
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
