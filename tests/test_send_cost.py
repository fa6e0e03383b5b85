"""What a send costs the web process, in counts (bench/send_cpu.py measures the CPU): the statements of its
transaction, and the Redis clients behind Django's cache (sessions, rate limits)."""

import threading

from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chats import actions
from chats.models import Message


def test_a_send_is_one_update_one_read_and_one_insert(alice, alice_chat, scripted_model):
    actions.do_send_message(alice, alice_chat, content="first", model=scripted_model, workflow=None)
    Message.objects.filter(chat=alice_chat, status="queued").update(status="completed")
    with CaptureQueriesContext(connection) as captured:
        question, reply, created = actions.do_send_message(
            alice, alice_chat, content="second", model=scripted_model, workflow=None
        )
    statements = [
        q["sql"].split()[0].upper()
        for q in captured.captured_queries
        if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "COMMIT"))
    ]
    # Reading the chat's messages through `chat.messages` with `.only()` made one more SELECT per row read.
    assert statements == ["UPDATE", "SELECT", "INSERT"], captured.captured_queries
    assert created and question.parent_id is not None and reply.parent_id == question.id


def test_the_cache_uses_one_redis_client_in_every_thread():
    # Django's cache objects are per thread; chatsite's backend gives all of them one pool and one client, as
    # building a redis-py client costs about 0.1 ms of CPU.
    clients = []

    def use_cache() -> None:
        cache.set("send-cost-probe", 1, 5)
        assert cache.get("send-cost-probe") == 1
        clients.append(cache._cache.get_client(write=True))

    threads = [threading.Thread(target=use_cache) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    use_cache()
    assert len(clients) == 4 and all(client is clients[0] for client in clients)
