"""The browser pages of issue 8: the documents page (a small script drives it through the JSON API) and one
document's page (server-rendered: its extracted text, split into the chunks that sources link to)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.exceptions import NotFound, PermissionDenied

from knowledge.access import access_document
from knowledge.models import Chunk, Document


@login_required
def documents_page(request: HttpRequest) -> HttpResponse:
    """`/documents`: the user's collections (own and shared) and their documents; upload, delete, follow."""
    boot = {
        "userId": str(request.user.id),
        "isStaff": request.user.is_staff,
        "maxUploadBytes": settings.CHATSITE_MAX_UPLOAD_BYTES,
    }
    return render(request, "knowledge/documents.html", {"boot": boot})


@dataclass
class Passage:
    """One chunk as the document page shows it, cut so that the page reads as the continuous text.

    Chunks overlap (their neighbours share a few tokens): `lead` is the part this chunk shares with the
    previous one, `own` the rest up to the next chunk's start, `tail` the part it shares with the next one.
    The page shows `lead` and `own`, and, when the chunk is the link's target, its `tail` instead of the next
    chunk's `lead`: the whole passage is highlighted and no text shows twice.
    """

    id: int
    number: int
    page: int | None
    lead: str
    own: str
    tail: str
    gap: str


def passages(document: Document) -> tuple[str, list[Passage], str]:
    """The document's text before its first chunk, its chunks in order as non-overlapping pieces of the text
    (see Passage), and the text after its last chunk."""
    text = document.text
    chunks = list(Chunk.objects.filter(document=document).order_by("index").values_list("id", "page", "start", "end"))
    if not chunks:
        return text, [], ""
    # Where each chunk's shown text begins: its start, never before the previous one's (offsets are trusted
    # only as far as they keep the pieces in order and inside the text).
    begins: list[int] = []
    for _, _, start, _ in chunks:
        begins.append(min(max(start, begins[-1] if begins else 0), len(text)))
    result: list[Passage] = []
    previous_end = 0
    for i, (chunk_id, page, _, end) in enumerate(chunks):
        begin = begins[i]
        end = min(max(end, begin), len(text))
        next_begin = begins[i + 1] if i + 1 < len(chunks) else end
        after_next = begins[i + 2] if i + 2 < len(chunks) else len(text)
        lead_end = min(max(previous_end, begin), next_begin)
        own_end = max(lead_end, min(end, next_begin))
        result.append(
            Passage(
                id=chunk_id,
                number=i + 1,
                page=page,
                lead=text[begin:lead_end],
                own=text[lead_end:own_end],
                # Shared with the next chunk (not past the one after it, whose own text follows).
                tail=text[next_begin : min(end, after_next)] if end > next_begin else "",
                # Text no chunk covers (between this chunk's end and the next one's start): shown, unmarked.
                gap=text[own_end:next_begin],
            )
        )
        previous_end = end
    return text[: begins[0]], result, text[previous_end:]


@login_required
def document_page(request: HttpRequest, document_id: str) -> HttpResponse:
    """`/documents/<id>`: a document the user may read (404 unknown, 403 another user's), its text by chunk."""
    try:
        document = access_document(request.user, document_id)
    except NotFound:
        return render(request, "chats/refused.html", {"reason": "This document does not exist."}, status=404)
    except PermissionDenied:
        return render(request, "chats/refused.html", {"reason": "This document belongs to another user."}, status=403)
    before, pieces, after = passages(document) if document.status == Document.Status.READY else ("", [], "")
    context = {"document": document, "before": before, "passages": pieces, "after": after}
    return render(request, "knowledge/document.html", context)
