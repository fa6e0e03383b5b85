"""The multiplexed stream reader (`chats.events.StreamMux`) behind `read_events`, on real Redis.

Each test runs its own event loop (`asyncio.run`), so each gets its own reader; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis

from chats import events
from chats.events import EventPublisher, StreamMux, read_events

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
        mux = events._muxes[asyncio.get_running_loop()] = StreamMux(settings.REDIS_URL, count=5)
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
