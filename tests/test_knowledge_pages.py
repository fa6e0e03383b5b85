"""The server side of the documents pages: login required, documents checked for ownership as chats are, and
a document's text shown escaped, passage by passage, with the anchors that sources link to."""

import re
import uuid

import pytest
from django.test import Client

from knowledge.models import Chunk, Collection, Document
from knowledge.views import passages

HOSTILE = "Intro <script>alert(1)</script> and <img src=x onerror=alert(2)> end."


def make_document(
    owner, embedding_model, *, text="Hello world. Second sentence.", status="ready", chunks=None, **extra
):
    """A collection of `owner` (None: shared) with one document and its chunks, made directly (no worker)."""
    collection = Collection.objects.create(owner=owner, name="Notes", embedding_model=embedding_model)
    spans = chunks if chunks is not None else [(0, len(text), None)]
    document = Document.objects.create(
        collection=collection, title=extra.pop("title", "My notes"), filename="notes.md", kind="markdown",
        size_bytes=len(text), sha256=uuid.uuid4().hex * 2, data=text.encode(), text=text, status=status,
        chunk_count=len(spans) if status == "ready" else 0, **extra,
    )  # fmt: skip
    if status == "ready":
        for index, (start, end, page) in enumerate(spans):
            Chunk.objects.create(
                document=document, collection=collection, index=index, text=text[start:end], page=page,
                start=start, end=end, token_count=5, dimensions=3, embedding=[1.0, 0.0, 0.0],
            )  # fmt: skip
    return document


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_documents_pages_need_a_login(alice, minilm):
    document = make_document(alice, minilm)
    response = Client().get("/documents")
    assert response.status_code == 302 and response["Location"] == "/login?next=/documents"
    response = Client().get(f"/documents/{document.id}")
    assert response.status_code == 302 and response["Location"] == f"/login?next=/documents/{document.id}"
    assert "My notes" not in response.content.decode()


def test_the_documents_page_is_a_script_driven_page_with_its_data_as_json(alice):
    response = client_for(alice).get("/documents")
    html = response.content.decode()
    assert response.status_code == 200
    assert '<script type="module" src="/static/chatsite/documents.js">' in html
    assert '<script id="boot" type="application/json">' in html and str(alice.id) in html
    assert 'id="upload-files"' in html and 'type="file"' in html and "multiple" in html
    assert "<script>" not in html and " on" + "click=" not in html  # the CSP allows no inline script


def test_the_owner_sees_the_document_page_with_its_passages(alice, minilm):
    text = "First passage here.\n\nSecond passage there."
    document = make_document(alice, minilm, text=text, chunks=[(0, 19, 1), (21, len(text), 2)], page_count=2)
    response = client_for(alice).get(f"/documents/{document.id}")
    html = response.content.decode()
    assert response.status_code == 200
    assert '<h1 id="doc-title">My notes</h1>' in html
    assert f'href="/api/documents/{document.id}/file"' in html
    chunk_ids = list(Chunk.objects.filter(document=document).order_by("index").values_list("id", flat=True))
    for chunk_id in chunk_ids:
        assert f'id="chunk-{chunk_id}"' in html
    assert "page 1" in html and "page 2" in html
    assert re.search(r'id="doc-status">ready<', html)


def test_another_users_document_is_refused_and_an_unknown_one_is_not_found(alice, bob, minilm):
    document = make_document(alice, minilm, title="Alice's secret plan")
    refused = client_for(bob).get(f"/documents/{document.id}")
    assert refused.status_code == 403
    assert b"This document belongs to another user." in refused.content
    assert b"secret plan" not in refused.content and b"Hello world" not in refused.content
    assert client_for(bob).get(f"/documents/{uuid.uuid4()}").status_code == 404
    assert client_for(bob).get("/documents/not-a-uuid").status_code == 404
    assert b"does not exist" in client_for(bob).get(f"/documents/{uuid.uuid4()}").content


def test_a_shared_collections_document_is_readable_by_everyone(bob, minilm):
    document = make_document(None, minilm, title="Company handbook")
    response = client_for(bob).get(f"/documents/{document.id}")
    assert response.status_code == 200 and b"Company handbook" in response.content


def test_the_document_text_and_title_are_escaped(alice, minilm):
    document = make_document(
        alice, minilm, text=HOSTILE, title="<b>bold</b> title", chunks=[(0, 31, None), (32, len(HOSTILE), None)]
    )
    html = client_for(alice).get(f"/documents/{document.id}").content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>bold" not in html
    text = "".join(re.findall(r'<div class="chunk-text">(.*?)</div>', html, re.S))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; title" in html


def test_a_document_not_yet_read_or_failed_says_so(alice, minilm):
    waiting = make_document(alice, minilm, status="processing")
    html = client_for(alice).get(f"/documents/{waiting.id}").content.decode()
    assert "is processing" in html and 'class="chunk"' not in html
    failed = make_document(alice, minilm, status="failed", error="The PDF is encrypted.", title="Locked")
    html = client_for(alice).get(f"/documents/{failed.id}").content.decode()
    assert 'role="alert"' in html and "The PDF is encrypted." in html


@pytest.mark.parametrize(
    "spans",
    [
        [(0, 12, None), (8, 24, None), (20, 40, None)],  # overlapping neighbours
        [(2, 10, None), (14, 30, None)],  # gaps before, between and after
        [(0, 30, None), (5, 12, None), (10, 40, None)],  # one chunk inside another
        [(0, 40, None)],
        [(5, 3, None), (0, 99, None)],  # nonsense offsets: still in order, inside the text
    ],
)
def test_passages_show_every_character_once_and_each_chunk_whole_when_linked(alice, minilm, spans):
    text = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    document = make_document(alice, minilm, text=text, chunks=spans)
    before, pieces, after = passages(document)
    # As the page reads normally: every character once, in order.
    assert before + "".join(p.lead + p.own + p.gap for p in pieces) + after == text
    # With a chunk targeted (its tail shown, the next one's lead hidden): still every character once.
    for i, piece in enumerate(pieces):
        shown = before
        for j, other in enumerate(pieces):
            lead = "" if j == i + 1 else other.lead
            shown += lead + other.own + (other.tail if j == i else "") + other.gap
        assert shown + after == text, (i, piece)
    # A linked chunk shows its own passage whole (when its neighbours leave it room).
    if spans == [(0, 12, None), (8, 24, None), (20, 40, None)]:
        assert [p.lead + p.own + p.tail for p in pieces] == [text[0:12], text[8:24], text[20:40]]


def test_the_chat_page_links_to_the_documents_page(alice):
    html = client_for(alice).get("/").content.decode()
    assert 'href="/documents"' in html
    assert 'id="attach"' in html and 'aria-controls="attach-picker"' in html
