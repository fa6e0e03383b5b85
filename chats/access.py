"""The only way to load a chat or message for a user: every API view goes through these functions.

Ownership is the same on every endpoint (DESIGN.md section 3): an id that does not exist (or is not a
UUID) is 404; an object that belongs to someone else is 403.
"""

import uuid

from rest_framework.exceptions import NotFound, PermissionDenied

from chats.models import ApiKey, Chat, Message, User


def _parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{what} {value} does not exist.", code="not_found") from None


def access_chat(user: User, chat_id: str) -> Chat:
    """Return the chat `chat_id` if `user` owns it.

    Raises:
        NotFound: 404 when no chat has that id.
        PermissionDenied: 403 when the chat belongs to another user.
    """
    chat = Chat.objects.filter(id=_parse_uuid(chat_id, "Chat")).first()
    if chat is None:
        raise NotFound(f"Chat {chat_id} does not exist.", code="not_found")
    if chat.owner_id != user.id:
        raise PermissionDenied("This chat belongs to another user.", code="forbidden")
    return chat


def access_message(user: User, chat_id: str, message_id: str) -> tuple[Chat, Message]:
    """Return `(chat, message)` if `user` owns the chat and the message is in it.

    Raises:
        NotFound: 404 when the chat does not exist, or has no such message.
        PermissionDenied: 403 when the chat belongs to another user.
    """
    chat = access_chat(user, chat_id)
    message = Message.objects.filter(id=_parse_uuid(message_id, "Message"), chat=chat).first()
    if message is None:
        raise NotFound(f"Message {message_id} does not exist in this chat.", code="not_found")
    return chat, message


def access_api_key(user: User, key_id: str) -> ApiKey:
    """Return the API key `key_id` if `user` owns it.

    Raises:
        NotFound: 404 when no key has that id.
        PermissionDenied: 403 when it belongs to another user.
    """
    api_key = ApiKey.objects.filter(id=_parse_uuid(key_id, "API key")).first()
    if api_key is None:
        raise NotFound(f"API key {key_id} does not exist.", code="not_found")
    if api_key.owner_id != user.id:
        raise PermissionDenied("This API key belongs to another user.", code="forbidden")
    return api_key
