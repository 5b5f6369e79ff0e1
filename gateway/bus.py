"""The caption bus: fans caption events out to viewers and keeps a capped history for resume.

One interface, two implementations:

* `MemoryBus` - in-process, for a single server without Redis.
* `RedisBus`  - a Redis pub/sub channel per caption stream for live fan-out across server
  instances, plus a capped Redis Stream per caption stream for history and resume.

Event ids are "<ms>-<n>" strings: the Redis Stream entry id, and MemoryBus mints the same
shape (wall-clock ms, then a counter within the ms, monotonic per stream). Because ids are
time based they stay ordered across a server or Redis restart, so a `Last-Event-ID` from
before the restart still resumes correctly. Compare ids with `id_key()`, never as strings
("9-0" < "10-0").

History is bounded in length (`history_len` events per stream) and in time (`stream_ttl_s` after a stream's last
event, Redis's key expiry); MemoryBus also keeps at most `max_streams` streams' histories, dropping the least
recently published first (never a stream someone is watching).

Resume semantics of `subscribe(stream, after)`:
    after=None  -> only events published from now on;
    after="0"   -> all retained history (the newest `history_len` events), then live;
    after=<id>  -> retained events newer than <id>, then live.
Replay and live are stitched on the id, so there is no gap and no duplicate between them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

__all__ = ["FROM_START", "Bus", "Entry", "Event", "MemoryBus", "RedisBus", "SlowSubscriber",
           "Subscription", "id_key"]

log = logging.getLogger("livecaptions.bus")

Event = dict[str, Any]
Entry = tuple[str, Event]
IdKey = tuple[int, int]
T = TypeVar("T")

FROM_START = "0"          # `after` value that replays all retained history
_BACKOFF_S = (0.1, 2.0)   # reconnect backoff: first delay, cap
_ATTACH_WAIT_S = 2.0      # how long entering a subscription waits for Redis before going on
_ID_RE = re.compile(r"(\d+)(?:-(\d+))?", re.ASCII)


class SlowSubscriber(Exception):
    """Raised by a subscription whose consumer fell more than `queue_max` events behind live.

    Everything delivered before it is intact and in order, so the caller can close the
    connection (e.g. WebSocket 1013 "try again later") and the client can resume from its
    last id.
    """


def id_key(event_id: str) -> IdKey:
    """Sort key of an event id ("<ms>-<n>" or "<ms>"); ValueError if malformed or beyond Redis's 64-bit parts."""
    m = _ID_RE.fullmatch(event_id)
    if m is None:
        raise ValueError(f"malformed event id {event_id!r}")
    key = int(m[1]), int(m[2] or 0)
    if max(key) >= 2 ** 64:
        raise ValueError(f"event id {event_id!r} is out of range")
    return key


class Subscription:
    """Async iterator of (id, event): replay after `after`, then live events.

    Use `async with bus.subscribe(...) as sub:` so the subscription is live before your code
    goes on (iterating without it attaches lazily on the first `__anext__`).
    """

    def __init__(self, bus: Bus, stream: str, after: str | None, queue_max: int) -> None:
        self.stream = stream
        self._bus = bus
        self._last: IdKey | None = None if after is None else id_key(after)
        self._queue: deque[Entry] = deque()
        self._queue_max = queue_max
        self._cap = queue_max
        self._pending: list[Entry] = []   # live events held back while (re)syncing
        self._synced = asyncio.Event()
        self._epoch = 0                   # bumped on desync, so a stale sync is discarded
        self._wake = asyncio.Event()
        self._opened = self._closed = self._overflow = False

    async def __aenter__(self) -> Subscription:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Entry:
        await self._open()
        while not self._queue:
            if self._overflow:
                raise SlowSubscriber(f"subscriber of {self.stream!r} fell {self._queue_max} events behind")
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._queue.popleft()

    async def aclose(self) -> None:
        self._queue.clear()
        self._end()
        self._bus._forget(self)

    async def _open(self) -> None:
        if not self._opened:
            self._opened = True
            await self._bus._attach(self)

    def _end(self) -> None:
        self._closed = True
        self._wake.set()

    # The methods below are called by the bus and never block. False = drop me.
    def _push(self, eid: str, event: Event) -> bool:
        if self._closed or self._overflow:
            return False
        if self._synced.is_set():
            return self._offer(eid, event)
        self._pending.append((eid, event))
        return len(self._pending) <= self._queue_max or self._overflowed()

    def _offer(self, eid: str, event: Event) -> bool:
        key = id_key(eid)
        if self._last is not None and key <= self._last:
            return True  # already delivered: replay and live overlap here
        if len(self._queue) >= self._cap:
            return self._overflowed()
        self._last = key
        self._queue.append((eid, event))
        self._wake.set()
        return True

    def _overflowed(self) -> bool:
        self._overflow = True
        self._wake.set()
        return False

    def _replay(self, entries: list[Entry]) -> bool:
        if self._closed:
            return False
        # History is bounded by history_len, so replay may exceed queue_max; live may not.
        self._cap = len(self._queue) + len(entries) + self._queue_max
        backlog, self._pending = entries + self._pending, []
        self._synced.set()
        return all(self._offer(eid, ev) for eid, ev in backlog)

    def _desync(self) -> None:
        self._epoch += 1
        self._pending = []
        self._synced.clear()


class Bus(ABC):
    """Interface shared by MemoryBus and RedisBus. Start/close it from the app lifespan."""

    def __init__(self, history_len: int, registry_ttl_s: float, queue_max: int) -> None:
        self.history_len = history_len
        self.registry_ttl_s = registry_ttl_s
        self.queue_max = queue_max

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        pass

    @abstractmethod
    async def close(self) -> None:
        """Release resources; open subscriptions end (StopAsyncIteration). Idempotent."""

    @abstractmethod
    async def publish(self, stream: str, event: Event) -> str:
        """Publish a JSON-serialisable event; returns its id ("" if buffered during an outage)."""

    def subscribe(self, stream: str, after: str | None = None) -> Subscription:
        """Subscribe to `stream` (see module doc for `after`); ValueError if `after` is malformed."""
        return Subscription(self, stream, after, self.queue_max)

    @abstractmethod
    async def history(self, stream: str, after: str | None = None) -> list[Entry]:
        """Retained events newer than `after` (all retained if None), oldest first."""

    @abstractmethod
    async def register(self, stream: str, info: dict[str, Any]) -> None:
        """Announce a live stream: listed while its last register/heartbeat is within registry_ttl_s
        (a late heartbeat revives it, which also re-announces it into a restarted Redis)."""

    @abstractmethod
    async def heartbeat(self, stream: str) -> None: ...

    @abstractmethod
    async def unregister(self, stream: str) -> None: ...

    @abstractmethod
    async def live_streams(self) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the backend is reachable (for /readyz)."""

    @abstractmethod
    async def _attach(self, sub: Subscription) -> None: ...

    @abstractmethod
    def _forget(self, sub: Subscription) -> None: ...


@dataclass(eq=False)
class _MemStream:
    history: deque[tuple[IdKey, str, Event]]
    last: IdKey = (0, 0)
    subs: set[Subscription] = field(default_factory=set)
    published: float = 0.0  # time.monotonic() of its last event


class MemoryBus(Bus):
    """In-process bus for a single server: histories expire as RedisBus's do, and at most `max_streams` are kept."""

    def __init__(self, history_len: int = 1000, *, registry_ttl_s: float = 15.0, queue_max: int = 1000,
                 stream_ttl_s: float = 86_400.0, max_streams: int = 1000) -> None:
        super().__init__(history_len, registry_ttl_s, queue_max)
        self.stream_ttl_s, self.max_streams = stream_ttl_s, max_streams
        self._streams: dict[str, _MemStream] = {}  # least recently published first
        self._registry: dict[str, tuple[dict[str, Any], float]] = {}

    def _stream(self, stream: str) -> _MemStream:
        if stream not in self._streams:
            self._streams[stream] = _MemStream(deque(maxlen=self.history_len))
        return self._streams[stream]

    def _expire(self) -> None:
        """Drop the oldest histories past their TTL or beyond max_streams, unless watched or live."""
        now, gone = time.monotonic(), []
        for name, st in self._streams.items():
            if len(self._streams) - len(gone) <= self.max_streams and now - st.published <= self.stream_ttl_s:
                break  # the rest were published later
            if not st.subs and name not in self._registry:
                gone.append(name)
        for name in gone:
            del self._streams[name]

    async def close(self) -> None:
        for st in self._streams.values():
            for sub in st.subs:
                sub._end()
            st.subs.clear()

    async def publish(self, stream: str, event: Event) -> str:
        event = json.loads(json.dumps(event))  # same isolation and types as over Redis
        st = self._stream(stream)
        self._streams[stream] = self._streams.pop(stream)  # the most recently published last
        st.published = time.monotonic()
        self._expire()
        ms = max(int(time.time() * 1000), st.last[0])
        st.last = (ms, st.last[1] + 1 if ms == st.last[0] else 0)
        eid = f"{st.last[0]}-{st.last[1]}"
        st.history.append((st.last, eid, event))
        for sub in list(st.subs):
            if not sub._push(eid, event):
                st.subs.discard(sub)
        return eid

    def _after(self, st: _MemStream, after: IdKey) -> list[Entry]:
        return [(eid, ev) for key, eid, ev in st.history if key > after]

    async def history(self, stream: str, after: str | None = None) -> list[Entry]:
        key = id_key(after or FROM_START)
        self._expire()
        st = self._streams.get(stream)
        return self._after(st, key) if st else []

    async def _attach(self, sub: Subscription) -> None:
        # Synchronous from here on: no event can slip between replay and going live.
        st = self._stream(sub.stream)
        sub._last = st.last if sub._last is None else min(sub._last, st.last)
        st.subs.add(sub)
        if not sub._replay(self._after(st, sub._last)):
            st.subs.discard(sub)

    def _forget(self, sub: Subscription) -> None:
        st = self._streams.get(sub.stream)
        if st is not None:
            st.subs.discard(sub)
            if not st.subs and not st.history:  # don't keep state for never-published names
                del self._streams[sub.stream]

    async def register(self, stream: str, info: dict[str, Any]) -> None:
        self._registry[stream] = (dict(info), time.monotonic())

    async def heartbeat(self, stream: str) -> None:
        if stream in self._registry:
            self._registry[stream] = (self._registry[stream][0], time.monotonic())

    async def unregister(self, stream: str) -> None:
        self._registry.pop(stream, None)

    async def live_streams(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {s: dict(info) for s, (info, t) in self._registry.items() if now - t <= self.registry_ttl_s}

    async def ping(self) -> bool:
        return True


# XADD and PUBLISH in one atomic round trip: the live message carries the entry id, so a
# subscriber can stitch replay (XREVRANGE) and live (pub/sub) on it.
_PUBLISH_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
"""


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them to end. Cancels again while they run: on Python 3.11
    asyncio.wait_for (used inside redis-py) can swallow a cancellation."""
    while pending := [t for t in tasks if not t.done()]:
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            log.error("bus task failed", exc_info=t.exception())


class _Backoff:
    """Capped exponential backoff with jitter, so a fleet does not reconnect in lockstep."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    async def sleep(self, exc: BaseException) -> None:
        self.failures += 1
        delay = min(_BACKOFF_S[1], _BACKOFF_S[0] * 2 ** min(self.failures - 1, 16))
        (log.warning if self.failures == 1 else log.debug)(
            "%s: Redis unavailable (%r); retrying with backoff", self.what, exc)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def ok(self) -> None:
        if self.failures:
            log.info("%s: Redis reachable again after %d failed attempts", self.what, self.failures)
        self.failures = 0


@dataclass(eq=False)
class _Chan:
    subs: set[Subscription] = field(default_factory=set)
    ready: bool = False  # SUBSCRIBE confirmed on the current pub/sub connection


class RedisBus(Bus):
    """Redis-backed bus shared by many server instances.

    Each instance holds one pub/sub connection (not one per viewer) and fans messages out to
    its local subscriptions. During a Redis outage, publishes are buffered in order (at most
    `buffer_max`; the oldest are dropped and counted in `dropped`) and flushed once Redis is
    back; subscriptions reconnect and catch up from their last id. Redis errors are logged,
    never raised, except by `publish` for a non-JSON-serialisable event.
    """

    def __init__(self, url: str = "redis://localhost:6379/0", *, history_len: int = 1000,
                 registry_ttl_s: float = 15.0, buffer_max: int = 10_000, queue_max: int = 1000,
                 prefix: str = "livecaptions:", stream_ttl_s: float = 86_400.0) -> None:
        super().__init__(history_len, registry_ttl_s, queue_max)
        self.url, self.buffer_max, self.prefix, self.stream_ttl_s = url, buffer_max, prefix, stream_ttl_s
        self.dropped = 0  # events dropped because the outage buffer was full
        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        self._chans: dict[str, _Chan] = {}
        self._registered: dict[str, dict[str, Any]] = {}  # ours, re-announced after a Redis restart
        self._buffer: deque[tuple[str, str]] = deque()
        self._lock = asyncio.Lock()  # serialises XADDs so ids follow publish order
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._script: Any = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _key(self, kind: str, stream: str = "") -> str:
        return f"{self.prefix}{kind}:{stream}"

    @property
    def _r(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("RedisBus is not started")
        return self._redis

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _idem(call: Callable[[], Awaitable[T]]) -> T:
        """Run idempotent commands, retrying once: after a Redis restart each pooled connection
        is stale and fails on first use. Publishing is not retried so (a lost reply would
        duplicate the event); it is buffered instead."""
        try:
            return await call()
        except RedisConnectionError:
            return await call()

    async def start(self) -> None:
        # No retries inside redis-py: we buffer and back off ourselves, and must fail fast.
        self._redis = Redis.from_url(self.url, decode_responses=True, retry=Retry(NoBackoff(), 0),
                                     socket_connect_timeout=2, socket_timeout=5, socket_keepalive=True)
        self._script = self._redis.register_script(_PUBLISH_LUA)
        self._spawn(self._read_loop())

    async def close(self) -> None:
        if self._redis is None:
            return
        if self._flusher is not None:
            await _cancel([self._flusher])
        if self._buffer:  # last chance, without backoff
            try:
                async with asyncio.timeout(1.0):
                    while self._buffer:
                        await self._xadd(*self._buffer[0])
                        self._buffer.popleft()
            except (RedisError, OSError, TimeoutError):
                log.warning("closing with %d unflushed events", len(self._buffer))
        await _cancel(list(self._tasks))
        for chan in self._chans.values():
            for sub in chan.subs:
                sub._end()
        self._chans.clear()
        await self._redis.aclose()
        self._redis = None

    # -- publishing ---------------------------------------------------------------------
    async def _xadd(self, stream: str, data: str) -> str:
        return await self._script(keys=[self._key("events", stream), self._key("live", stream)],
                                  args=[self.history_len, data, int(self.stream_ttl_s * 1000)],
                                  client=self._r)

    async def publish(self, stream: str, event: Event) -> str:
        data = json.dumps(event, separators=(",", ":"))
        if not self._buffer:
            async with self._lock:
                if not self._buffer:
                    try:
                        return await self._xadd(stream, data)
                    except (RedisError, OSError) as exc:
                        log.debug("publish to %s failed (%r); buffering", stream, exc)
        # Outage: queue behind what is already buffered so order is kept.
        if len(self._buffer) >= self.buffer_max:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # log at 1, 2, 4, 8... drops
                log.warning("Redis outage buffer full: %d events dropped so far", self.dropped)
        self._buffer.append((stream, data))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        return ""

    async def _flush_loop(self) -> None:
        backoff, sent = _Backoff("publish"), 0
        while self._buffer:
            item, error = self._buffer[0], None
            async with self._lock:
                try:
                    await self._xadd(*item)
                except (RedisError, OSError) as exc:
                    error = exc
                else:
                    sent += 1
                    if self._buffer and self._buffer[0] is item:  # not dropped meanwhile
                        self._buffer.popleft()
            if error is not None:
                await backoff.sleep(error)
        backoff.ok()
        log.info("flushed %d buffered events (%d dropped in total)", sent, self.dropped)

    # -- history ------------------------------------------------------------------------
    async def _fetch(self, stream: str, after: IdKey) -> list[Entry]:
        rows = await self._idem(lambda: self._r.xrevrange(
            self._key("events", stream), "+", f"({after[0]}-{after[1]}", count=self.history_len))
        return [(eid, json.loads(fields["e"])) for eid, fields in reversed(rows)]

    async def history(self, stream: str, after: str | None = None) -> list[Entry]:
        key = id_key(after or FROM_START)
        try:
            return await self._fetch(stream, key)
        except (RedisError, OSError) as exc:
            log.warning("history of %s unavailable: %r", stream, exc)
            return []

    # -- subscribing --------------------------------------------------------------------
    async def _attach(self, sub: Subscription) -> None:
        try:  # an id newer than the newest entry (e.g. from before a Redis restart) means "now"
            rows = await self._idem(lambda: self._r.xrevrange(self._key("events", sub.stream), count=1))
            latest = id_key(rows[0][0]) if rows else (0, 0)
            sub._last = latest if sub._last is None else min(sub._last, latest)
        except (RedisError, OSError) as exc:
            log.debug("attach to %s: %r", sub.stream, exc)
        chan = self._chans.get(sub.stream)
        if chan is None:
            chan = self._chans[sub.stream] = _Chan({sub})
            await self._send("SUBSCRIBE", self._key("live", sub.stream))  # confirmation syncs
        else:
            chan.subs.add(sub)
            if chan.ready:
                self._spawn(self._sync(sub.stream, [sub]))
        try:
            async with asyncio.timeout(_ATTACH_WAIT_S):
                await sub._synced.wait()
        except TimeoutError:
            log.info("subscription to %s not live yet; it catches up once Redis is back", sub.stream)

    def _forget(self, sub: Subscription) -> None:
        chan = self._chans.get(sub.stream)
        if chan is not None and sub in chan.subs:
            chan.subs.discard(sub)
            if not chan.subs:
                del self._chans[sub.stream]
                self._spawn(self._send("UNSUBSCRIBE", self._key("live", sub.stream)))

    async def _sync(self, stream: str, subs: list[Subscription]) -> None:
        """Replay what `subs` missed (new subscription or reconnect), then let live through."""
        epochs = [sub._epoch for sub in subs]
        backoff = _Backoff(f"catch-up of {stream}")
        while True:
            lasts = [sub._last for sub in subs if sub._last is not None]
            try:  # one read serves every local viewer of the stream
                entries = await self._fetch(stream, min(lasts)) if lasts else []
                break
            except (RedisError, OSError) as exc:
                if all(sub._epoch != epoch or sub._closed for sub, epoch in zip(subs, epochs)):
                    return  # superseded by a reconnect's sync, or closed
                await backoff.sleep(exc)
        backoff.ok()
        keyed = [(id_key(eid), eid, ev) for eid, ev in entries]
        for sub, epoch in zip(subs, epochs):
            if sub._epoch != epoch:
                continue  # desynced meanwhile (reconnect): a newer sync is on its way
            last = sub._last
            if not sub._replay([(eid, ev) for key, eid, ev in keyed if last is not None and key > last]):
                self._forget(sub)

    async def _send(self, *args: str) -> None:
        # Written straight to the reader's live connection: redis-py's PubSub would reconnect
        # a dead one on its own, racing the reader's reconnect loop.
        ps = self._pubsub
        if ps is None or ps.connection is None or not ps.connection.is_connected:
            return  # the reader subscribes every channel when it (re)connects
        try:
            await ps.connection.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            log.debug("%s failed: %r", args[0], exc)

    async def _read_loop(self) -> None:
        backoff = _Backoff("subscribe")
        while True:
            ps = self._r.pubsub()
            try:
                await ps.subscribe(self._key("bus"))  # keeps the connection up with no viewers
                self._pubsub = ps
                if self._chans:
                    await self._send("SUBSCRIBE", *(self._key("live", s) for s in self._chans))
                backoff.ok()
                while True:
                    msg = await ps.get_message(timeout=None)
                    if msg is not None:
                        self._on_message(msg)
            except (RedisError, OSError) as exc:
                error: BaseException = exc
            except Exception as exc:  # a bug here must not silently end live delivery
                log.exception("pub/sub reader failed")
                error = exc
            finally:
                self._pubsub = None
                for chan in self._chans.values():
                    chan.ready = False
                    for sub in chan.subs:
                        sub._desync()
                await ps.aclose()
            await backoff.sleep(error)

    def _on_message(self, msg: dict[str, Any]) -> None:
        live = self._key("live")
        if not isinstance(msg.get("channel"), str) or not msg["channel"].startswith(live):
            return
        stream = msg["channel"][len(live):]
        chan = self._chans.get(stream)
        if chan is None:
            return
        if msg["type"] == "message":
            eid, _, data = msg["data"].partition(" ")
            try:
                id_key(eid)
                event = json.loads(data)
            except ValueError:
                log.warning("ignoring malformed message on %s", msg["channel"])
                return
            for sub in list(chan.subs):
                if not sub._push(eid, event):
                    self._forget(sub)
        elif msg["type"] == "subscribe":
            # Live messages flow from here on: hold them back while replaying what was missed.
            chan.ready = True
            for sub in chan.subs:
                sub._desync()
            self._spawn(self._sync(stream, list(chan.subs)))
        elif msg["type"] == "unsubscribe":
            # A viewer came back right after the last one left: subscribe again.
            chan.ready = False
            for sub in chan.subs:
                sub._desync()
            self._spawn(self._send("SUBSCRIBE", msg["channel"]))

    # -- live-stream registry: one key per stream with a TTL, plus an index set ----------
    async def _pipeline(self, *commands: tuple[str, ...]) -> None:
        async def run() -> None:  # built afresh per try: a failed pipeline forgets its commands
            async with self._r.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                await pipe.execute()
        await self._idem(run)

    async def register(self, stream: str, info: dict[str, Any]) -> None:
        self._registered[stream] = dict(info)
        await self.heartbeat(stream)

    async def heartbeat(self, stream: str) -> None:
        if stream in self._registered:
            ttl_ms = str(int(self.registry_ttl_s * 1000))
            info = json.dumps(self._registered[stream])
            try:  # a full re-announce, so the registry survives a Redis restart
                await self._pipeline(("SET", self._key("stream", stream), info, "PX", ttl_ms),
                                     ("SADD", self._key("streams"), stream))
            except (RedisError, OSError) as exc:
                log.warning("heartbeat of %s failed: %r", stream, exc)

    async def unregister(self, stream: str) -> None:
        self._registered.pop(stream, None)
        try:
            await self._pipeline(("DEL", self._key("stream", stream)),
                                 ("SREM", self._key("streams"), stream))
        except (RedisError, OSError) as exc:
            log.warning("unregister of %s failed: %r", stream, exc)

    async def live_streams(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            streams = sorted(await self._r.smembers(self._key("streams")))
            infos = await self._r.mget([self._key("stream", s) for s in streams]) if streams else []
            expired = [s for s, info in zip(streams, infos) if info is None]
            if expired:  # their keys timed out: drop them from the index too
                await self._r.srem(self._key("streams"), *expired)
            return {s: json.loads(info) for s, info in zip(streams, infos) if info is not None}

        try:
            return await self._idem(read)
        except (RedisError, OSError) as exc:
            log.warning("live streams unavailable: %r", exc)
            return {}

    async def ping(self) -> bool:
        try:
            return bool(await self._idem(self._r.ping))
        except (RedisError, OSError):
            return False
