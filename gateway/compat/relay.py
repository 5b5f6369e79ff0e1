"""A compatible protocol's live stream: admitted, counted and registered like an ingest stream, and its caption
events published on the bus under its stream id, so viewers watch a realtime or Deepgram client's captions like any
other stream's. The protocol module itself only translates events for its client (`deliver`).

    async with admitted(gw, ws, stream) as live:   # raises Refused: the protocol answers it in its own shape
        relay = Relay(gw, ws, stream, deliver)
        live.attach(CaptionSession(stream, engine, config, emit=relay.emit))
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.websockets import WebSocket

from gateway import events as ev
from gateway.ingest import HEARTBEAT_FRACTION, Outbox
from gateway.limits import LimitError
from gateway.session import CaptionSession
from gateway.state import Gateway

Deliver = Callable[[ev.Event], Awaitable[None]]
_TAG = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]+)*")  # BCP-47: "en", "en-US", "zh-Hans-CN"


def iso_language(tag: str | None) -> str | None:
    """A vendor's language tag -> our ISO code, None for detection ("", "auto", "multi"); ValueError if malformed."""
    if not tag or tag.lower() in ("auto", "multi"):
        return None
    if not (m := _TAG.fullmatch(tag)):
        raise ValueError(f"language must be a code such as 'en' or 'en-US', got {tag!r}")
    return m.group(1).lower()


class Refused(Exception):
    """A stream that cannot start: `status` for an HTTP refusal, `close_code` and `code` for a WebSocket one."""

    def __init__(self, status: int, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close_code = status, code, message, close_code


@dataclass(eq=False)
class Live:
    """A registered stream; `attach` makes a session the one this instance closes on shutdown."""

    gw: Gateway
    stream: str

    def attach(self, session: CaptionSession) -> None:
        self.gw.sessions[self.stream] = session


@asynccontextmanager
async def admitted(gw: Gateway, ws: WebSocket, stream: str, info: dict[str, object]) -> AsyncIterator[Live]:
    """Hold a live stream for the connection: the model is ready, the caller's key has a stream to spare, the id is
    free on every instance; registered (with heartbeats) until the block ends. Raises Refused."""
    if not gw.ready:
        raise Refused(503, "unavailable", "draining" if gw.draining else "the model is still loading", 1013)
    try:
        async with gw.limits.stream(ws.state.grant):
            if stream in gw.sessions or stream in await gw.bus.live_streams():
                raise Refused(409, "stream_busy", f"stream {stream!r} is already live", 4409)
            live = Live(gw, stream)
            await gw.bus.register(stream, {**info, "started": time.time()})
            beat = asyncio.create_task(_heartbeat(gw, stream))
            try:
                yield live
            finally:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
                await gw.bus.unregister(stream)
                gw.session_done(stream)
    except LimitError as e:
        raise Refused(e.status, e.code, e.message, e.close_code) from None


async def _heartbeat(gw: Gateway, stream: str) -> None:
    while True:
        await asyncio.sleep(gw.config.registry_ttl_s / HEARTBEAT_FRACTION)
        await gw.bus.heartbeat(stream)


class Relay:
    """The `emit` of a protocol's CaptionSession(s): publishes each event (numbered per connection, with metrics,
    through ingest's Outbox), then `deliver`s it to the protocol. A connection may replace its session (new
    settings mid-stream): viewers see one stream, so only the first session.started and, once `replacing` is
    cleared, the last session.ended go on the bus; empty finals (SessionConfig.empty_finals) stay off it too."""

    def __init__(self, gw: Gateway, ws: WebSocket, stream: str, deliver: Deliver) -> None:
        self.outbox = Outbox(gw, ws, stream)
        self.outbox.client_gone = True  # the protocol speaks to its client itself, in its own shape
        self.deliver = deliver
        self.replacing = False  # set while a replaced session closes: its session.ended is not the stream's end
        self._started = False

    def attach(self, session: CaptionSession) -> None:
        self.outbox.session = session  # lag metrics against this session's audio clock

    async def emit(self, event: ev.Event) -> None:
        if self._public(event):
            await self.outbox.emit(event)
        await self.deliver(event)

    def _public(self, event: ev.Event) -> bool:
        if isinstance(event, ev.SessionStarted):
            started, self._started = self._started, True
            return not started
        if isinstance(event, ev.SessionEnded):
            return not self.replacing
        return not (isinstance(event, ev.CaptionFinal) and not event.text)
