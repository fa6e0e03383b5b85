"""Abuse limits on sending: a per-user rate, a cap on replies in progress, and an optional daily token quota.

Checked by the send and regenerate views after the request is validated and before anything is written or
enqueued. Over a limit is 429 with `Retry-After` and a message that says which limit and when to retry.
"""

from datetime import datetime, time, timedelta

from django.conf import settings
from django.db.models import Case, F, Value, When
from django.utils import timezone
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle

from chats.exceptions import ReplyInProgress
from chats.models import Chat, DailyUsage, Message, User


class SendRateThrottle(UserRateThrottle):
    """Sends and regenerations per user (CHATSITE_SEND_RATE, DRF's "N/period" form), counted in the cache."""

    scope = "send"

    def get_rate(self) -> str:
        return settings.CHATSITE_SEND_RATE


def _seconds_to_midnight_utc() -> int:
    now = timezone.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=now.tzinfo)
    return int((midnight - now).total_seconds()) + 1


def tokens_used_today(user: User) -> int:
    """Prompt + completion tokens the user's replies used today (UTC), from the usage ledger."""
    row = DailyUsage.objects.filter(user=user, day=timezone.now().date()).first()
    return row.tokens if row else 0


def quota_left(user: User) -> int | None:
    """Tokens the user may still use today, or None when they have no quota."""
    if user.daily_token_quota is None:
        return None
    return max(0, user.daily_token_quota - tokens_used_today(user))


def do_record_usage(user: User, tokens: int) -> None:
    """Add a reply's tokens to the user's ledger for today (only kept for users with a quota)."""
    if user.daily_token_quota is None or tokens <= 0:
        return
    today = timezone.now().date()
    if not DailyUsage.objects.filter(user=user, day=today).update(tokens=F("tokens") + tokens):
        DailyUsage.objects.get_or_create(user=user, day=today, defaults={"tokens": tokens})


def check_send_limits(request: Request, view: object, chat: Chat | None = None, replies: int = 1) -> None:
    """Refuse a send or regenerate in `chat` that another reply of the chat blocks, or that is over one of
    the user's limits (in that order: 409, then 429).

    The user's replies in progress are read once, for both the chat's 409 and the per-user cap. `replies` is
    how many replies the request would start (a compare starts one per model): all of them must fit the cap.

    Raises:
        ReplyInProgress: 409 `reply_in_progress` when `chat` already has a reply queued or streaming.
        Throttled: 429 `too_many_replies`, `quota_exceeded` or `rate_limited`, with the seconds to wait.
    """
    user = request.user
    cap = settings.CHATSITE_MAX_CONCURRENT_REPLIES
    rows = Message.objects.filter(
        chat__owner=user, role=Message.Role.ASSISTANT, status__in=(Message.Status.QUEUED, Message.Status.STREAMING)
    )
    if chat is not None:
        # The chat's own reply first, so that the count's limit never hides it (409 comes before 429).
        rows = rows.order_by(Case(When(chat_id=chat.id, then=Value(0)), default=Value(1)))
    in_progress = list(rows.values_list("id", "chat_id")[: cap + 1])
    if chat is not None:
        for message_id, chat_id in in_progress:
            if chat_id == chat.id:
                raise ReplyInProgress(message_id)
    running = len(in_progress)
    if running + replies > cap:
        raise Throttled(
            wait=5,
            detail=(
                f"You already have {running} replies in progress"
                + (f" and at most {cap} may run at once, so {replies} more do not fit" if replies > 1 else "")
                + ". Wait for one to finish, or stop one."
            ),
            code="too_many_replies",
        )
    left = quota_left(user)
    if left is not None and left <= 0:
        raise Throttled(
            wait=_seconds_to_midnight_utc(),
            detail=f"You have used your {user.daily_token_quota} tokens for today. The quota resets at midnight UTC.",
            code="quota_exceeded",
        )
    throttle = SendRateThrottle()
    if not throttle.allow_request(request, view):
        wait = throttle.wait() or 1
        raise Throttled(
            wait=wait,
            detail=f"You are sending too fast (at most {settings.CHATSITE_SEND_RATE}). Try again in {int(wait) + 1} s.",
            code="rate_limited",
        )
