"""Share links (issue 18): their writes, the one way a token is turned into a share, and what a viewer may see.

A share grants read access to one chat's current branch and nothing else: the token is checked here, and the
views in `chats.share_api` serve only what `shared_branch` and `chats.share_stream` hand them (no user, chat,
document, collection, workflow or model-config ids, no usage quotas, no tool arguments).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from datetime import datetime

import redis
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone
from rest_framework.exceptions import NotAuthenticated, NotFound

from chats import events
from chats.models import Chat, Message, Share, User

logger = logging.getLogger(__name__)

# Kept after a revocation for as long as a viewer's stream could still be open (a reply's whole time budget,
# its stream's lifetime after the end, and room to spare): long enough for every relay to see it.
REVOKED_FLAG_TTL_SECONDS = 2 * 24 * 3600
# The embedded server (one process, memory bus) keeps revocations here instead of in Redis.
_revoked_here: set[str] = set()
_revoked_lock = threading.Lock()

UNAVAILABLE = "This share link does not exist or is no longer available."


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a share token (tokens are 32 random bytes: a fast hash is enough to store them)."""
    return hashlib.sha256(token.encode()).hexdigest()


def revoked_key(share_id: str) -> str:
    """The Redis key that tells viewers' relays a share was revoked: `share-revoked:<id>`."""
    return f"share-revoked:{share_id}"


def live_shares(chat: Chat) -> QuerySet[Share]:
    """The chat's shares that still work (not revoked, not expired), newest first."""
    return chat.shares.filter(revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


def do_create_share(chat: Chat, *, audience: str = Share.Audience.ANYONE, expires_at: datetime | None = None):
    """Make a share link to `chat`: returns `(share, token)`; the token is never stored (only its hash)."""
    token = secrets.token_urlsafe(32)
    share = Share.objects.create(chat=chat, token_hash=hash_token(token), audience=audience, expires_at=expires_at)
    return share, token


def do_revoke_share(share: Share) -> Share:
    """Revoke a share: its page and API answer 404 from now on, and open viewers' streams end within about
    CHATSITE_SHARE_CHECK_SECONDS (their relays look for the flag this sets). Revoking twice changes nothing."""
    if share.revoked_at is None:
        share.revoked_at = timezone.now()
        share.save(update_fields=["revoked_at"])
    mark_revoked(str(share.id))
    return share


def mark_revoked(share_id: str) -> None:
    """Raise the revoked flag of `share_id` where viewers' relays look: Redis, or this process when embedded."""
    if settings.CHATSITE_EMBEDDED:
        with _revoked_lock:
            _revoked_here.add(share_id)
        return
    try:
        events.sync_redis().set(revoked_key(share_id), "1", ex=REVOKED_FLAG_TTL_SECONDS)
    except redis.RedisError:
        # The row says revoked: the page and API refuse it at once; open streams end at their next reconnect.
        logger.warning("could not flag share %s as revoked in Redis", share_id)


async def is_revoked(share_id: str) -> bool:
    """Whether `share_id` was revoked since a viewer's stream opened (see `mark_revoked`).

    A Redis error counts as not revoked: the relay underneath meets the same outage and ends the stream itself.
    """
    if settings.CHATSITE_EMBEDDED:
        return share_id in _revoked_here
    try:
        return bool(await events.async_redis().exists(revoked_key(share_id)))
    except redis.RedisError:
        return False


def access_share(token: str, user: User) -> Share:
    """The share whose token is `token`, if it still works and `user` is in its audience.

    Raises:
        NotFound: 404 for an unknown, revoked or expired token (the same sentence for each, naming nothing).
        NotAuthenticated: 401 for a `logged_in` share opened without a session or API key.
    """
    share = (
        Share.objects.select_related("chat")
        .filter(token_hash=hash_token(str(token)), revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .first()
    )
    if share is None:
        raise NotFound(UNAVAILABLE, code="not_found")
    if share.audience == Share.Audience.LOGGED_IN and not (user and user.is_authenticated):
        raise NotAuthenticated("Log in to see this shared chat.")
    return share


def message_ref(share: Share, message_id: str) -> str:
    """A message's opaque reference within one share (an HMAC of both ids): stable, and no use elsewhere."""
    mac = hmac.new(settings.SECRET_KEY.encode(), f"share:{share.id}:{message_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def current_branch(chat: Chat) -> list[Message]:
    """The chat's current branch, oldest first: the newest message and its chain of parents.

    Loads the chat's messages in one query and walks the `parent` links in memory (as
    `pipelines.generation.branch_history`).
    """
    rows = {m.id: m for m in Message.objects.filter(chat=chat).order_by("created_at")}
    if not rows:
        return []
    newest = max(rows.values(), key=lambda m: (m.created_at, m.role == Message.Role.ASSISTANT))
    chain: list[Message] = []
    current: Message | None = newest
    while current is not None and len(chain) < len(rows):
        chain.append(current)
        current = rows.get(current.parent_id)
    chain.reverse()
    return chain


def shared_message(share: Share, ref: str) -> Message:
    """The message of the share's current branch whose reference is `ref`.

    Raises:
        NotFound: 404 when no message of the current branch has that reference.
    """
    for message in current_branch(share.chat):
        if hmac.compare_digest(message_ref(share, str(message.id)), str(ref)):
            return message
    raise NotFound("This shared chat has no such message.", code="not_found")


def viewer_source(source: dict) -> dict:
    """A source as a viewer sees it: its citation `number`, `title` and `snippet` only."""
    return {"number": source.get("number"), "title": source.get("title", ""), "snippet": source.get("snippet", "")}


def viewer_tool_calls(tool_calls: list) -> list[dict]:
    """Tool calls as a viewer sees them: each tool's name and its result as text (no arguments, no ids)."""
    return [
        {"toolName": str(call.get("toolName", "")), "result": result_text(call.get("result"))}
        for call in tool_calls or []
        if isinstance(call, dict)
    ]


def result_text(result: object) -> str:
    """A tool's result as text: itself when it is text, else its JSON ('' for none)."""
    if result is None:
        return ""
    return result if isinstance(result, str) else events.encode(result)


def shared_view(share: Share) -> dict:
    """`{title, messages}`: what `GET /api/shares/<token>` answers (see `chats.share_api.SharedChatSerializer`)."""
    messages = [
        {
            "ref": message_ref(share, str(m.id)),
            "role": m.role,
            "content": m.content,
            "status": m.status,
            "createdAt": m.created_at,
            "finishReason": m.finish_reason,
            "sources": [viewer_source(s) for s in m.sources or [] if isinstance(s, dict)],
            "toolCalls": viewer_tool_calls(m.tool_calls),
        }
        for m in current_branch(share.chat)
        if m.role in (Message.Role.USER, Message.Role.ASSISTANT)
    ]
    return {"title": share.chat.title, "messages": messages}
