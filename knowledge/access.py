"""The only way to load a collection or document for a user: every view and every search goes through these.

A user may read and search their own collections and the shared ones (owner null); they change and upload
to their own, and staff change shared ones. An id that does not exist (or is not a UUID) is 404; another
user's collection or document is 403, as everywhere in chatsite.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet
from rest_framework.exceptions import NotFound, PermissionDenied

from chats.access import parse_uuid
from chats.models import User
from knowledge.models import Collection, Document


def visible_collections(user: User) -> QuerySet[Collection]:
    """The collections `user` may read and search: their own and the shared ones."""
    return Collection.objects.filter(Q(owner=user) | Q(owner__isnull=True))


def visible_documents(user: User) -> QuerySet[Document]:
    """The documents of the collections `user` may read."""
    return Document.objects.filter(Q(collection__owner=user) | Q(collection__owner__isnull=True))


def _check(owner_id, user: User, for_write: bool, what: str) -> None:
    if owner_id is None:
        if for_write and not user.is_staff:
            raise PermissionDenied(f"Shared collections are managed by staff; this {what} is read-only to you.")
        return
    if owner_id != user.id:
        raise PermissionDenied(f"This {what} belongs to another user.", code="forbidden")


def access_collection(user: User, collection_id: str, *, for_write: bool = False) -> Collection:
    """Return the collection `collection_id` if `user` may read it or, `for_write`, change it.

    Raises:
        NotFound: 404 when no collection has that id.
        PermissionDenied: 403 when it is another user's, or shared and the user is not staff (for_write).
    """
    collection = (
        Collection.objects.select_related("embedding_model").filter(id=parse_uuid(collection_id, "Collection")).first()
    )
    if collection is None:
        raise NotFound(f"Collection {collection_id} does not exist.", code="not_found")
    _check(collection.owner_id, user, for_write, "collection")
    return collection


def access_document(user: User, document_id: str, *, for_write: bool = False) -> Document:
    """Return the document `document_id` if `user` may read it (or, `for_write`, delete it); its `data`
    (the file's bytes) is deferred.

    Raises:
        NotFound: 404 when no document has that id.
        PermissionDenied: 403 when its collection is another user's (or shared, for_write, to non-staff).
    """
    document = (
        Document.objects.select_related("collection")
        .defer("data")
        .filter(id=parse_uuid(document_id, "Document"))
        .first()
    )
    if document is None:
        raise NotFound(f"Document {document_id} does not exist.", code="not_found")
    _check(document.collection.owner_id, user, for_write, "document")
    return document
