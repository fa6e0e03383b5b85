"""Users, chats and messages (DESIGN.md section 2)."""

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who chats. Its UUID `id` is the `userId` that clients send (seed 004)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    daily_token_quota = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most prompt + completion tokens this user's replies may use per day (UTC); empty = no quota.",
    )


class Chat(models.Model):
    """A conversation owned by one user; its messages form a tree through `Message.parent`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats")
    title = models.CharField(max_length=settings.CHATSITE_MAX_TITLE_CHARS, blank=True, default="")
    # The public id of a `pipelines.ModelConfig` (kept as text so a chat outlives a removed model).
    model_id = models.CharField(max_length=100, blank=True, default="")
    workflow = models.ForeignKey(
        "pipelines.Workflow", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Source(models.TextChoices):
        WEB = "web", "Web UI or chatsite API"
        OPENAI = "openai", "OpenAI-compatible API"
        RAG_STREAM = "rag_stream", "RAG chat stream API (seed 002)"
        SEARCH_SESSION = "search_session", "Search session API (seed 003)"

    # Which protocol started the chat: the UI labels chats that programs started through another protocol.
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.WEB)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Pins and archive (issue 18): pinned chats come first in the list; archived ones leave it (still searchable).
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)

    class Meta:
        ordering = ["-updated_at", "-created_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            # The chat list: one owner's chats, archived or not, pinned first, newest first.
            models.Index(fields=["owner", "archived", "-pinned", "-updated_at"], name="chat_list_order"),
        ]

    def __str__(self) -> str:
        return self.title or f"Chat {self.id}"


class Message(models.Model):
    """One message of a chat: a user's question or an assistant's reply (and, later, system and tool turns).

    An assistant message goes `queued` -> `streaming` -> one of `completed`, `failed`, `cancelled`; its
    `content`, usage, finish reason and error are written once, when the reply ends.
    """

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"
        TOOL = "tool"

    class Status(models.TextChoices):
        QUEUED = "queued"
        STREAMING = "streaming"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED)
    model_id = models.CharField(max_length=100, blank=True, default="")
    workflow = models.ForeignKey(
        "pipelines.Workflow", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The message this one answers or follows: a reply's parent is its question, a question's parent is
    # the reply before it. Regenerate and edit make siblings; a prompt is the chain of parents.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # {"code": str, "message": str, "retryable": bool} when status is failed.
    error = models.JSONField(null=True, blank=True)
    # Structured data, never markup inside `content`: [{callId, toolName, toolArgs, result}], [{id, ...}].
    tool_calls = models.JSONField(default=list, blank=True)
    sources = models.JSONField(default=list, blank=True)
    # A question's attached documents ([documentId]): used whole when they fit the prompt, else searched.
    attachments = models.JSONField(default=list, blank=True)
    # A reply's generation settings asked for by the client (OpenAI API): `temperature` (0-2), `max_tokens`,
    # `stop` ([str]); they override the workflow's and the model's defaults. Empty: none asked for.
    options = models.JSONField(default=dict, blank=True)
    # The client's Idempotency-Key for the send that created this reply; unique within a chat.
    idempotency_key = models.CharField(max_length=settings.CHATSITE_MAX_IDEMPOTENCY_KEY_CHARS, blank=True, default="")
    # How many times a worker has started generating this reply (each claim, and each take-over after a worker
    # died): at most CHATSITE_MAX_REPLY_ATTEMPTS. It is also the fencing token of its current worker: a worker
    # whose attempt is no longer the newest may not write to the reply's stream or save it.
    attempts = models.PositiveSmallIntegerField(default=0)
    # The worker lane a reply runs in (chatsite.jobs): `network` for remote models, `local` for models this
    # server runs (CPU-bound). Set when the reply is created; it decides its queue and its place in line.
    lane = models.CharField(max_length=16, default="network")
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Search (issue 18): on PostgreSQL the table also has `search_vector`, a stored generated tsvector of `content`
    # that only SQL reads (migration 0006, chats/search.py); it is no field here, as SQLite has no to_tsvector.

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["chat", "created_at"]),
            models.Index(fields=["status"]),
            models.Index(fields=["lane", "status", "created_at"], name="message_lane_line"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["chat", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="unique_idempotency_key_per_chat",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.id}"

    @property
    def usage(self) -> dict | None:
        """Token usage as the API shows it: `{"promptTokens": int, "completionTokens": int}`, or None."""
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return {"promptTokens": self.prompt_tokens or 0, "completionTokens": self.completion_tokens or 0}


class ApiKey(models.Model):
    """A key a program uses instead of a session: `Authorization: Bearer <key>`, no CSRF token.

    Only a SHA-256 hash of the key is stored; the key itself is shown once, when it is created. A key
    carries its owner's rights, or only reads when `read_only`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class DailyUsage(models.Model):
    """Tokens a user's replies used on one day (UTC), kept for users with a daily token quota.

    A ledger of its own, so that deleting chats does not give the tokens back.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "day"], name="one_usage_row_per_user_and_day")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day}: {self.tokens} tokens"


class Share(models.Model):
    """A read-only link to a chat's current branch (issue 18): `/s/<token>` and `/api/shares/<token>`.

    Only a SHA-256 hash of the token is stored (as `ApiKey`); the token is shown once, when the link is made.
    `audience` is `anyone` (the link alone is enough) or `logged_in` (any logged-in user with the link). A link
    stops working when it is revoked (`revoked_at`) or expires (`expires_at`, none: never).
    """

    class Audience(models.TextChoices):
        ANYONE = "anyone"
        LOGGED_IN = "logged_in"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="shares")
    token_hash = models.CharField(max_length=64, unique=True)
    audience = models.CharField(max_length=16, choices=Audience.choices, default=Audience.ANYONE)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"share {self.id} of chat {self.chat_id}"
