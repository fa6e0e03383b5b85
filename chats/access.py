"""The only way to load a chat or message for a user: every API view goes through these functions.

Ownership is the same on every endpoint (DESIGN.md section 3): an id that does not exist (or is not a
UUID) is 404; an object that belongs to someone else is 403.
"""

import uuid
from typing import TypeVar

from django.db import models
from rest_framework.exceptions import NotFound, PermissionDenied

from chats.models import ApiKey, Chat, Message, User

T = TypeVar("T", bound=models.Model)


def parse_uuid(value: str, what: str) -> uuid.UUID:
    """`value` as a UUID.

    Raises:
        NotFound: 404 `not_found` ("<what> <value> does not exist.") when it is not one.
    """
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{what} {value} does not exist.", code="not_found") from None


def owned(model: type[T], user: User, object_id: str, what: str) -> T:
    """Load `model` row `object_id` (a UUID) whose `owner` must be `user`: the one ownership rule.

    Raises:
        NotFound: 404 when no row has that id, or it is not a UUID.
        PermissionDenied: 403 when the row belongs to another user.
    """
    row = model.objects.filter(id=parse_uuid(object_id, what)).first()
    if row is None:
        raise NotFound(f"{what} {object_id} does not exist.", code="not_found")
    return check_owner(row, user, what)


def check_owner(row: T, user: User, what: str) -> T:
    """`row` if its `owner` is `user`.

    Raises:
        PermissionDenied: 403 when the row belongs to another user.
    """
    if row.owner_id != user.id:
        raise PermissionDenied(f"This {what.lower()} belongs to another user.", code="forbidden")
    return row


def access_chat(user: User, chat_id: str) -> Chat:
    """Return the chat `chat_id` if `user` owns it (404 unknown, 403 someone else's; see `owned`)."""
    return owned(Chat, user, chat_id, "Chat")


def access_message(user: User, chat_id: str, message_id: str) -> tuple[Chat, Message]:
    """Return `(chat, message)` if `user` owns the chat and the message is in it.

    Raises:
        NotFound: 404 when the chat does not exist, or has no such message.
        PermissionDenied: 403 when the chat belongs to another user.
    """
    chat_uuid = parse_uuid(chat_id, "Chat")
    message_uuid = parse_uuid(message_id, "Message")
    # One query when the message is in the chat (the common case); the chat alone otherwise, for its 404/403.
    message = Message.objects.select_related("chat").filter(id=message_uuid, chat_id=chat_uuid).first()
    chat = check_owner(message.chat, user, "Chat") if message is not None else access_chat(user, chat_id)
    if message is None:
        raise NotFound(f"Message {message_id} does not exist in this chat.", code="not_found")
    return chat, message


def access_api_key(user: User, key_id: str) -> ApiKey:
    """Return the API key `key_id` if `user` owns it (404 unknown, 403 someone else's; see `owned`)."""
    return owned(ApiKey, user, key_id, "API key")
