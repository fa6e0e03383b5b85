"""Search across chats (`GET /api/search`), pinned and archived chats: what a user finds and what they never see.

PostgreSQL's backend is tested here in-process; SQLite's (FTS5, embedded mode) on a migrated SQLite file in a
subprocess (`test_sqlite_backend_...`), as `make run` uses it."""

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from chats.models import Chat, Message
from chats.search import fts5_query, has_search_terms, parse_query, split_marks


def add(chat: Chat, content: str, role: str = "user", parent: Message | None = None, minutes: int = 0) -> Message:
    return Message.objects.create(
        chat=chat, role=role, content=content, parent=parent, created_at=timezone.now() + timedelta(minutes=minutes)
    )


@pytest.fixture
def library(alice, bob):
    """Alice's chats about lighthouses and tides, one archived; Bob's own lighthouse secrets."""
    tides = Chat.objects.create(owner=alice, title="Tide tables", model_id="scripted")
    q = add(tides, "When is high tide at Portree?")
    add(tides, "High tide at Portree comes at 6:40; the lighthouse keeper checks it daily.", "assistant", q, 1)
    keepers = Chat.objects.create(owner=alice, title="Lighthouse keepers")
    q = add(keepers, "Tell me about lighthouse keepers and the lighthouse lamp of every lighthouse.")
    add(keepers, "Keepers trimmed the wicks.", "assistant", q, 1)
    old = Chat.objects.create(owner=alice, title="Old notes", archived=True)
    add(old, "An archived note about a lighthouse in Mull.")
    secret = Chat.objects.create(owner=bob, title="Bob's lighthouse secrets")
    add(secret, "bob secret lighthouse treasure map")
    return {"tides": tides, "keepers": keepers, "old": old, "secret": secret}


def search(client, q, **params):
    return client.get("/api/search", {"q": q, **params})


# --- Search ----------------------------------------------------------------------------------------------


def test_search_finds_titles_and_messages_best_first_with_plain_snippets(alice_client, library):
    response = search(alice_client, "lighthouse")
    assert response.status_code == 200, response.content
    body = response.json()
    results = body["results"]
    assert body["count"] == len(results) == 4  # 1 title + 3 messages (one in the archived chat)
    # The title hit counts double and the message that says "lighthouse" three times beats those that say it once.
    assert results[0]["chatTitle"] == "Lighthouse keepers" and results[0]["messageId"] is None
    assert results[0]["url"] == f"/c/{library['keepers'].id}"
    assert results[1]["snippet"].startswith("Tell me about lighthouse keepers")
    assert results[1]["role"] == "user" and results[1]["chatId"] == str(library["keepers"].id)
    assert results[1]["url"] == f"/c/{library['keepers'].id}#message-{results[1]['messageId']}"
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    for result in results:
        marked = [result["snippet"][start:end].lower() for start, end in result["highlights"]]
        assert marked and set(marked) <= {"lighthouse", "lighthouses"}, result
    archived = [r for r in results if r["archived"]]
    assert [r["chatTitle"] for r in archived] == ["Old notes"]


def test_search_stems_words_and_reads_phrases_or_and_exclusions(alice_client, library):
    def titles(q):
        response = search(alice_client, q)
        assert response.status_code == 200, response.content
        return {(r["chatTitle"], r["messageId"] is None) for r in response.json()["results"]}

    assert ("Lighthouse keepers", False) in titles("lighthouses keeper")  # stems: lighthous, keeper
    assert titles('"high tide at Portree"') == {("Tide tables", False)}
    assert titles("wicks or Mull") == {("Lighthouse keepers", False), ("Old notes", False)}
    assert ("Tide tables", False) not in titles("lighthouse -portree")
    assert titles("zeppelin") == set()


def test_only_the_callers_chats_are_searched(alice_client, bob_client, library):
    bobs = search(bob_client, "lighthouse").json()
    assert {r["chatId"] for r in bobs["results"]} == {str(library["secret"].id)}
    assert "Portree" not in json.dumps(bobs) and "keepers" not in json.dumps(bobs)
    assert search(bob_client, "Portree").json() == {"count": 0, "next": None, "previous": None, "results": []}
    alices = search(alice_client, "treasure").json()
    assert alices["count"] == 0 and "bob secret" not in json.dumps(alices)


def test_archived_chats_are_searched_unless_filtered(alice_client, library):
    def chats(**params):
        return {r["chatTitle"] for r in search(alice_client, "lighthouse", **params).json()["results"]}

    assert "Old notes" in chats()
    assert chats(archived="true") == {"Old notes"}
    assert "Old notes" not in chats(archived="false") and "Tide tables" in chats(archived="false")


def test_snippets_are_plain_text_that_cannot_forge_highlights(alice_client, alice):
    chat = Chat.objects.create(owner=alice, title="Markup")
    add(chat, "A \ue000fake\ue001 mark 😀 zeppelin <b>ride</b>")
    result = search(alice_client, "zeppelin").json()["results"][0]
    snippet = result["snippet"]
    assert "<mark" not in snippet and "&" not in snippet  # text: nothing escaped, nothing marked up
    assert "\ue000" not in snippet and "fake" in snippet
    # Offsets count UTF-16 code units, as JavaScript indexes strings: the emoji before the match counts 2.
    [[start, end]] = result["highlights"]
    utf16 = snippet.encode("utf-16-le")
    assert utf16[start * 2 : end * 2].decode("utf-16-le") == "zeppelin"
    assert snippet[start:end] != "zeppelin"  # Python's code-point indices are one off after the emoji


def test_search_is_paginated(alice_client, alice):
    chat = Chat.objects.create(owner=alice, title="Many")
    for i in range(23):
        add(chat, f"note {i} about ferries", minutes=i)
    first = search(alice_client, "ferries", pageSize=10).json()
    assert first["count"] == 23 and len(first["results"]) == 10 and first["previous"] is None
    assert "page=2" in first["next"]
    third = alice_client.get(first["next"].replace("page=2", "page=3")).json()
    assert len(third["results"]) == 3 and third["next"] is None and "page=2" in third["previous"]
    pages = [search(alice_client, "ferries", pageSize=10, page=page).json()["results"] for page in (1, 2, 3)]
    seen = {r["messageId"] for results in pages for r in results}
    assert len(seen) == 23
    beyond = search(alice_client, "ferries", pageSize=10, page=9).json()
    assert beyond["count"] == 23 and beyond["results"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"q": ""}, "empty_query"),
        ({"q": "   "}, "empty_query"),
        ({}, "empty_query"),
        ({"q": "-lighthouse"}, "empty_query"),
        ({"q": '"" ... !!'}, "empty_query"),
        ({"q": "x" * 201}, "query_too_long"),
        ({"q": "tide", "pageSize": "0"}, "invalid_request"),
        ({"q": "tide", "pageSize": "51"}, "invalid_request"),
        ({"q": "tide", "page": "first"}, "invalid_request"),
        ({"q": "tide", "page": "1" + "0" * 30}, "invalid_request"),
        ({"q": "\x00"}, "empty_query"),
        ({"q": "tide", "archived": "maybe"}, "invalid_request"),
    ],
)
def test_bad_searches_are_400_with_a_code_and_a_sentence(alice_client, library, params, code):
    response = alice_client.get("/api/search", params)
    assert response.status_code == 400
    assert response.json()["error"] == code and response.json()["message"].endswith(".")


def test_nul_characters_in_a_search_are_ignored(alice_client, library):
    response = search(alice_client, "light\x00house")  # PostgreSQL refuses NUL in text: never passed on
    assert response.status_code == 200 and response.json()["count"] == 0
    assert search(alice_client, "lighthouse\x00").json()["count"] == 4


def test_search_needs_a_session(anon, library):
    assert search(anon, "lighthouse").status_code == 401


def test_the_query_parser_and_its_fts5_form():
    assert parse_query('fat "big rats" or -cats dogs') == parse_query('fat  "big   rats"  OR -cats dogs')
    assert fts5_query('fat "big rats" or -cats dogs') == '("fat" AND "big rats") OR ("dogs" NOT "cats")'
    assert fts5_query('say "he said ""hi""') == '("say" AND "he said" AND "hi")'
    assert fts5_query('quote" NEAR(a b) *') == '("quote" AND "NEAR(a b) *")'  # syntax only ever quoted
    assert fts5_query("-only -exclusions") == ""
    assert not has_search_terms("-only -exclusions") and has_search_terms("word")
    assert split_marks("a \ue000b\ue001 c \ue000d\ue001") == ("a b c d", [[2, 3], [6, 7]])


FILLER = "Ordinary words about the weather, the garden and what is for dinner tonight. " * 4


def test_postgresql_search_reads_the_gin_indexes(alice, library):
    """With enough rows that scanning them would cost, the search reads the GIN indexes: the stored message
    vectors' and the title expression's (an expression index serves only its own expression)."""
    from chats.search import PG_SEARCH

    chats = Chat.objects.bulk_create([Chat(owner=alice, title=f"Chat number {i}") for i in range(400)])
    now = timezone.now()
    Message.objects.bulk_create(
        [Message(chat=chats[i % 400], role="user", content=f"{i} {FILLER}", created_at=now) for i in range(10000)]
    )
    params = {
        "q": "lighthouse",
        "owner": alice.id,
        "archived": None,
        "limit": 20,
        "offset": 0,
        "marks": "",
        "options": "",
    }
    with connection.cursor() as cursor:
        # What autovacuum does in production: the new rows go from GIN's pending list into the index proper.
        cursor.execute("SELECT gin_clean_pending_list('chats_message_search_vector'::regclass)")
        cursor.execute("SELECT gin_clean_pending_list('chats_chat_title_fts'::regclass)")
        cursor.execute("ANALYZE chats_chat")
        cursor.execute("ANALYZE chats_message")
        cursor.execute("EXPLAIN " + PG_SEARCH, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "chats_message_search_vector" in plan and "chats_chat_title_fts" in plan, plan


# --- Pinned and archived chats ---------------------------------------------------------------------------


def listed(client, **params) -> list[str]:
    response = client.get("/api/chats", params)
    assert response.status_code == 200, response.content
    return [c["title"] for c in response.json()["results"]]


def test_pinned_chats_come_first_and_pinning_is_not_activity(alice_client, library):
    assert listed(alice_client) == ["Lighthouse keepers", "Tide tables"]  # newest first, archived left out
    tides = library["tides"]
    before = Chat.objects.get(id=tides.id).updated_at
    response = alice_client.patch(f"/api/chats/{tides.id}", {"pinned": True}, format="json")
    assert response.status_code == 200 and response.json()["pinned"] is True
    assert listed(alice_client) == ["Tide tables", "Lighthouse keepers"]
    assert Chat.objects.get(id=tides.id).updated_at == before
    alice_client.patch(f"/api/chats/{tides.id}", {"pinned": False}, format="json")
    assert listed(alice_client) == ["Lighthouse keepers", "Tide tables"]


def test_archived_chats_leave_the_list_and_come_back(alice_client, library):
    keepers = library["keepers"]
    response = alice_client.patch(f"/api/chats/{keepers.id}", {"archived": True}, format="json")
    assert response.status_code == 200 and response.json()["archived"] is True
    assert listed(alice_client) == ["Tide tables"] == listed(alice_client, archived="false")
    assert listed(alice_client, archived="true") == ["Old notes", "Lighthouse keepers"]  # archiving is no activity
    alice_client.patch(f"/api/chats/{keepers.id}", {"archived": False}, format="json")
    assert "Lighthouse keepers" in listed(alice_client)
    assert alice_client.get("/api/chats", {"archived": "yes please"}).status_code == 400


def test_nobody_else_pins_or_archives_your_chat(bob_client, library):
    tides = library["tides"]
    assert bob_client.patch(f"/api/chats/{tides.id}", {"archived": True}, format="json").status_code == 403
    assert Chat.objects.get(id=tides.id).archived is False
    assert "Tide tables" not in listed(bob_client, archived="false")


# --- SQLite (embedded mode) ------------------------------------------------------------------------------

SQLITE_SCRIPT = r"""
import json
from datetime import timedelta

from django.db import connection
from django.test import Client
from django.utils import timezone

from chats import actions, lifecycle
from chats.models import Chat, Message, User
from chats.search import ensure_sqlite_index

out = {}
alice = User.objects.create_user("alice", password="x")
bob = User.objects.create_user("bob", password="x")
now = timezone.now()
tides = Chat.objects.create(owner=alice, title="Tide tables")
q = Message.objects.create(chat=tides, role="user", content="When is high tide at Portree?", created_at=now)
reply = Message.objects.create(chat=tides, role="assistant", status="streaming", parent=q, created_at=now, content="")
keepers = Chat.objects.create(owner=alice, title="Lighthouse keepers")
Message.objects.create(chat=keepers, role="user", created_at=now,
                       content="Tell me about lighthouse keepers and the lighthouse lamp of every lighthouse.")
old = Chat.objects.create(owner=alice, title="Old notes", archived=True)
Message.objects.create(chat=old, role="user", content="An archived note about a lighthouse in Mull.", created_at=now)
secret = Chat.objects.create(owner=bob, title="Bob's lighthouse secrets")
Message.objects.create(chat=secret, role="user", content="bob secret lighthouse treasure", created_at=now)
# A reply's text arrives in one UPDATE when it ends (the trigger on UPDATE OF content indexes it).
lifecycle.do_finish_reply(
    str(reply.id), status="completed", content="High tide at Portree is at 6:40, says the lighthouse keeper."
)

def search(user, **params):
    client = Client()
    client.force_login(user)
    response = client.get("/api/search", params)
    return {"status": response.status_code, **response.json()}

out["alice"] = search(alice, q="lighthouse")
out["phrase"] = search(alice, q='"high tide at portree"')
out["or_not"] = search(alice, q="wicks or Mull -archived")
out["stem"] = search(alice, q="lighthouses keeper")
out["bob"] = search(bob, q="lighthouse")
out["bob_portree"] = search(bob, q="Portree")
out["not_archived"] = search(alice, q="lighthouse", archived="false")
out["page2"] = search(alice, q="lighthouse", pageSize=2, page=2)
out["marks"] = None
Chat.objects.filter(id=tides.id).update(title="Harbour \ue000tides\ue001")
out["marks"] = search(alice, q="harbour")

# Django rebuilds a table to alter it on SQLite, which drops its triggers; migrate's hook rebuilds the index.
from django.db import connection
with connection.schema_editor() as editor:
    editor._remake_table(Message)
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'chats_search_message%'")
    out["triggers_after_remake"] = cursor.fetchone()[0]
out["rebuilt"] = ensure_sqlite_index(connection)
out["rebuilt_again"] = ensure_sqlite_index(connection)
Message.objects.create(chat=keepers, role="assistant", content="Keepers trimmed the wicks nightly.", created_at=now)
out["after_rebuild"] = search(alice, q="wicks")
keepers.delete()
out["after_delete"] = search(alice, q="wicks")
print("RESULT " + json.dumps(out))
"""


def test_sqlite_backend_searches_with_fts5_as_embedded_mode_runs(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "CHATSITE_EMBEDDED": "1"}
    env["ALLOWED_HOSTS"] = "testserver"
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input"], env=env, check=True, capture_output=True, cwd=settings.BASE_DIR)
    done = subprocess.run(
        [*manage, "shell", "-c", SQLITE_SCRIPT], env=env, capture_output=True, text=True, cwd=settings.BASE_DIR
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])

    alice = out["alice"]
    assert alice["status"] == 200 and alice["count"] == 4
    assert alice["results"][0]["chatTitle"] == "Lighthouse keepers" and alice["results"][0]["messageId"] is None
    assert alice["results"][1]["snippet"].startswith("Tell me about lighthouse keepers")
    for result in alice["results"]:
        marked = {result["snippet"][s:e].lower() for s, e in result["highlights"]}
        assert marked == {"lighthouse"}, result
    assert "6:40" in next(r["snippet"] for r in alice["results"] if r["chatTitle"] == "Tide tables")
    assert {r["chatTitle"] for r in out["phrase"]["results"]} == {"Tide tables"}
    assert [r["chatTitle"] for r in out["or_not"]["results"]] == []  # Mull's message says "archived"
    assert "Lighthouse keepers" in {r["chatTitle"] for r in out["stem"]["results"]}
    assert {r["chatTitle"] for r in out["bob"]["results"]} == {"Bob's lighthouse secrets"}
    assert out["bob_portree"]["count"] == 0 and "Portree" not in json.dumps(out["bob"])
    assert "Old notes" not in {r["chatTitle"] for r in out["not_archived"]["results"]}
    assert out["page2"]["count"] == 4 and len(out["page2"]["results"]) == 2 and out["page2"]["previous"]
    marks = out["marks"]["results"][0]
    assert marks["snippet"] == "Harbour tides" and marks["highlights"] == [[0, 7]]
    assert out["triggers_after_remake"] == 0 and out["rebuilt"] is True and out["rebuilt_again"] is False
    assert [r["snippet"] for r in out["after_rebuild"]["results"]] == ["Keepers trimmed the wicks nightly."]
    assert out["after_delete"]["count"] == 0
