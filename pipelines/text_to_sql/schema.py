"""A connector's semantic model: its tables, columns, types, keys and comments, read from the database and
cached, and the tables closest to a question.

Introspection is one read query through `pipelines.connectors.run_read_query` (the same guards as any
connector query: the connector's own role, a read-only transaction, its statement timeout), over the
per-database catalogs `pg_class`, `pg_attribute`, `pg_constraint` and `pg_description`, listing only what the
connector's role may SELECT. The result is kept per process for CHATSITE_TEXT_TO_SQL_SCHEMA_CACHE_SECONDS,
with each table's embedding once computed.

Tables are ranked by the cosine similarity of the question's embedding to each table's description (the
default embedding model, `knowledge.embeddings`) plus a bonus when the question names the table or one of its
columns; the best `max_tables` are kept, then tables their foreign keys point to while room is left. With no
embedding model, names alone decide. A schema of hundreds of tables thus gives the prompt a handful.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from pipelines.connectors import run_read_query

if TYPE_CHECKING:
    import numpy as np

    from pipelines.models import Connector

logger = logging.getLogger(__name__)

MAX_TABLES_READ = 2000
"""Most tables introspected from one database (one row each)."""

NAME_BONUS = 0.35
"""Added to a table's score when the question names it (singular or plural)."""
COLUMN_BONUS = 0.1
"""Added per column the question names, up to two."""
FK_NEIGHBOURS_OF = 3
"""The best this many tables bring the tables their foreign keys reference along."""

INTROSPECT = """
SELECT n.nspname AS schema_name, c.relname AS table_name, obj_description(c.oid, 'pg_class') AS comment,
  (SELECT json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                                     'comment', col_description(c.oid, a.attnum)) ORDER BY a.attnum)
     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT json_agg(json_build_object('kind', k.contype,
            'columns', (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                         WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)),
            'references', CASE WHEN k.contype = 'f' THEN
                            (SELECT r.relname FROM pg_class r WHERE r.oid = k.confrelid) END,
            'refColumns', CASE WHEN k.contype = 'f' THEN
                            (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                              WHERE a.attrelid = k.confrelid AND a.attnum = ANY (k.confkey)) END))
     FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype IN ('p', 'f')) AS keys
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname
"""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str = ""


@dataclass
class Table:
    """One table or view the connector's role may read."""

    schema: str
    name: str
    comment: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    # (columns, referenced table, referenced columns)
    foreign_keys: list[tuple[list[str], str, list[str]]] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        """How queries name it: bare in `public`, `schema.table` elsewhere."""
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    def describe(self) -> str:
        """The table as the prompt shows it: one line per column with its type, keys and comment."""
        lines = [f"TABLE {self.qualified}" + (f" -- {self.comment}" if self.comment else "")]
        for column in self.columns:
            key = " PRIMARY KEY" if column.name in self.primary_key and len(self.primary_key) == 1 else ""
            refs = [f" REFERENCES {t}({', '.join(rc)})" for cs, t, rc in self.foreign_keys if cs == [column.name]]
            note = f" -- {column.comment}" if column.comment else ""
            lines.append(f"  {column.name} {column.type}{key}{''.join(refs)}{note}")
        if len(self.primary_key) > 1:
            lines.append(f"  PRIMARY KEY ({', '.join(self.primary_key)})")
        return "\n".join(lines)

    def search_text(self) -> str:
        """What the table's embedding is computed from: its name, comment, and its columns with comments."""
        columns = "; ".join(f"{c.name}" + (f": {c.comment}" if c.comment else "") for c in self.columns)
        return f"{self.name.replace('_', ' ')}: {self.comment}. Columns: {columns}"


@dataclass
class SemanticModel:
    """A connector's readable tables, read at `read_at` (time.monotonic())."""

    tables: list[Table]
    read_at: float
    vectors: Any = None  # np.ndarray (len(tables), dims), computed on first use
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_name(self) -> dict[str, Table]:
        """Tables by lower-case name, qualified and (for `public`) bare."""
        found: dict[str, Table] = {}
        for table in self.tables:
            found[f"{table.schema}.{table.name}".lower()] = table
            found.setdefault(table.name.lower(), table)
        return found


_cache: dict[tuple[int, str], SemanticModel] = {}
_cache_lock = threading.Lock()


def _parse(row: list[Any]) -> Table:
    schema, name, comment, columns, keys = row
    table = Table(
        schema=schema,
        name=name,
        comment=comment or "",
        columns=[Column(c["name"], c["type"], c.get("comment") or "") for c in columns or []],
    )
    for key in keys or []:
        if key["kind"] == "p":
            table.primary_key = list(key["columns"] or [])
        elif key["references"]:
            table.foreign_keys.append((list(key["columns"] or []), key["references"], list(key["refColumns"] or [])))
    return table


def semantic_model(connector: Connector, *, timeout_ms: int | None = None, fresh: bool = False) -> SemanticModel:
    """The connector's tables, from the cache when read less than CHATSITE_TEXT_TO_SQL_SCHEMA_CACHE_SECONDS ago.

    Raises:
        ConnectorError: the database could not be read (see `pipelines.connectors.run_read_query`).
    """
    key = (connector.pk or 0, connector.url_env)
    ttl = settings.CHATSITE_TEXT_TO_SQL_SCHEMA_CACHE_SECONDS
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and not fresh and time.monotonic() - cached.read_at < ttl:
        return cached
    reader = copy.copy(connector)
    reader.max_rows = MAX_TABLES_READ
    result = run_read_query(reader, INTROSPECT, None, timeout_ms=timeout_ms)
    model = SemanticModel(tables=[_parse(row) for row in result["rows"]], read_at=time.monotonic())
    with _cache_lock:
        _cache[key] = model
    return model


def forget(connector: Connector | None = None) -> None:
    """Drop the cached semantic model of `connector` (None: of every connector)."""
    with _cache_lock:
        for key in list(_cache):
            if connector is None or key == (connector.pk or 0, connector.url_env):
                del _cache[key]


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    words = set(_WORD.findall(text.lower()))
    # "products" names `product` and "sale" names `sales`: compare singular forms too.
    return words | {w[:-1] for w in words if w.endswith("s")} | {w + "s" for w in words}


def name_score(question: str, table: Table) -> float:
    """The bonus for the names the question uses: the table's (or its words') and up to two of its columns."""
    words = _words(question)
    name_parts = set(table.name.lower().split("_"))
    score = NAME_BONUS if table.name.lower() in words or name_parts <= words else 0.0
    named = sum(1 for c in table.columns if c.name.lower() in words or set(c.name.lower().split("_")) <= words)
    return score + COLUMN_BONUS * min(2, named)


def _table_vectors(model: SemanticModel, embedder: Any) -> np.ndarray:
    with model.lock:
        if model.vectors is None or len(model.vectors) != len(model.tables):
            model.vectors = embedder.embed([t.search_text() for t in model.tables])
        return model.vectors


def _embedder() -> Any | None:
    """The default embedding model's embedder, or None when there is none or it cannot be loaded."""
    from knowledge.actions import default_embedding_model
    from knowledge.embeddings import EmbeddingError, get_embedder

    config = default_embedding_model()
    if config is None:
        return None
    try:
        return get_embedder(config)
    except EmbeddingError as exc:
        logger.warning("text-to-SQL: no embeddings for table choice (%s); names alone decide", exc.code)
        return None


def relevant_tables(model: SemanticModel, question: str, max_tables: int) -> list[tuple[Table, float]]:
    """At most `max_tables` tables for `question`, with their scores: best first, each of the best
    FK_NEIGHBOURS_OF followed by the tables its foreign keys reference (a join needs both ends)."""
    from knowledge.embeddings import EmbeddingError

    if not model.tables:
        return []
    scores = [name_score(question, table) for table in model.tables]
    embedder = _embedder()
    if embedder is not None:
        try:
            vectors = _table_vectors(model, embedder)
            asked = embedder.embed([question])[0]
            scores = [s + float(v @ asked) for s, v in zip(scores, vectors, strict=True)]
        except EmbeddingError as exc:
            logger.warning("text-to-SQL: embedding failed (%s); names alone decide", exc.code)
    ranked = sorted(zip(model.tables, scores, strict=True), key=lambda pair: -pair[1])
    names = model.by_name()
    chosen: list[tuple[Table, float]] = []

    def add(table: Table, score: float) -> None:
        if len(chosen) < max_tables and all(t is not table for t, _ in chosen):
            chosen.append((table, score))

    for rank, (table, score) in enumerate(ranked):
        add(table, score)
        if rank < FK_NEIGHBOURS_OF:
            for _, target, _ in table.foreign_keys:
                if referenced := names.get(target.lower()):
                    add(referenced, score)
    return chosen
