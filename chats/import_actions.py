"""The write of an import: each chat of a read file (`chats.importers`) in one transaction of its own.

Kept apart from `chats.actions` (which is at its size limit); like it, the only place these rows are written.
"""

from __future__ import annotations

import logging
import uuid

from django.db import DatabaseError, transaction

from chats.importers import ImportedChat, ImportFile
from chats.models import Chat, Message, User

logger = logging.getLogger(__name__)


def do_import_chats(owner: User, imported: ImportFile) -> dict:
    """Create the file's chats for `owner`: each one whole, in one transaction, or not at all.

    Messages get new UUIDs (the file's ids only link parents), keep their tree, and are saved `completed`: no
    reply is queued, so no worker ever sees them. A chat with a `problem`, or whose write fails, is skipped
    whole.

    Returns:
        The report: `{"format": str, "imported": [{"chatId", "title", "messages"}], "skipped": [{"index",
        "title", "reason"} and, for what was left out of an imported chat, also "messageId" (the file's id)]}`.
    """
    report: dict = {"format": imported.format, "imported": [], "skipped": []}
    for chat in imported.chats:
        if chat.problem is None:
            try:
                created = _write_chat(owner, chat)
            except DatabaseError:
                logger.exception("import of chat %s of a %s file failed", chat.index, imported.format)
                chat.problem = "This chat could not be saved."
            else:
                report["imported"].append(
                    {"chatId": str(created.id), "title": created.title, "messages": len(chat.messages)}
                )
        if chat.problem is not None:
            report["skipped"].append({"index": chat.index, "title": chat.title, "reason": chat.problem})
            continue
        for key, reason in chat.notes:
            entry = {"index": chat.index, "title": chat.title, "reason": reason}
            if key is not None:
                entry["messageId"] = key
            report["skipped"].append(entry)
    return report


def _write_chat(owner: User, chat: ImportedChat) -> Chat:
    """One chat and its messages, in one transaction (three statements and one bulk insert)."""
    ids = {m.key: uuid.uuid4() for m in chat.messages}
    with transaction.atomic():
        row = Chat.objects.create(
            owner=owner, title=chat.title, model_id=chat.model_id, pinned=chat.pinned, archived=chat.archived
        )
        Message.objects.bulk_create(
            [
                Message(
                    id=ids[m.key],
                    chat=row,
                    role=m.role,
                    content=m.content,
                    status=Message.Status.COMPLETED,
                    model_id=m.model_id,
                    parent_id=ids[m.parent_key] if m.parent_key else None,
                    finish_reason=m.finish_reason,
                    prompt_tokens=m.prompt_tokens,
                    completion_tokens=m.completion_tokens,
                    tool_calls=m.tool_calls,
                    sources=m.sources,
                    created_at=m.created_at,
                    completed_at=m.completed_at,
                )
                for m in chat.messages
            ],
            batch_size=500,
        )
        # The file's times, not now: auto_now and auto_now_add would otherwise set them on create.
        Chat.objects.filter(pk=row.pk).update(created_at=chat.created_at, updated_at=chat.updated_at)
    row.created_at, row.updated_at = chat.created_at, chat.updated_at
    return row
