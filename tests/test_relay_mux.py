"""The multiplexed stream reader (`chats.mux.StreamMux`) behind `read_events`, on real Redis.

Each test runs its own event loop (`asyncio.run`), so each gets its own reader; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis

from chats import events
from chats import mux as mux_module
from chats.bus import MAX_ID_PART
from chats.events import EventPublisher, read_events
from chats.mux import StreamMux

_publishers: list[EventPublisher] = []


def publish(message_id: str, event: dict) -> str:
    # One publisher for all, as one worker: it keeps each stream's ids increasing within a millisecond.
    if not _publishers:
        _publishers.append(EventPublisher())
    return _publishers[0].publish(message_id, event).entry_id


async def collect(message_id: str, last_id: str = "0-0", idle: float = 5.0, pings: int = 100) -> list:
    """Everything `read_events` yields, until it returns (or `pings` keep-alives in a row)."""
    out = []
    async for item in read_events(message_id, last_id, idle_seconds=idle):
        out.append(item)
        if out[-pings:] == [None] * pings:
            break
    return out


def test_many_streams_share_one_reader_and_connection(settings):
    settings.CHATSITE_EMBEDDED = False
    ids = [f"m{i}" for i in range(30)]

    async def scenario():
        readers = [asyncio.create_task(collect(m)) for m in ids]
        await asyncio.sleep(0.2)  # every reader subscribed and the XREAD blocked on them all
        mux = events.stream_mux()
        assert len(mux._subs) == len(ids)
        for n in range(3):
            for m in ids:
                await asyncio.to_thread(publish, m, events.content_event(f"{m}.{n} "))
        for m in ids:
            await asyncio.to_thread(
                publish, m, events.end_event(message_id=m, finish_reason="stop", prompt_tokens=1, completion_tokens=3)
            )
        return await asyncio.gather(*readers), mux

    results, mux = asyncio.run(scenario())
    for m, items in zip(ids, results, strict=True):
        got = [i for i in items if i is not None]
        assert [t for _, t, _ in got] == ["content"] * 3 + ["end"]
        assert "".join(events.json.loads(d).get("delta", "") for _, _, d in got) == f"{m}.0 {m}.1 {m}.2 "
    assert not mux._subs  # every reader unsubscribed when it returned


def test_resume_after_last_id_and_two_readers_of_one_stream(settings):
    settings.CHATSITE_EMBEDDED = False
    first = publish("r", events.content_event("a"))
    publish("r", events.content_event("b"))

    async def scenario():
        late = asyncio.create_task(collect("r", first))
        early = asyncio.create_task(collect("r"))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(publish, "r", events.content_event("c"))
        await asyncio.to_thread(
            publish, "r", events.end_event(message_id="r", finish_reason="stop", prompt_tokens=0, completion_tokens=3)
        )
        return await late, await early

    late, early = asyncio.run(scenario())
    deltas = [[events.json.loads(d).get("delta") for _, t, d in x if t == "content"] for x in (late, early)]
    assert deltas == [["b", "c"], ["a", "b", "c"]]
    assert [i[0] for i in early] == sorted((i[0] for i in early), key=events.parse_entry_id)


def test_idle_stream_pings_and_a_new_stream_is_read_while_the_reader_blocks(settings):
    settings.CHATSITE_EMBEDDED = False

    async def scenario():
        idle = asyncio.create_task(collect("idle", idle=0.2, pings=2))
        await asyncio.sleep(0.1)
        # A stream that arrives while the single XREAD blocks on `idle` is read without waiting for it to end.
        publish("new", events.end_event(message_id="new", finish_reason="stop", prompt_tokens=0, completion_tokens=0))
        new = await asyncio.wait_for(collect("new"), 3)
        return await idle, new

    idle, new = asyncio.run(scenario())
    assert idle == [None, None]
    assert [t for _, t, _ in new] == ["end"]


def test_redis_errors_reach_the_reader(settings):
    settings.CHATSITE_EMBEDDED = False
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario():
        mux = StreamMux(f"redis://127.0.0.1:{port}/0")
        sub = mux.subscribe("k", "0-0")
        try:
            await sub.get(5)
        finally:
            mux.unsubscribe(sub)

    with pytest.raises(redis.RedisError):
        asyncio.run(scenario())


def test_memory_bus_still_serves_read_events(settings, monkeypatch):
    bus = events.MemoryBus()
    monkeypatch.setattr(events, "_bus", bus)
    publisher = EventPublisher(bus)
    publisher.publish("e", events.content_event("x"))
    publisher.publish("e", events.end_event(message_id="e", finish_reason="stop", prompt_tokens=0, completion_tokens=1))
    items = asyncio.run(collect("e"))
    assert [t for _, t, _ in items] == ["content", "end"]


def test_events_carry_the_xadd_time_only_when_the_benchmark_asks(settings):
    settings.CHATSITE_EMBEDDED = False
    plain = EventPublisher()
    plain.publish("p", events.content_event("x"))
    settings.CHATSITE_BENCH_TIMESTAMPS = True
    timed = EventPublisher()
    timed.publish("q", events.content_event("y"))
    (_, p_fields), (_, q_fields) = (
        events.bus().entries(events.stream_key("p"))[0],
        events.bus().entries(events.stream_key("q"))[0],
    )
    assert "t" not in events.json.loads(p_fields["data"])
    assert isinstance(events.json.loads(q_fields["data"])["t"], float)


def test_a_reader_that_joins_mid_stream_gets_every_event_once_in_order(settings):
    """Entries published while a reader's backlog is being read are neither lost nor repeated."""
    settings.CHATSITE_EMBEDDED = False
    total = 300

    async def scenario():
        async def write():
            for n in range(total):
                await asyncio.to_thread(publish, "mid", events.content_event(f"{n} "))
                if n % 50 == 0:
                    await asyncio.sleep(0.01)
            await asyncio.to_thread(
                publish, "mid", events.end_event(message_id="mid", finish_reason="stop", prompt_tokens=0,
                                                 completion_tokens=total)
            )  # fmt: skip

        writer = asyncio.create_task(write())
        readers = []
        for _ in range(8):  # readers join at different points of the stream
            await asyncio.sleep(0.02)
            readers.append(asyncio.create_task(collect("mid")))
        await writer
        return await asyncio.gather(*readers)

    for items in asyncio.run(scenario()):
        got = [i for i in items if i is not None]
        assert "".join(events.json.loads(d).get("delta", "") for _, t, d in got) == "".join(
            f"{n} " for n in range(total)
        )
        assert len({entry_id for entry_id, _, _ in got}) == len(got) == total + 1


def test_a_backlog_longer_than_one_read_is_read_whole(settings):
    settings.CHATSITE_EMBEDDED = False
    for n in range(23):
        publish("long", events.content_event(f"{n},"))
    publish("long", events.end_event(message_id="long", finish_reason="stop", prompt_tokens=0, completion_tokens=23))

    async def scenario():
        mux = mux_module._muxes[asyncio.get_running_loop()] = StreamMux(settings.REDIS_URL, count=5)
        return await collect("long"), mux

    items, _mux = asyncio.run(scenario())
    assert "".join(events.json.loads(d).get("delta", "") for _, t, d in items) == "".join(f"{n}," for n in range(23))
    assert items[-1][1] == "end"


def test_streams_are_followed_on_one_pubsub_connection_and_left_when_done(settings):
    settings.CHATSITE_EMBEDDED = False
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    ids = [f"sub{i}" for i in range(20)]
    keys = [events.stream_key(m) for m in ids]

    async def scenario():
        readers = [asyncio.create_task(collect(m)) for m in ids]
        await asyncio.sleep(0.3)
        subscribed = dict(client.pubsub_numsub(*keys))
        # Other test runs may hold pub/sub connections of their own: pick this process's by its address.
        sock = events.stream_mux()._pubsub.connection._writer.get_extra_info("sockname")
        mine = f"{sock[0]}:{sock[1]}"
        pubsub_clients = [c for c in client.client_list() if int(c.get("sub", 0)) > 0 and c["addr"] == mine]
        for m in ids:
            await asyncio.to_thread(
                publish, m, events.end_event(message_id=m, finish_reason="stop", prompt_tokens=0, completion_tokens=0)
            )
        await asyncio.gather(*readers)
        await asyncio.sleep(0.3)  # the UNSUBSCRIBE is confirmed
        return subscribed, pubsub_clients, dict(client.pubsub_numsub(*keys))

    subscribed, pubsub_clients, after = asyncio.run(scenario())
    assert subscribed == dict.fromkeys(keys, 1)
    assert len(pubsub_clients) == 1 and int(pubsub_clients[0]["sub"]) == len(ids)
    assert after == dict.fromkeys(keys, 0)


def test_a_stream_left_and_followed_again_at_once_loses_nothing(settings):
    settings.CHATSITE_EMBEDDED = False

    async def scenario():
        first = asyncio.create_task(collect("again", idle=0.05, pings=1))
        await asyncio.sleep(0.2)
        await first  # leaves: its UNSUBSCRIBE goes out...
        second = asyncio.create_task(collect("again"))  # ...and the stream is followed again before it is confirmed
        await asyncio.sleep(0)
        await asyncio.to_thread(publish, "again", events.content_event("x"))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(
            publish, "again", events.end_event(message_id="again", finish_reason="stop", prompt_tokens=0,
                                               completion_tokens=1)
        )  # fmt: skip
        return await asyncio.wait_for(second, 5)

    items = asyncio.run(scenario())
    assert [t for _, t, _ in items if t] == ["content", "end"]


def test_a_lost_pubsub_connection_reaches_every_reader(settings):
    settings.CHATSITE_EMBEDDED = False
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)

    async def scenario():
        mux = events.stream_mux()
        subs = [mux.subscribe(events.stream_key(f"kill{i}"), "0-0") for i in range(3)]
        await asyncio.sleep(0.3)
        sock = mux._pubsub.connection._writer.get_extra_info("sockname")
        client.client_kill_filter(_type="pubsub", addr=f"{sock[0]}:{sock[1]}")  # this mux's connection only
        outcomes = []
        for sub in subs:
            try:
                await sub.get(5)
                outcomes.append("no error")
            except redis.RedisError as exc:
                outcomes.append(type(exc).__name__)
        return outcomes, dict(mux._subs)

    outcomes, left = asyncio.run(scenario())
    assert outcomes == ["ConnectionError"] * 3
    assert left == {}


def test_the_pubsub_connection_probes_a_silent_peer(settings):
    """A Redis that vanishes without closing the connection is noticed by TCP keepalives within about 25 s."""
    settings.CHATSITE_EMBEDDED = False

    async def scenario():
        mux = events.stream_mux()
        sub = mux.subscribe(events.stream_key("probe"), "0-0")
        await asyncio.sleep(0.2)
        sock = mux._pubsub.connection._writer.get_extra_info("socket")
        options = (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )
        mux.unsubscribe(sub)
        return options

    assert asyncio.run(scenario()) == (1, 10, 5, 3)


def test_a_reader_gets_its_backlog_after_redis_closed_the_pooled_connections(settings):
    """After a Redis restart the pooled connections are dead: the backlog read opens new ones, no error."""
    settings.CHATSITE_EMBEDDED = False
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    publish("stale", events.content_event("a"))
    publish("stale", events.end_event(message_id="stale", finish_reason="stop", prompt_tokens=0, completion_tokens=1))

    async def scenario():
        first = await collect("stale")
        pool = events.async_redis().connection_pool
        for connection in pool._get_free_connections():
            sock = connection._writer.get_extra_info("sockname")
            client.client_kill_filter(addr=f"{sock[0]}:{sock[1]}")
        await asyncio.sleep(0.1)
        return first, await asyncio.wait_for(collect("stale"), 5)

    first, again = asyncio.run(scenario())
    assert [t for _, t, _ in first] == [t for _, t, _ in again] == ["content", "end"]


def test_a_reader_redis_refuses_fails_alone_not_the_readers_batched_with_it(settings, monkeypatch):
    """Issue 13: one reader's XRANGE that Redis refuses failed every reader of its pipeline."""
    settings.CHATSITE_EMBEDDED = False
    for n in range(3):
        publish("batched", events.content_event(f"{n} "))
    key = events.stream_key("batched")
    pipelines = []
    execute = redis.asyncio.client.Pipeline.execute

    async def counted(self, *args, **kwargs):
        pipelines.append(len(self.command_stack))
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", counted)

    async def scenario():
        mux = events.stream_mux()
        # Within Redis's limits, but XRANGE refuses an exclusive start at the largest id.
        bad = mux.subscribe(key, f"{MAX_ID_PART}-{MAX_ID_PART}")
        good = [mux.subscribe(key, "0-0") for _ in range(5)]
        got = await asyncio.gather(*(g.get(5) for g in good))
        with pytest.raises(redis.ResponseError, match="invalid start ID"):
            await bad.get(5)
        for sub in (bad, *good):
            mux.unsubscribe(sub)
        return got

    got = asyncio.run(scenario())
    assert 6 in pipelines, f"the six backlog reads were not batched in one pipeline: {pipelines}"
    for entries in got:
        assert [events.json.loads(f["data"])["delta"] for _, f in entries] == ["0 ", "1 ", "2 "]


def test_a_relay_redis_refuses_ends_at_once_and_the_relays_beside_it_are_not_touched(settings, caplog):
    from chats.streaming import relay

    settings.CHATSITE_EMBEDDED = False
    publish("alice", events.content_event("hello"))
    publish("alice", events.end_event(message_id="alice", finish_reason="stop", prompt_tokens=1, completion_tokens=1))

    async def read(message_id: str, last_id: str) -> list[bytes]:
        return [chunk async for chunk in relay(message_id, last_id)]

    async def scenario():
        return await asyncio.gather(read("alice", "0-0"), read("alice", f"{MAX_ID_PART}-{MAX_ID_PART}"))

    with caplog.at_level("INFO", logger="chats"):
        alice, hostile = asyncio.run(asyncio.wait_for(scenario(), 10))
    body = b"".join(alice).decode()
    assert '"delta":"hello"' in body and '"type":"end"' in body
    assert hostile[-1].startswith(b"data: ") and b'"error":"stream_read_failed"' in hostile[-1]
    assert b'"retryable":false' in hostile[-1]
    relay_logs = [r.getMessage() for r in caplog.records if r.name == "chats.streaming"]
    assert len(relay_logs) == 1 and "refused" in relay_logs[0], relay_logs  # once, and nothing about alice


def test_a_relay_retrying_redis_stops_when_its_client_leaves_and_logs_the_outage_once(settings, caplog, monkeypatch):
    from chats import streaming

    settings.CHATSITE_EMBEDDED = False
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.REDIS_URL = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens there
    attempts = []
    read = streaming.read_event_batches

    def counted(*args, **kwargs):
        attempts.append(asyncio.get_running_loop().time())
        return read(*args, **kwargs)

    monkeypatch.setattr(streaming, "read_event_batches", counted)

    async def scenario():
        stream = streaming.relay("gone", "0-0")
        assert await anext(stream) == streaming.CONNECTED
        reader = asyncio.create_task(anext(stream))
        await asyncio.sleep(1.8)  # attempts at about 0, 0.5 and 1.5 s
        # The client leaves: Django's ASGI handler cancels the response's task on http.disconnect.
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await stream.aclose()
        before = len(attempts)
        await asyncio.sleep(2.5)  # the next attempt would have come by now
        return before

    with caplog.at_level("INFO", logger="chats"):
        before = asyncio.run(scenario())
    assert before >= 3 and len(attempts) == before, attempts
    warnings = [(r.name, r.getMessage()) for r in caplog.records if r.levelname == "WARNING"]
    # One warning from the relay and one from the shared reader, for the whole outage.
    assert [name for name, _ in warnings] == ["chats.mux", "chats.streaming"], warnings
    assert warnings[1][1].startswith("relay of gone lost Redis"), warnings
