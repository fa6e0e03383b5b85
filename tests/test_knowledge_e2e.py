"""Answers from the user's documents, end to end in both modes: files uploaded over HTTP, ingested by the real
worker (Celery in full mode, the web process's threads in embedded mode) with the real all-MiniLM-L6-v2 model,
then a question answered by the real SmolLM2 through the seeded "Ask my documents" workflow."""

import time
import uuid

import httpx
import pytest

from chats.models import Message, User
from knowledge.models import Collection, Document
from tests.live import entry_key, new_chat, read_sse
from tests.test_knowledge import FERRY, LLAMAS, pdf_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIGHTHOUSE = [
    "Keepers' handbook. Chapter one covers the history of the Neist Point lighthouse, built in 1909.",
    "Chapter two. The lamp of the Neist Point lighthouse is lit thirty minutes before sunset and put out at dawn.",
]


def upload(client: httpx.Client, token: str, collection_id: str, name: str, data: bytes, content_type: str) -> dict:
    response = client.post(
        f"/api/collections/{collection_id}/documents",
        files={"file": (name, data, content_type)},
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_until_ingested(client: httpx.Client, document_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        document = client.get(f"/api/documents/{document_id}").json()
        if document["status"] in ("ready", "failed"):
            return document
        time.sleep(0.3)
    raise AssertionError(f"document {document_id} still {document['status']} after {timeout} s")


def test_documents_uploaded_over_http_ground_a_real_answer_with_sources_before_the_text(
    contract_session, carol, smollm2, minilm, ask_my_documents
):
    client, token = contract_session
    # Another user's collection holds the same answer: it must never be searched or shown to carol.
    dave = User.objects.create_user(f"dave-{uuid.uuid4().hex[:6]}", password="x")
    daves = Collection.objects.create(owner=dave, name="Dave's", embedding_model=minilm)
    daves_doc = Document.objects.create(
        collection=daves, title="dave-lighthouse.md", filename="dave-lighthouse.md", kind="markdown",
        size_bytes=10, sha256="d" * 64, data=" ".join(LIGHTHOUSE).encode(), status="queued",
    )  # fmt: skip

    created = client.post("/api/collections", json={"name": "Trips"}, headers={"X-CSRFToken": token})
    assert created.status_code == 201, created.text
    collection_id = created.json()["id"]
    pdf = upload(client, token, collection_id, "keepers.pdf", pdf_bytes(LIGHTHOUSE), "application/pdf")
    markdown = upload(client, token, collection_id, "travel.md", FERRY.encode(), "text/markdown")
    upload(client, token, collection_id, "llamas.md", LLAMAS.encode(), "text/markdown")
    broken = upload(client, token, collection_id, "broken.pdf", b"%PDF-1.4 garbage", "application/pdf")

    pdf, markdown = wait_until_ingested(client, pdf["id"]), wait_until_ingested(client, markdown["id"])
    assert (pdf["status"], pdf["pageCount"]) == ("ready", 2), pdf
    assert markdown["status"] == "ready" and markdown["chunkCount"] >= 1
    broken = wait_until_ingested(client, broken["id"])
    assert broken["status"] == "failed" and "PDF" in broken["error"]
    # Dave's document was never ingested by anyone, nor is it visible.
    assert client.get(f"/api/documents/{daves_doc.id}").status_code == 403

    smollm2.default_max_tokens = 60
    smollm2.save()
    chat_id = new_chat(client, token)
    body = {
        "content": "When is the Neist Point lighthouse lamp lit?",
        "modelId": "smollm2-135m",
        "userId": str(carol.id),
        "workflowId": str(ask_my_documents.id),
    }
    received = read_sse(client, "POST", f"/api/chats/{chat_id}/messages/stream", token=token, json=body)

    assert received.status == 200, received.body
    types = received.types
    assert types[0] == "start" and types[-1] == "end", types
    assert types.count("sources") == 1 and "content" in types
    assert types.index("sources") < types.index("content"), types
    sources = received.events[types.index("sources")]["sources"]
    assert sources[0]["documentId"] == pdf["id"], sources
    assert sources[0]["page"] == 2 and "thirty minutes before sunset" in sources[0]["snippet"]
    assert all(s["collectionId"] == collection_id for s in sources)
    assert str(daves_doc.id) not in str(sources)
    assert all(received.ids) and received.ids == sorted(received.ids, key=entry_key)

    message = Message.objects.get(id=received.events[0]["messageId"])
    assert message.status == "completed" and message.content == received.text
    assert message.sources == sources
    listed = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
    assert listed[-1]["sources"] == sources
    # The citation leads to the passage: the chunk named by the source is in the document's chunks.
    chunks = client.get(f"/api/documents/{pdf['id']}/chunks").json()["results"]
    cited = next(c for c in chunks if str(c["id"]) == sources[0]["id"])
    assert cited["page"] == 2 and "sunset" in cited["text"]
    print(f"\nsources: {[(s['title'], s['page'], s['score']) for s in sources]}\nanswer: {received.text!r}")


def test_embedded_mode_on_sqlite_ingests_and_searches_with_sqlite_vec(tmp_path):
    """What `make run` gives on a bare machine: SQLite (vectors searched by sqlite-vec), no Redis, no Celery."""
    import os
    import subprocess
    import sys

    from tests.live import login, start_stack

    database_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": database_url, "CHATSITE_EMBEDDED": "1"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input"], env=env, check=True, capture_output=True)
    create = "from chats.models import User; User.objects.create_user('erin', password='e2e password 1234')"
    subprocess.run([*manage, "shell", "-c", create], env=env, check=True, capture_output=True)
    stack = start_stack(database_url, "redis://127.0.0.1:1/0", embedded=True)
    try:
        client, token = login(stack.base_url, "erin", "e2e password 1234")
        me = client.get("/api/auth/me").json()
        collection_id = client.post("/api/collections", json={"name": "Notes"}, headers={"X-CSRFToken": token}).json()[
            "id"
        ]
        ferry = upload(client, token, collection_id, "travel.md", FERRY.encode(), "text/markdown")
        upload(client, token, collection_id, "llamas.md", LLAMAS.encode(), "text/markdown")
        assert wait_until_ingested(client, ferry["id"])["status"] == "ready"
        workflows = client.get("/api/workflows").json()["results"]
        ask = next(w for w in workflows if w["name"] == "Ask my documents")
        chat_id = new_chat(client, token)
        body = {
            "content": "What time does the ferry to Skye leave?",
            "modelId": "smollm2-135m",
            "userId": me["id"],
            "workflowId": ask["id"],
        }
        received = read_sse(client, "POST", f"/api/chats/{chat_id}/messages/stream", token=token, json=body)
        assert received.status == 200 and received.types[-1] == "end", (received.body, stack.dump_logs())
        assert received.types.index("sources") < received.types.index("content")
        sources = received.events[received.types.index("sources")]["sources"]
        assert sources[0]["documentId"] == ferry["id"] and "9:15" in sources[0]["snippet"]
        client.close()
    finally:
        stack.stop()
