"""The caption bus: one contract suite run against MemoryBus and RedisBus, then Redis-only tests
(two server instances sharing one Redis, and a Redis crash/restart mid-stream)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.bus import FROM_START, Bus, Entry, MemoryBus, RedisBus, SlowSubscriber, Subscription, id_key

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MakeBus = Callable[..., Awaitable[Bus]]


def ev(i: int, stream: str = "s") -> dict:
    return {"type": "caption.final", "stream": stream, "seq": i, "segment": i // 3, "text": f"t{i}",
            "start": i * 1.0, "end": i + 0.5}


async def take(sub: Subscription, n: int, timeout: float = 5.0) -> list[Entry]:
    async with asyncio.timeout(timeout):
        return [await anext(sub) for _ in range(n)]


def assert_increasing(ids: list[str]) -> None:
    keys = [id_key(i) for i in ids]
    assert keys == sorted(set(keys)), ids


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", "redis"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    """Factory of started buses, closed at teardown; Redis ones get a private key prefix."""
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    buses: list[Bus] = []

    async def make(**kw: object) -> Bus:
        bus: Bus = RedisBus(url, prefix=prefix, **kw) if url else MemoryBus(**kw)  # type: ignore[arg-type]
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


# -- contract: both implementations ---------------------------------------------------------

async def test_publish_then_subscribe_in_order(make_bus: MakeBus) -> None:
    bus = await make_bus()
    async with bus.subscribe("s") as sub:
        ids = [await bus.publish("s", ev(i)) for i in range(20)]
        got = await take(sub, 20)
    assert [e for _, e in got] == [ev(i) for i in range(20)]
    assert [i for i, _ in got] == ids
    assert_increasing(ids)


async def test_concurrent_publishes_keep_call_order(make_bus: MakeBus) -> None:
    bus = await make_bus()
    async with bus.subscribe("s") as sub:
        ids = await asyncio.gather(*(bus.publish("s", ev(i)) for i in range(50)))
        got = await take(sub, 50)
    assert [e["seq"] for _, e in got] == list(range(50))
    assert [i for i, _ in got] == ids


async def test_resume_id_from_the_future_means_now(make_bus: MakeBus) -> None:
    bus = await make_bus()  # e.g. a Last-Event-ID minted before a restart by a skewed clock
    await bus.publish("s", ev(0))
    async with bus.subscribe("s", after="99999999999999-0") as sub:
        new = await bus.publish("s", ev(1))
        assert await take(sub, 1) == [(new, ev(1))]


async def test_events_are_json_round_tripped(make_bus: MakeBus) -> None:
    bus = await make_bus()
    async with bus.subscribe("s") as sub:
        await bus.publish("s", {"type": "x", "words": ("a", "b")})
        [(_, got)] = await take(sub, 1)
    assert got == {"type": "x", "words": ["a", "b"]}
    with pytest.raises(TypeError):
        await bus.publish("s", {"bad": object()})


async def test_many_subscribers_same_events_and_streams_isolated(make_bus: MakeBus) -> None:
    bus = await make_bus()
    async with bus.subscribe("a") as s1, bus.subscribe("a") as s2, bus.subscribe("a") as s3, \
            bus.subscribe("b") as other:
        ids = [await bus.publish("a", ev(i, "a")) for i in range(10)]
        b_id = await bus.publish("b", ev(99, "b"))
        results = [await take(s, 10) for s in (s1, s2, s3)]
        assert await take(other, 1) == [(b_id, ev(99, "b"))]
    for got in results:
        assert got == list(zip(ids, [ev(i, "a") for i in range(10)]))


async def test_subscribe_none_gets_only_new_events(make_bus: MakeBus) -> None:
    bus = await make_bus()
    for i in range(3):
        await bus.publish("s", ev(i))
    async with bus.subscribe("s", after=None) as sub:
        new = await bus.publish("s", ev(3))
        assert await take(sub, 1) == [(new, ev(3))]


async def test_resume_after_id(make_bus: MakeBus) -> None:
    bus = await make_bus()
    ids = [await bus.publish("s", ev(i)) for i in range(10)]
    async with bus.subscribe("s", after=ids[4]) as sub, bus.subscribe("s", after=FROM_START) as everything:
        ids += [await bus.publish("s", ev(i)) for i in range(10, 15)]
        got = await take(sub, 10)
        assert [e["seq"] for _, e in got] == list(range(5, 15))
        assert [i for i, _ in got] == ids[5:]
        assert [i for i, _ in await take(everything, 15)] == ids
    assert [i for i, _ in await bus.history("s", after=ids[11])] == ids[12:]
    assert [i for i, _ in await bus.history("s")] == ids


async def test_resume_while_publishing_has_no_gap_or_duplicate(make_bus: MakeBus) -> None:
    bus = await make_bus()
    ids: list[str] = []

    async def publisher() -> None:
        for i in range(300):
            ids.append(await bus.publish("s", ev(i)))
            await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    await wait_for(lambda: len(ids) >= 50)
    async with bus.subscribe("s", after=ids[9]) as sub:  # joins mid-flight: replay, then live
        got = await take(sub, 290)
    await task
    assert [e["seq"] for _, e in got] == list(range(10, 300))
    assert [i for i, _ in got] == ids[10:]


async def test_history_is_capped(make_bus: MakeBus) -> None:
    bus = await make_bus(history_len=5)
    ids = [await bus.publish("s", ev(i)) for i in range(12)]
    assert [i for i, _ in await bus.history("s", FROM_START)] == ids[-5:]
    assert [e["seq"] for _, e in await bus.history("s")] == list(range(7, 12))
    assert [i for i, _ in await bus.history("s", after=ids[9])] == ids[10:]
    assert await bus.history("never-published") == []
    async with bus.subscribe("s", after=FROM_START) as sub:
        last = await bus.publish("s", ev(12))
        assert [i for i, _ in await take(sub, 6)] == ids[-5:] + [last]


async def test_history_expires_after_its_streams_last_event(make_bus: MakeBus) -> None:
    bus = await make_bus(stream_ttl_s=0.5)
    await bus.publish("old", ev(0))
    await asyncio.sleep(0.3)
    await bus.publish("new", ev(0))
    assert len(await bus.history("old")) == 1
    await asyncio.sleep(0.35)  # "old" is 0.65 s past its event, "new" 0.35 s
    assert await bus.history("old") == [] and len(await bus.history("new")) == 1


async def test_malformed_resume_id_is_rejected(make_bus: MakeBus) -> None:
    bus = await make_bus()
    for bad in ("", "abc", "1-2-3", "-1", "1-", " 1", "18446744073709551616-0", "1-18446744073709551616"):
        with pytest.raises(ValueError):
            bus.subscribe("s", after=bad)
    with pytest.raises(ValueError):
        await bus.history("s", after="nope")


async def test_registry_ttl_heartbeat_and_unregister(make_bus: MakeBus) -> None:
    bus = await make_bus(registry_ttl_s=0.3)
    await bus.register("a", {"title": "A", "lang": "en"})
    await bus.register("b", {"title": "B"})
    await bus.register("c", {"title": "C"})
    assert await bus.live_streams() == {"a": {"title": "A", "lang": "en"}, "b": {"title": "B"},
                                        "c": {"title": "C"}}
    await bus.unregister("c")
    await bus.unregister("not-there")
    for _ in range(6):  # 0.6 s: "a" keeps beating, "b" goes silent
        await bus.heartbeat("a")
        await asyncio.sleep(0.1)
    assert await bus.live_streams() == {"a": {"title": "A", "lang": "en"}}
    await bus.heartbeat("b")  # a late heartbeat revives a registered stream
    assert list(await bus.live_streams()) == ["a", "b"]
    await bus.unregister("b")
    await bus.heartbeat("b")  # but not an unregistered one
    assert list(await bus.live_streams()) == ["a"]


async def test_ping(make_bus: MakeBus) -> None:
    assert await (await make_bus()).ping() is True


async def test_slow_subscriber_is_cut_off_without_blocking_others(make_bus: MakeBus) -> None:
    bus = await make_bus(queue_max=4)
    async with bus.subscribe("s") as slow, bus.subscribe("s") as fast:
        fast_got = asyncio.create_task(take(fast, 12))
        async with asyncio.timeout(5):  # publish never waits for the slow one
            ids = []
            for i in range(12):
                ids.append(await bus.publish("s", ev(i)))
                await asyncio.sleep(0.005)  # the fast one keeps up
        assert [i for i, _ in await fast_got] == ids
        assert [i for i, _ in await take(slow, 4)] == ids[:4]  # what fitted, intact, then:
        with pytest.raises(SlowSubscriber):
            await take(slow, 1)
        later = await bus.publish("s", ev(12))
        assert await take(fast, 1) == [(later, ev(12))]


async def test_close_ends_subscriptions(make_bus: MakeBus) -> None:
    bus = await make_bus()
    async with bus.subscribe("s") as sub:
        await bus.publish("s", ev(0))
        assert [e for _, e in await take(sub, 1)] == [ev(0)]
        await bus.close()
        assert [entry async for entry in sub] == []
    await bus.close()  # idempotent


# -- MemoryBus only -----------------------------------------------------------------------------

async def test_memory_bus_keeps_a_bounded_number_of_histories_never_a_watched_one() -> None:
    bus = MemoryBus(history_len=10, max_streams=5)
    async with bus.subscribe("watched", after=FROM_START) as sub:
        await bus.publish("watched", ev(0))
        for i in range(1000):  # streams opened and closed one after another
            await bus.publish(f"s{i}", ev(i))
        kept = [i for i in range(1000) if await bus.history(f"s{i}")]
        assert kept == [996, 997, 998, 999]
        assert [e for _, e in await bus.history("watched")] == [ev(0)]
        assert [e for _, e in await take(sub, 1)] == [ev(0)]


# -- Redis only ---------------------------------------------------------------------------------

@pytest.fixture
async def redis_buses() -> AsyncIterator[Callable[..., Awaitable[RedisBus]]]:
    buses: list[RedisBus] = []

    async def make(url: str, **kw: object) -> RedisBus:
        bus = RedisBus(url, **kw)  # type: ignore[arg-type]
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


async def test_two_servers_share_one_redis(redis_server, redis_buses) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    a = await redis_buses(redis_server.url, prefix=prefix)
    b = await redis_buses(redis_server.url, prefix=prefix)
    async with b.subscribe("s") as on_b, a.subscribe("s") as on_a:
        ids = [await a.publish("s", ev(i)) for i in range(10)]
        assert [i for i, _ in await take(on_b, 10)] == ids
        assert [i for i, _ in await take(on_a, 10)] == ids
    assert await b.history("s") == await a.history("s")
    await a.register("s", {"title": "from a"})
    assert await b.live_streams() == {"s": {"title": "from a"}}


async def test_unreachable_redis_never_raises(dead_redis_url, redis_buses) -> None:
    bus = await redis_buses(dead_redis_url)
    assert await bus.ping() is False
    assert await bus.publish("s", ev(0)) == ""
    assert bus.buffered == 1
    assert await bus.history("s") == []
    await bus.register("s", {})
    await bus.heartbeat("s")
    assert await bus.live_streams() == {}
    await bus.unregister("s")


async def test_redis_crash_mid_stream_loses_and_duplicates_nothing(private_redis, redis_buses) -> None:
    publisher = await redis_buses(private_redis.url, registry_ttl_s=5)
    viewer_server = await redis_buses(private_redis.url)
    got: list[Entry] = []

    async def viewer() -> None:
        async with viewer_server.subscribe("s") as sub:
            async for entry in sub:
                got.append(entry)

    task = asyncio.create_task(viewer())
    await wait_for(lambda: viewer_server._chans.get("s") is not None and viewer_server._chans["s"].ready)
    await publisher.register("s", {"title": "live"})
    for i in range(10):
        assert await publisher.publish("s", ev(i)) != ""
    await wait_for(lambda: len(got) == 10)

    private_redis.kill()
    for i in range(10, 20):
        assert await publisher.publish("s", ev(i)) == ""  # buffered, id assigned on flush
        await asyncio.sleep(0.02)
    assert publisher.buffered == 10
    assert not await viewer_server.ping()

    private_redis.start()  # same port, empty dataset
    for i in range(20, 30):
        await publisher.publish("s", ev(i))
        await asyncio.sleep(0.02)
    await wait_for(lambda: len(got) >= 30)
    await asyncio.sleep(0.2)  # would surface a late duplicate
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert [e["seq"] for _, e in got] == list(range(30))
    assert_increasing([i for i, _ in got])
    assert publisher.buffered == 0 and publisher.dropped == 0
    await publisher.heartbeat("s")  # the registry is re-announced into the fresh Redis
    assert await viewer_server.live_streams() == {"s": {"title": "live"}}


async def test_outage_buffer_drops_oldest_when_full(private_redis, redis_buses) -> None:
    publisher = await redis_buses(private_redis.url, buffer_max=5)
    viewer_server = await redis_buses(private_redis.url)
    async with viewer_server.subscribe("s") as sub:
        first = await publisher.publish("s", ev(0))
        assert await take(sub, 1) == [(first, ev(0))]
        private_redis.kill()
        for i in range(1, 11):
            await publisher.publish("s", ev(i))
        assert (publisher.buffered, publisher.dropped) == (5, 5)
        private_redis.start()
        got = await take(sub, 5, timeout=10)
    assert [e["seq"] for _, e in got] == list(range(6, 11))
    assert_increasing([first] + [i for i, _ in got])
