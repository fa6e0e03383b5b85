"""Many replies at once in one worker process: the network lane's gevent pool (the Procfile's `worker`) carries
every reply of a paced model side by side, each streaming the text it saves."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.test import override_settings

from chats.actions import do_send_message
from chats.models import Chat, Message
from tests.live import resume

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REPLIES = 200


def test_one_worker_process_streams_200_paced_replies_at_once_each_saving_what_it_streamed(
    live_stack, session, carol, scripted_model
):
    # A model at a real model's pace: 16 tokens at 4 tokens/s, so a reply lasts about 4 s and the 200 overlap
    # (the live stack's soft time limit is 12 s).
    script = [f" t{i}" for i in range(16)]
    scripted_model.options = {"script": script, "delay": 0.25}
    scripted_model.save()
    client, _token = session
    chats = [Chat.objects.create(owner=carol, title=f"many {i}") for i in range(REPLIES)]
    chat_ids = [str(chat.id) for chat in chats]
    heartbeats: set[str] = set()
    peak = 0
    sending = threading.Event()

    def watch() -> None:
        # While the replies run: how many generate at once, and which worker processes beat for them.
        nonlocal peak
        redis = live_stack.redis()
        while not sending.is_set():
            streaming = list(
                Message.objects.filter(chat_id__in=chat_ids, status="streaming").values_list("id", flat=True)
            )
            peak = max(peak, len(streaming))
            for message_id in streaming[:50]:
                value = redis.get(f"{live_stack.key_prefix}{message_id}:heartbeat")
                if value:
                    heartbeats.add(value.rsplit(":", 1)[1])
            time.sleep(0.2)

    # Sent as the API's send does (its action), straight to the stack's queue: the web's own pace is measured
    # by `make bench`; here every reply must reach the worker within a second or so, to run side by side.
    stack_queues = {
        "CELERY_TASK_DEFAULT_QUEUE": live_stack.env["CHATSITE_CELERY_QUEUE"],
        "CHATSITE_LOCAL_QUEUE": live_stack.env["CHATSITE_LOCAL_QUEUE"],
        "CHATSITE_STREAM_KEY_PREFIX": live_stack.key_prefix,
    }
    with override_settings(**stack_queues):
        replies = [do_send_message(carol, chat, content="Go", model=scripted_model, workflow=None)[1] for chat in chats]

    def follow(chat_id: str, reply_id: str):
        with httpx.Client(base_url=live_stack.base_url, cookies=client.cookies, timeout=60) as http:
            return resume(http, chat_id, reply_id)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(REPLIES) as pool:
        received = list(pool.map(follow, chat_ids, [str(r.id) for r in replies]))
    sending.set()
    watcher.join()

    assert [r.status for r in received] == [200] * REPLIES
    assert all(r.types[0] == "start" for r in received)
    endings = [(r.types[-1], r.types.count("end"), r.events[-1]) for r in received]
    assert all(last == "end" and ends == 1 for last, ends, _ in endings), [e for e in endings if e[0] != "end"][:3]
    saved = {str(m.chat_id): m for m in Message.objects.filter(chat_id__in=chat_ids, role="assistant")}
    for chat_id, stream in zip(chat_ids, received, strict=True):
        reply = saved[chat_id]
        assert reply.status == "completed" and reply.content == stream.text == "".join(script)
        assert reply.attempts == 1
    # One worker process carried them, most of them at the same time (none waited for another to finish).
    assert heartbeats == {str(live_stack.processes["worker"].pid)}, heartbeats
    assert peak >= REPLIES // 2, peak
