"""Collections, uploads and ingestion (real PostgreSQL with pgvector, the real all-MiniLM-L6-v2 model), and the
`retrieve` step and attachments run by the real runner with the scripted provider (deterministic)."""

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from fpdf import FPDF

from chats import actions as chat_actions
from chats.events import stream_key, sync_redis
from chats.models import Chat, Message
from chats.streaming import replay_from_database
from knowledge.ingest import run_ingestion
from knowledge.models import Chunk, Collection, Document
from pipelines.models import ModelConfig, Workflow
from pipelines.runner import run_reply

FERRY = (
    "# Island travel notes\n\n"
    "## Ferries\n\n"
    "The ferry to Skye leaves Mallaig harbour at 9:15 every morning and takes forty minutes.\n\n"
    "## Food\n\n"
    "The bakery on the pier sells oatcakes and smoked salmon rolls until noon.\n"
)
LLAMAS = (
    "# Llama care\n\n"
    "Llamas live in herds, eat grass and hay, and need their toenails trimmed every two months.\n\n"
    "A healthy adult llama weighs between 130 and 200 kilograms.\n"
)


def pdf_bytes(pages: list[str]) -> bytes:
    """A real PDF (fpdf2) with one text page per item of `pages`."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def upload(client, collection_id, name: str, data: bytes, content_type: str = "text/markdown", **fields):
    file = SimpleUploadedFile(name, data, content_type=content_type)
    return client.post(f"/api/collections/{collection_id}/documents", {"file": file, **fields}, format="multipart")


@pytest.fixture
def collection(alice, minilm) -> Collection:
    return Collection.objects.create(owner=alice, name="Travel", embedding_model=minilm)


def ingest_upload(client, collection, name, data, content_type="text/markdown", capture=None, **fields) -> Document:
    with capture(execute=False):  # no worker here: ingest in this process, as the task would
        response = upload(client, collection.id, name, data, content_type, **fields)
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "queued"
    run_ingestion(response.json()["id"])
    return Document.objects.get(id=response.json()["id"])


# --- collections and uploads -----------------------------------------------------------------------------


def test_a_new_collection_uses_the_default_embedding_model_and_chunk_sizes(alice_client, minilm):
    response = alice_client.post("/api/collections", {"name": "Notes"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["embeddingModel"] == "all-minilm-l6-v2"
    assert (body["chunkTokens"], body["chunkOverlapTokens"]) == (200, 40)
    assert body["shared"] is False and body["documentCount"] == 0


def test_a_markdown_upload_is_queued_then_ingested_into_chunks_that_point_into_its_text(
    alice_client, collection, django_capture_on_commit_callbacks
):
    document = ingest_upload(
        alice_client, collection, "travel.md", FERRY.encode(), capture=django_capture_on_commit_callbacks
    )
    assert document.status == "ready" and document.error == ""
    assert document.kind == "markdown" and document.title == "travel.md"
    assert "Mallaig harbour at 9:15" in document.text
    chunks = list(Chunk.objects.filter(document=document).order_by("index"))
    assert chunks and document.chunk_count == len(chunks)
    for chunk in chunks:
        assert document.text[chunk.start : chunk.end] == chunk.text
        assert chunk.page is None and chunk.dimensions == 384 and len(chunk.embedding) == 384
        assert 0 < chunk.token_count <= collection.chunk_tokens

    listed = alice_client.get(f"/api/collections/{collection.id}/documents").json()["results"]
    assert [d["id"] for d in listed] == [str(document.id)] and listed[0]["chunkCount"] == len(chunks)
    served = alice_client.get(f"/api/documents/{document.id}/file")
    assert served.content == FERRY.encode() and served["Content-Disposition"].startswith("attachment;")


def test_a_pdf_is_read_page_by_page_and_its_chunks_carry_their_page_number(
    alice_client, collection, django_capture_on_commit_callbacks
):
    data = pdf_bytes(["Page one is about the harbour.", "The lighthouse keeper lives on page two."])
    document = ingest_upload(
        alice_client, collection, "guide.pdf", data, "application/pdf", capture=django_capture_on_commit_callbacks
    )
    assert document.status == "ready", document.error
    assert document.page_count == 2
    pages = {chunk.page: chunk.text for chunk in document.chunks.all()}
    assert "harbour" in pages[1] and "lighthouse keeper" in pages[2]
    chunks = alice_client.get(f"/api/documents/{document.id}/chunks").json()["results"]
    assert [c["page"] for c in chunks] == [1, 2]


def test_html_is_read_as_text_without_its_scripts_and_styles(
    alice_client, collection, django_capture_on_commit_callbacks
):
    html = (
        b"<html><head><style>p{color:red}</style></head>"
        b"<body><h1>Tides</h1><script>steal()</script><p>High tide at noon.</p></body></html>"
    )
    document = ingest_upload(
        alice_client, collection, "tides.html", html, "text/html", capture=django_capture_on_commit_callbacks
    )
    assert document.status == "ready"
    assert "High tide at noon." in document.text and "Tides" in document.text
    assert "steal" not in document.text and "color" not in document.text


def test_a_corrupt_pdf_ends_failed_with_a_reason_and_nothing_else_is_lost(
    alice_client, collection, django_capture_on_commit_callbacks
):
    good = ingest_upload(
        alice_client, collection, "travel.md", FERRY.encode(), capture=django_capture_on_commit_callbacks
    )
    chunks_before = list(Chunk.objects.values_list("id", flat=True))
    corrupt = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nthis is not a pdf at all\n%%EOF"
    broken = ingest_upload(
        alice_client, collection, "broken.pdf", corrupt, "application/pdf", capture=django_capture_on_commit_callbacks
    )
    assert broken.status == "failed"
    assert "PDF" in broken.error and broken.chunk_count == 0
    assert not broken.chunks.exists()
    good.refresh_from_db()
    assert good.status == "ready" and list(Chunk.objects.values_list("id", flat=True)) == chunks_before
    shown = alice_client.get(f"/api/documents/{broken.id}").json()
    assert shown["status"] == "failed" and shown["error"] == broken.error


def test_a_text_file_that_is_not_utf8_fails_with_a_reason(alice_client, collection, django_capture_on_commit_callbacks):
    document = ingest_upload(
        alice_client, collection, "latin1.txt", "café".encode("latin-1"), "text/plain",
        capture=django_capture_on_commit_callbacks,
    )  # fmt: skip
    assert document.status == "failed" and "UTF-8" in document.error


def test_uploading_the_same_file_twice_gives_the_first_document_back(
    alice_client, collection, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        first = upload(alice_client, collection.id, "travel.md", FERRY.encode())
        again = upload(alice_client, collection.id, "copy-of-travel.md", FERRY.encode())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Document.objects.filter(collection=collection).count() == 1
    assert len(queued) == 1  # ingested once


def test_unreadable_file_types_are_refused_with_400_and_nothing_stored(alice_client, collection):
    response = upload(alice_client, collection.id, "photo.png", b"\x89PNG....", "image/png")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request" and "file" in response.json()["fields"]
    assert not Document.objects.exists()


def test_a_file_over_the_size_limit_is_413_and_nothing_stored(alice_client, collection, settings):
    settings.CHATSITE_MAX_UPLOAD_BYTES = 1000
    response = upload(alice_client, collection.id, "big.md", b"x" * 5000)
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
    assert not Document.objects.exists()


def test_bad_metadata_is_400_with_the_field_named(alice_client, collection):
    response = upload(alice_client, collection.id, "travel.md", FERRY.encode(), metadata="{not json")
    assert response.status_code == 400 and "metadata" in response.json()["fields"]
    response = upload(alice_client, collection.id, "travel.md", FERRY.encode(), metadata='{"bad key": 1}')
    assert response.status_code == 400 and "metadata" in response.json()["fields"]


def test_chunk_settings_are_fixed_once_a_collection_has_documents(
    alice_client, collection, django_capture_on_commit_callbacks
):
    assert (
        alice_client.patch(f"/api/collections/{collection.id}", {"chunkTokens": 100}, format="json").status_code == 200
    )
    ingest_upload(alice_client, collection, "travel.md", FERRY.encode(), capture=django_capture_on_commit_callbacks)
    response = alice_client.patch(f"/api/collections/{collection.id}", {"chunkTokens": 300}, format="json")
    assert response.status_code == 400 and "fixed" in response.json()["message"]
    assert alice_client.patch(f"/api/collections/{collection.id}", {"name": "Trips"}, format="json").status_code == 200


def test_shared_collections_are_readable_by_everyone_and_managed_by_staff_only(bob_client, alice, minilm):
    shared = Collection.objects.create(owner=None, name="Handbook", embedding_model=minilm)
    names = [c["name"] for c in bob_client.get("/api/collections").json()["results"]]
    assert "Handbook" in names
    assert bob_client.get(f"/api/collections/{shared.id}").json()["shared"] is True
    assert upload(bob_client, shared.id, "notes.md", b"# hi").status_code == 403
    assert bob_client.delete(f"/api/collections/{shared.id}").status_code == 403
    Collection.objects.create(owner=alice, name="Alice private", embedding_model=minilm)
    assert "Alice private" not in [c["name"] for c in bob_client.get("/api/collections").json()["results"]]


def test_deleting_a_collection_deletes_its_documents_and_chunks(
    alice_client, collection, django_capture_on_commit_callbacks
):
    ingest_upload(alice_client, collection, "travel.md", FERRY.encode(), capture=django_capture_on_commit_callbacks)
    assert alice_client.delete(f"/api/collections/{collection.id}").status_code == 204
    assert not Document.objects.exists() and not Chunk.objects.exists()


# --- the retrieve step, sources and attachments ----------------------------------------------------------


@pytest.fixture
def echo(db) -> ModelConfig:
    """A scripted model that answers with the prompt it was given."""
    return ModelConfig.objects.create(
        model_id="echo", display_name="Echo", provider="scripted", context_window=100000, options={"echo_prompt": True}
    )


def ready_document(collection, title: str, text: str) -> Document:
    document = Document.objects.create(
        collection=collection, title=title, filename=title, kind="markdown", size_bytes=len(text),
        sha256=str(hash((collection.id, title))), data=text.encode(),
    )  # fmt: skip
    assert run_ingestion(str(document.id)) == "ready"
    document.refresh_from_db()
    return document


def stream_events(message) -> list[dict]:
    return [json.loads(f["data"]) for _, f in sync_redis().xrange(stream_key(str(message.id)))]


def answer(chat, model, content, workflow=None, attachments=None) -> Message:
    _, reply, _ = chat_actions.do_send_message(
        chat.owner, chat, content=content, model=model, workflow=workflow, attachments=attachments
    )
    run_reply(str(reply.id))
    reply.refresh_from_db()
    return reply


RETRIEVE = {"type": "retrieve", "similarity_threshold": 0.2, "max_total_results": 3}


def test_a_retrieve_step_sends_sources_before_the_text_and_the_reply_keeps_them(alice, bob, minilm, echo, collection):
    ferry = ready_document(collection, "travel.md", FERRY)
    ready_document(collection, "llamas.md", LLAMAS)
    # Bob's collection says the same thing: it must never be searched for alice.
    bobs = Collection.objects.create(owner=bob, name="Bob's", embedding_model=minilm)
    ready_document(bobs, "bob-travel.md", FERRY)
    workflow = Workflow.objects.create(owner=alice, name="Docs", steps=[RETRIEVE, {"type": "generate"}])
    chat = Chat.objects.create(owner=alice)

    reply = answer(chat, echo, "What time does the boat to Skye depart?", workflow)

    assert reply.status == "completed", reply.error
    events = stream_events(reply)
    types = [e["type"] for e in events]
    assert types.count("sources") == 1 and types.index("sources") < types.index("content")
    sources = events[types.index("sources")]["sources"]
    assert sources[0]["documentId"] == str(ferry.id) and sources[0]["title"] == "travel.md"
    assert {s["collectionId"] for s in sources} == {str(collection.id)}
    assert [s["number"] for s in sources] == list(range(1, len(sources) + 1))
    assert all(0 <= s["score"] <= 1 for s in sources) and "9:15" in sources[0]["snippet"]
    assert reply.sources == sources
    prompt = json.loads(reply.content)
    assert "[1] travel.md" in prompt[-1]["content"] and "Mallaig harbour at 9:15" in prompt[-1]["content"]
    assert "cite" in prompt[0]["content"]
    step_events = [e for e in events if e["type"] == "step" and e["step"] == "retrieve"]
    assert [e["state"] for e in step_events] == ["started", "finished"] and step_events[1]["resultCount"] >= 1


def test_a_retrieve_step_finds_nothing_above_its_threshold_and_sends_no_sources(alice, echo, collection):
    ready_document(collection, "llamas.md", LLAMAS)
    steps = [{**RETRIEVE, "similarity_threshold": 0.95}, {"type": "generate"}]
    workflow = Workflow.objects.create(owner=alice, name="Strict", steps=steps)
    reply = answer(Chat.objects.create(owner=alice), echo, "Explain quantum chromodynamics.", workflow)
    assert reply.status == "completed" and reply.sources == []
    assert "sources" not in [e["type"] for e in stream_events(reply)]


def test_metadata_filters_limit_a_source_to_matching_documents(alice, echo, collection):
    ferry = ready_document(collection, "travel.md", FERRY)
    llamas = ready_document(collection, "llamas.md", LLAMAS)
    Document.objects.filter(id=llamas.id).update(metadata={"kind": "markdown", "topic": "animals"})
    steps = [
        {"type": "retrieve", "sources": [{"collection": str(collection.id), "similarity_threshold": 0.0,
                                         "metadata_filters": {"topic": "animals"}}]},
        {"type": "generate"},
    ]  # fmt: skip
    workflow = Workflow.objects.create(owner=alice, name="Animals only", steps=steps)
    reply = answer(Chat.objects.create(owner=alice), echo, "When does the ferry leave?", workflow)
    assert {s["documentId"] for s in reply.sources} == {str(llamas.id)}
    assert str(ferry.id) not in json.dumps(reply.sources)


def test_an_attached_document_that_fits_is_given_whole_as_source_1(alice, echo, collection):
    llamas = ready_document(collection, "llamas.md", LLAMAS)
    reply = answer(Chat.objects.create(owner=alice), echo, "How heavy is it?", attachments=[str(llamas.id)])
    assert [(s["documentId"], s["score"], s["number"]) for s in reply.sources] == [(str(llamas.id), 1.0, 1)]
    assert LLAMAS.strip() in json.loads(reply.content)[-1]["content"]


def test_an_attached_document_too_large_for_the_prompt_is_searched_instead(alice, echo, collection):
    echo.context_window = 700
    echo.default_max_tokens = 100
    echo.save()
    long_text = FERRY + "\n\n".join(
        f"Paragraph {i} is about the weather on day {i}, mild and grey." for i in range(150)
    )
    document = ready_document(collection, "long.md", long_text)
    reply = answer(
        Chat.objects.create(owner=alice), echo, "When does the ferry to Skye leave?", attachments=[str(document.id)]
    )
    assert reply.status == "completed", reply.error
    assert reply.sources and all(s["id"] != str(document.id) for s in reply.sources)  # passages, not the whole
    assert any("9:15" in s["snippet"] for s in reply.sources)


def test_attachments_must_be_ready_documents_the_sender_may_read(alice_client, alice, bob, minilm, scripted_model):
    bobs = Collection.objects.create(owner=bob, name="Bob's", embedding_model=minilm)
    bob_doc = Document.objects.create(
        collection=bobs, title="b", filename="b.md", kind="markdown", size_bytes=1, sha256="b", data=b"b",
        status="ready",
    )  # fmt: skip
    mine = Collection.objects.create(owner=alice, name="Mine", embedding_model=minilm)
    queued = Document.objects.create(
        collection=mine, title="q", filename="q.md", kind="markdown", size_bytes=1, sha256="q", data=b"q"
    )
    chat = Chat.objects.create(owner=alice)
    url = f"/api/chats/{chat.id}/messages/stream"
    body = {"content": "hi", "modelId": "scripted", "userId": str(alice.id)}
    for attachments, words in (
        ([str(bob_doc.id)], "not available"),
        ([str(queued.id)], "not ready"),
        (["nope"], "UUID"),
    ):
        response = alice_client.post(url, {**body, "attachments": attachments}, format="json")
        assert response.status_code == 400, response.content
        assert words in json.dumps(response.json()["fields"]["attachments"])
    assert not Message.objects.filter(chat=chat).exists()


def test_a_workflow_may_name_only_collections_its_owner_may_search(alice_client, bob, minilm):
    bobs = Collection.objects.create(owner=bob, name="Bob's", embedding_model=minilm)
    steps = [{"type": "retrieve", "sources": [{"collection": str(bobs.id)}]}, {"type": "generate"}]
    response = alice_client.post("/api/workflows", {"name": "Snoop", "steps": steps}, format="json")
    assert response.status_code == 400 and "not yours to search" in response.content.decode()
    steps[0]["retrieval_strategy"] = "random"
    response = alice_client.post("/api/workflows", {"name": "Bad", "steps": steps}, format="json")
    assert response.status_code == 400 and "retrieval_strategy" in response.content.decode()


def test_a_finished_reply_replays_its_sources_from_the_database_and_lists_them(alice, alice_client, echo, collection):
    ready_document(collection, "llamas.md", LLAMAS)
    workflow = Workflow.objects.create(owner=alice, name="Docs", steps=[RETRIEVE, {"type": "generate"}])
    chat = Chat.objects.create(owner=alice)
    reply = answer(chat, echo, "How much does a llama weigh?", workflow)
    replay = replay_from_database(reply)
    assert [(entry_id, event["type"]) for entry_id, event in replay] == [
        ("0-1", "start"), ("0-2", "sources"), ("0-3", "content"), ("0-4", "end"),
    ]  # fmt: skip
    assert replay[1][1]["sources"] == reply.sources
    messages = alice_client.get(f"/api/chats/{chat.id}/messages").json()["results"]
    assert messages[-1]["sources"] == reply.sources


def test_pdf_bytes_helper_makes_a_pdf_pypdf_reads():
    from pypdf import PdfReader

    assert "two" in PdfReader(io.BytesIO(pdf_bytes(["one", "two"]))).pages[1].extract_text()


def test_the_watchdog_sends_a_document_lost_from_the_queue_again(alice, collection, settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from knowledge import actions
    from pipelines.runner import end_lost_replies

    sent = []
    monkeypatch.setattr(actions, "enqueue_ingestion", sent.append)
    settings.CHATSITE_REQUEUE_SECONDS = 60
    lost = Document.objects.create(
        collection=collection, title="lost.md", filename="lost.md", kind="markdown", size_bytes=1, sha256="l", data=b"x"
    )
    fresh = Document.objects.create(
        collection=collection, title="new.md", filename="new.md", kind="markdown", size_bytes=1, sha256="n", data=b"y"
    )
    Document.objects.filter(id=lost.id).update(created_at=timezone.now() - timedelta(seconds=120))
    end_lost_replies()
    end_lost_replies()  # once per interval
    assert sent == [str(lost.id)] and str(fresh.id) not in sent


def test_all_documents_lists_own_and_shared_ones_by_status_never_another_users(alice_client, alice, bob, minilm):
    def doc(collection, title, status):
        return Document.objects.create(
            collection=collection, title=title, filename=title, kind="text", size_bytes=1, sha256=title, data=b"x",
            status=status,
        )  # fmt: skip

    mine = Collection.objects.create(owner=alice, name="Mine", embedding_model=minilm)
    shared = Collection.objects.create(owner=None, name="Handbook", embedding_model=minilm)
    bobs = Collection.objects.create(owner=bob, name="Bob's", embedding_model=minilm)
    doc(mine, "a-ready", "ready"), doc(mine, "a-queued", "queued"), doc(shared, "s-ready", "ready")
    doc(bobs, "b-ready", "ready")
    listed = alice_client.get("/api/documents?status=ready").json()["results"]
    assert sorted((d["title"], d["collectionName"]) for d in listed) == [("a-ready", "Mine"), ("s-ready", "Handbook")]
    assert len(alice_client.get("/api/documents").json()["results"]) == 3
    bad = alice_client.get("/api/documents?status=done")
    assert bad.status_code == 400 and "status" in bad.json()["fields"]


def test_the_same_passage_found_in_two_collections_is_given_once():
    from knowledge.retrieval import combine
    from knowledge.vectors import ChunkHit

    def hit(chunk_id, collection, text, score):
        return ChunkHit(chunk_id, f"doc-{collection}", "handbook.pdf", collection, text, 2, 0, len(text), score)

    same = "Every employee gets twenty-eight days of paid leave."
    found = combine(
        [
            [hit(1, "a", same, 0.7), hit(2, "a", "Working hours are nine to five.", 0.4)],
            [hit(3, "b", f" {same}\n", 0.7)],
        ],
        [1.0, 1.0],
        "merge",
        10,
    )
    assert [r.hit.chunk_id for r in found] == [1, 2]
