"""Search across one user's chats: their titles and their messages' text, ranked, with highlighted snippets.

One public function, `search_chats()`, over one backend per database:

- PostgreSQL: full-text search (https://www.postgresql.org/docs/current/textsearch-controls.html). The query
  is parsed by `websearch_to_tsquery` (words, "quoted phrases", `or`, `-word`), matched against
  `to_tsvector('english', ...)` of each message's content (the stored generated column `search_vector`) and of
  each chat's title (an expression), both GIN-indexed (migration 0006); ranked by `ts_rank` (normalisation 1:
  long messages do not win by length) with titles counting double, and shown by `ts_headline`.
- SQLite (embedded mode): an FTS5 table (https://www.sqlite.org/fts5.html) with one row per chat title and one
  per message, kept in step by triggers (`ensure_sqlite_index`, run after every `migrate`), ranked by `bm25`
  (titles weigh double), shown by `snippet`. The same query syntax is turned into an FTS5 expression by
  `fts5_query`. Both stem English words (PostgreSQL's `english` configuration, FTS5's `porter` tokenizer).

Snippets are plain text, never markup: `highlights` gives the matched stretches as `[start, end)` offsets in
UTF-16 code units (the indices of a JavaScript string), so a client can build the marks itself.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from chats.models import Chat, Message, User

# Private-use characters that delimit matches in the databases' snippets; stripped from the text first, so a
# message that contains them cannot forge a highlight.
MARK_START = "\ue000"
MARK_END = "\ue001"
_MARKS = re.compile(f"([{MARK_START}{MARK_END}])")
# ts_headline: up to two fragments of about 12-30 words; FTS5 snippet: about 24 tokens.
HEADLINE_OPTIONS = (
    f'StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "'
)


@dataclass(frozen=True)
class Term:
    """One term of a parsed query: a word or a quoted phrase, maybe excluded (`-word`)."""

    text: str
    negated: bool = False


def parse_query(query: str) -> list[list[Term]]:
    """Parse web-search syntax as `websearch_to_tsquery` reads it: groups of terms joined by `or`.

    Unquoted words and "quoted phrases" in a group must all match (a phrase: its words in order); a leading
    `-` excludes a word or phrase; the word `or` between two terms separates groups. Terms with no letter or
    digit are dropped.

    Returns:
        A list of groups, each a list of `Term`s (possibly empty lists).
    """
    groups: list[list[Term]] = [[]]
    for match in re.finditer(r'(-?)(?:"([^"]*)"?|([^\s"]+))', query):
        negated, phrase, word = match.group(1) == "-", match.group(2), match.group(3)
        text = phrase if phrase is not None else word
        if word is not None and not negated and word.lower() == "or":
            if groups[-1]:
                groups.append([])
            continue
        if word is not None and word.startswith("-"):  # "--x": one dash is the exclusion, the rest punctuation
            text = word.lstrip("-")
        if re.search(r"\w", text or ""):
            groups[-1].append(Term(" ".join(text.split()), negated))
    return [group for group in groups if group]


def has_search_terms(query: str) -> bool:
    """Whether `query` has at least one word or phrase to look for (not only exclusions or punctuation)."""
    return any(not term.negated for group in parse_query(query) for term in group)


def fts5_query(query: str) -> str:
    """`query` (web-search syntax, see `parse_query`) as an FTS5 MATCH expression; '' when nothing to match.

    Every term becomes an FTS5 string (a phrase when it has several tokens), so no user input is read as FTS5
    syntax. FTS5 binds NOT tighter than AND and AND tighter than OR, like tsquery's `!`, `&` and `|`; a
    group's exclusions go after its terms because FTS5's NOT is binary, and a group of exclusions only is
    dropped (FTS5 cannot match "everything but").
    """

    def quoted(term: Term) -> str:
        return '"' + term.text.replace('"', '""') + '"'

    parts = []
    for group in parse_query(query):
        wanted = [quoted(t) for t in group if not t.negated]
        if not wanted:
            continue
        unwanted = "".join(f" NOT {quoted(t)}" for t in group if t.negated)
        parts.append("(" + " AND ".join(wanted) + unwanted + ")")
    return " OR ".join(parts)


@dataclass(frozen=True)
class SearchHit:
    """One match: a chat's title (`message_id` None) or one of its messages.

    `highlights` are `[start, end)` offsets into `snippet` in UTF-16 code units; `score` is higher for better
    matches, comparable only within one search.
    """

    chat_id: str
    chat_title: str
    message_id: str | None
    role: str | None
    snippet: str
    highlights: list[list[int]]
    score: float
    created_at: datetime
    pinned: bool
    archived: bool


@dataclass(frozen=True)
class SearchPage:
    """One page of hits, best first, and how many hits there are in all."""

    total: int
    hits: list[SearchHit]


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_marks(marked: str) -> tuple[str, list[list[int]]]:
    """A snippet with MARK_START/MARK_END around matches, as plain text plus `[start, end)` UTF-16 offsets."""
    text: list[str] = []
    highlights: list[list[int]] = []
    position = 0
    start: int | None = None
    for part in _MARKS.split(marked):
        if part == MARK_START:
            start = position
        elif part == MARK_END:
            if start is not None and position > start:
                highlights.append([start, position])
            start = None
        elif part:
            text.append(part)
            position += _utf16_length(part)
    return "".join(text), highlights


def search_chats(
    owner: User, query: str, *, archived: bool | None = None, page: int = 1, page_size: int = 20
) -> SearchPage:
    """The `owner`'s chat titles and messages that match `query`, best first, one page of them.

    Args:
        query: web-search syntax (see `parse_query`); the caller checks that it is not empty or too long.
        archived: True: archived chats only; False: not archived only; None: all.
        page: 1-based page number; page_size: hits per page.

    Raises:
        NotImplementedError: on a database other than PostgreSQL or SQLite.
    """
    offset = (page - 1) * page_size
    if connection.vendor == "postgresql":
        search = _search_postgresql
    elif connection.vendor == "sqlite":
        search = _search_sqlite
    else:
        raise NotImplementedError(f"Chat search does not support {connection.vendor}.")
    total, rows = search(owner.id, query, archived, page_size, offset)
    if not rows and offset:
        total, _ = search(owner.id, query, archived, 1, 0)  # past the end: still say how many there are
    return SearchPage(total=total, hits=_hits(owner, rows))


def _hits(owner: User, rows: list[tuple]) -> list[SearchHit]:
    """Rows of `(chat_id, message_id, score, marked_snippet)` as hits, with their chats and messages loaded
    (through the owner again: only their own rows can come out)."""
    chats = {c.id: c for c in Chat.objects.filter(owner=owner, id__in={r[0] for r in rows})}
    message_ids = {r[1] for r in rows if r[1] is not None}
    messages = {
        m.id: m for m in Message.objects.filter(chat__owner=owner, id__in=message_ids).only("id", "role", "created_at")
    }
    hits = []
    for chat_id, message_id, score, marked in rows:
        chat = chats.get(chat_id)
        message = messages.get(message_id) if message_id is not None else None
        if chat is None or (message_id is not None and message is None):
            continue  # deleted between the two queries
        snippet, highlights = split_marks(marked or "")
        hits.append(
            SearchHit(
                chat_id=str(chat.id),
                chat_title=chat.title,
                message_id=str(message.id) if message else None,
                role=message.role if message else None,
                snippet=snippet,
                highlights=highlights,
                score=round(float(score), 6),
                created_at=message.created_at if message else chat.updated_at,
                pinned=chat.pinned,
                archived=chat.archived,
            )
        )
    return hits


# --- PostgreSQL ------------------------------------------------------------------------------------------

# The message vectors are migration 0006's stored column `search_vector`; the title's expression is exactly
# the one it indexes (an index serves only the same expression). The tsquery is written out where it is used
# (not in a CTE): an immutable function of a constant, the planner folds it, and the GIN indexes serve the @@
# conditions. Titles count double.
PG_SEARCH = """
    WITH hits AS (
        SELECT c.id AS chat_id, NULL::uuid AS message_id, c.updated_at AS at,
               ts_rank(to_tsvector('english'::regconfig, c.title),
                       websearch_to_tsquery('english'::regconfig, %(q)s), 1) * 2 AS score
        FROM chats_chat c
        WHERE c.owner_id = %(owner)s AND (%(archived)s::boolean IS NULL OR c.archived = %(archived)s::boolean)
          AND to_tsvector('english'::regconfig, c.title) @@ websearch_to_tsquery('english'::regconfig, %(q)s)
        UNION ALL
        SELECT m.chat_id, m.id, m.created_at,
               ts_rank(m.search_vector, websearch_to_tsquery('english'::regconfig, %(q)s), 1)
        FROM chats_message m JOIN chats_chat c ON c.id = m.chat_id
        WHERE c.owner_id = %(owner)s AND (%(archived)s::boolean IS NULL OR c.archived = %(archived)s::boolean)
          AND m.search_vector @@ websearch_to_tsquery('english'::regconfig, %(q)s)
    ),
    page AS (
        SELECT hits.*, count(*) OVER () AS total FROM hits
        ORDER BY score DESC, at DESC, chat_id, message_id NULLS FIRST
        LIMIT %(limit)s OFFSET %(offset)s
    )
    SELECT page.chat_id, page.message_id, page.score, page.total,
           ts_headline('english'::regconfig, translate(coalesce(m.content, c.title), %(marks)s, ''),
                       websearch_to_tsquery('english'::regconfig, %(q)s), %(options)s)
    FROM page JOIN chats_chat c ON c.id = page.chat_id LEFT JOIN chats_message m ON m.id = page.message_id
    ORDER BY page.score DESC, page.at DESC, page.chat_id, page.message_id NULLS FIRST
"""


def _search_postgresql(owner_id, query: str, archived: bool | None, limit: int, offset: int) -> tuple[int, list]:
    params = {
        "q": query,
        "owner": owner_id,
        "archived": archived,
        "limit": limit,
        "offset": offset,
        "marks": MARK_START + MARK_END,
        "options": HEADLINE_OPTIONS,
    }
    with connection.cursor() as cursor:
        cursor.execute(PG_SEARCH, params)
        rows = cursor.fetchall()
    total = rows[0][3] if rows else 0
    return total, [(r[0], r[1], r[2], r[4]) for r in rows]


# --- SQLite (FTS5) ---------------------------------------------------------------------------------------

# One FTS5 row per chat title (title column) and per message (body column). FTS5 rows need integer rowids that
# VACUUM and Django's table rebuilds leave alone: chats_search_key gives each chat ('t' + id) and message
# ('m' + id) one (an INTEGER PRIMARY KEY never changes). Text goes in without the highlight marks
# (char(57344) and char(57345) are MARK_START and MARK_END).
SQLITE_TABLES = [
    """CREATE VIRTUAL TABLE chats_search USING fts5(
        title, body, chat_id UNINDEXED, message_id UNINDEXED, tokenize = 'porter unicode61 remove_diacritics 2'
    )""",
    "CREATE TABLE chats_search_key (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)",
]
SQLITE_FILL = [
    "INSERT INTO chats_search_key (key) SELECT 't' || id FROM chats_chat",
    "INSERT INTO chats_search_key (key) SELECT 'm' || id FROM chats_message",
    """INSERT INTO chats_search (rowid, title, body, chat_id, message_id)
       SELECT k.id, replace(replace(c.title, char(57344), ''), char(57345), ''), '', c.id, NULL
       FROM chats_chat c JOIN chats_search_key k ON k.key = 't' || c.id""",
    """INSERT INTO chats_search (rowid, title, body, chat_id, message_id)
       SELECT k.id, '', replace(replace(m.content, char(57344), ''), char(57345), ''), m.chat_id, m.id
       FROM chats_message m JOIN chats_search_key k ON k.key = 'm' || m.id""",
]
SQLITE_TRIGGERS = {
    "chats_search_message_insert": """AFTER INSERT ON chats_message BEGIN
        INSERT INTO chats_search_key (key) VALUES ('m' || new.id);
        INSERT INTO chats_search (rowid, title, body, chat_id, message_id)
        VALUES ((SELECT id FROM chats_search_key WHERE key = 'm' || new.id), '',
                replace(replace(new.content, char(57344), ''), char(57345), ''), new.chat_id, new.id);
    END""",
    "chats_search_message_update": """AFTER UPDATE OF content ON chats_message BEGIN
        UPDATE chats_search SET body = replace(replace(new.content, char(57344), ''), char(57345), '')
        WHERE rowid = (SELECT id FROM chats_search_key WHERE key = 'm' || new.id);
    END""",
    "chats_search_message_delete": """AFTER DELETE ON chats_message BEGIN
        DELETE FROM chats_search WHERE rowid = (SELECT id FROM chats_search_key WHERE key = 'm' || old.id);
        DELETE FROM chats_search_key WHERE key = 'm' || old.id;
    END""",
    "chats_search_chat_insert": """AFTER INSERT ON chats_chat BEGIN
        INSERT INTO chats_search_key (key) VALUES ('t' || new.id);
        INSERT INTO chats_search (rowid, title, body, chat_id, message_id)
        VALUES ((SELECT id FROM chats_search_key WHERE key = 't' || new.id),
                replace(replace(new.title, char(57344), ''), char(57345), ''), '', new.id, NULL);
    END""",
    "chats_search_chat_update": """AFTER UPDATE OF title ON chats_chat BEGIN
        UPDATE chats_search SET title = replace(replace(new.title, char(57344), ''), char(57345), '')
        WHERE rowid = (SELECT id FROM chats_search_key WHERE key = 't' || new.id);
    END""",
    "chats_search_chat_delete": """AFTER DELETE ON chats_chat BEGIN
        DELETE FROM chats_search WHERE rowid = (SELECT id FROM chats_search_key WHERE key = 't' || old.id);
        DELETE FROM chats_search_key WHERE key = 't' || old.id;
    END""",
}
SQLITE_DROP = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS),
    "DROP TABLE IF EXISTS chats_search",
    "DROP TABLE IF EXISTS chats_search_key",
]


def ensure_sqlite_index(using_connection=None) -> bool:
    """Make the FTS5 index and its triggers on SQLite, filled from the chats and messages, if any part is missing.

    Django rebuilds a SQLite table to alter it (a new table, a copy, a rename), which drops the table's
    triggers: so this runs after every `migrate` (a `post_migrate` receiver) and rebuilds the index whenever a
    trigger is gone. Does nothing on other databases, or before the chats tables exist.

    Returns:
        True if it (re)built the index.
    """
    conn = using_connection or connection
    if conn.vendor != "sqlite":
        return False
    with conn.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        present = {name for (name,) in cursor.fetchall()}
    if not {"chats_chat", "chats_message"} <= present:
        return False
    if {"chats_search", "chats_search_key", *SQLITE_TRIGGERS} <= present:
        return False
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        for statement in [*SQLITE_DROP, *SQLITE_TABLES, *SQLITE_FILL]:
            cursor.execute(statement)
        for name, body in SQLITE_TRIGGERS.items():
            cursor.execute(f"CREATE TRIGGER {name} {body}")
    return True


def rebuild_search_index_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """`post_migrate` receiver: `ensure_sqlite_index` on the database just migrated."""
    from django.db import connections

    ensure_sqlite_index(connections[using])


# bm25() is lower for better matches; its weights follow the columns (title 2, body 1). FTS5's functions
# cannot sit beside a window function, so the hits are ranked and counted by this query, and only the page's
# snippets are made, by the next one.
SQLITE_SEARCH = """
    WITH hits AS (
        SELECT f.rowid AS rid, f.chat_id, f.message_id, -bm25(chats_search, 2.0, 1.0, 0.0, 0.0) AS score,
               coalesce(m.created_at, c.updated_at) AS at
        FROM chats_search f JOIN chats_chat c ON c.id = f.chat_id
        LEFT JOIN chats_message m ON m.id = f.message_id
        WHERE chats_search MATCH %s AND c.owner_id = %s AND (%s IS NULL OR c.archived = %s)
    )
    SELECT rid, chat_id, message_id, score, count(*) OVER () FROM hits
    ORDER BY score DESC, at DESC, chat_id, message_id LIMIT %s OFFSET %s
"""
SQLITE_SNIPPETS = """
    SELECT rowid, snippet(chats_search, -1, %s, %s, '…', 24) FROM chats_search
    WHERE chats_search MATCH %s AND rowid IN (SELECT value FROM json_each(%s))
"""


def _search_sqlite(owner_id, query: str, archived: bool | None, limit: int, offset: int) -> tuple[int, list]:
    expression = fts5_query(query)
    if not expression:
        return 0, []
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_SEARCH, [expression, owner_id.hex, archived, archived, limit, offset])
        rows = cursor.fetchall()
        snippets = {}
        if rows:
            cursor.execute(SQLITE_SNIPPETS, [MARK_START, MARK_END, expression, json.dumps([r[0] for r in rows])])
            snippets = dict(cursor.fetchall())
    total = rows[0][4] if rows else 0
    return total, [(_uuid(r[1]), _uuid(r[2]), r[3], snippets.get(r[0], "")) for r in rows]


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None
