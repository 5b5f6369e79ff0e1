"""A live stream's plumbing, shared by every live protocol (native `/v1/listen`, Deepgram, OpenAI Realtime,
StepFun realtime): admission (the model is ready, the key has a stream to spare, the id is free on every
instance), registration with heartbeats, the publisher (`Outbox`: the session numbers events, the bus and the
client get them), a compatible protocol's relay, the receive loop (`receive`: the frame limit, the idle timeout,
a client that leaves, a server that shuts down, a failure) and the one way to close a socket. A protocol is a
`Protocol`: it only translates between its client's messages and the session.

    async with admitted(gw, ws, stream, info) as live:   # raises Refused: the protocol answers it in its own shape
        outbox = Outbox(gw, ws, stream)
        live.attach(CaptionSession(stream, engine, config, emit=outbox.emit))
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway import events as ev
from gateway.limits import LimitError
from gateway.session import CaptionSession
from gateway.state import Gateway

log = logging.getLogger("livecaptions.stream")

HEARTBEAT_FRACTION = 3  # heartbeats per registry TTL: one lost beat does not drop the stream off the list
REASON_BYTES = 120  # a close reason is at most 123 bytes of UTF-8
Deliver = Callable[[ev.Event], Awaitable[None]]


class Outbox:
    """The session's `emit`: publishes each event as the session numbered it (the session is the stream's one seq
    authority; the gateway's own errors go through `CaptionSession.error`), then sends it to the client while it is
    there."""

    def __init__(self, gw: Gateway, ws: WebSocket, stream: str) -> None:
        self.gw, self.ws, self.stream = gw, ws, stream
        self.session: CaptionSession | None = None
        self.client_gone = False
        self._lock = asyncio.Lock()  # a relay's successive sessions may emit at once

    async def emit(self, event: ev.Event) -> None:
        async with self._lock:
            lag = self.session.lag(event) if self.session is not None else 0.0
            data = ev.to_json(event)
            await self.gw.bus.publish(self.stream, data)
            self.gw.metrics.observe(event, lag)
            if not self.client_gone:
                try:
                    await self.ws.send_text(json.dumps(data, ensure_ascii=False))
                except Exception:  # gone mid-send: subscribers still get the rest from the bus
                    self.client_gone = True


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
    """The `emit` of a protocol's CaptionSession(s): publishes each event (with metrics, through the Outbox), then
    `deliver`s it to the protocol. A connection may replace its session (new settings mid-stream): viewers see one
    stream, so only the first session.started and, once `replacing` is cleared, the last session.ended go on the
    bus; empty finals (SessionConfig.empty_finals) stay off it too. What goes on the bus is numbered on through the
    successive sessions, each of which numbers its own events from 0: the one place a seq is not the session's."""

    def __init__(self, gw: Gateway, ws: WebSocket, stream: str, deliver: Deliver) -> None:
        self.outbox = Outbox(gw, ws, stream)
        self.outbox.client_gone = True  # the protocol speaks to its client itself, in its own shape
        self.deliver = deliver
        self.replacing = False  # set while a replaced session closes: its session.ended is not the stream's end
        self._started = False
        self._seq = 0  # the stream's, across its sessions

    def attach(self, session: CaptionSession) -> None:
        self.outbox.session = session  # lag metrics against this session's audio clock

    async def emit(self, event: ev.Event) -> None:
        if self._public(event):
            self._seq += 1
            await self.outbox.emit(replace(event, seq=self._seq - 1))
        await self.deliver(event)

    def _public(self, event: ev.Event) -> bool:
        if isinstance(event, ev.SessionStarted):
            started, self._started = self._started, True
            return not started
        if isinstance(event, ev.SessionEnded):
            return not self.replacing
        return not (isinstance(event, ev.CaptionFinal) and not event.text)


async def close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close the socket with `code` and `reason` (cut to REASON_BYTES of UTF-8, whole characters), if it is open."""
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code, reason.encode()[:REASON_BYTES].decode(errors="ignore"))
        except Exception:  # already gone
            log.debug("close %d not sent", code, exc_info=True)


class Ended(Exception):
    """Raised by a protocol's handlers to end the connection with close code `code`; `message` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Protocol(ABC):
    """One live protocol's side of a socket, fed by `receive`."""

    session: CaptionSession  # the one audio goes to now (a protocol may replace it mid-stream)
    client_gone: bool = False

    @abstractmethod
    async def audio(self, data: bytes) -> None:
        """A binary frame; raise Ended to refuse it."""

    @abstractmethod
    async def text(self, text: str) -> bool:
        """A text frame -> whether the client asked to end the stream; raise Ended to refuse it."""

    @abstractmethod
    async def idle(self, over_time: bool) -> None:
        """No frame for --idle-timeout (`over_time`: the stream reached its length limit): tell the client, deliver
        the finals, close."""

    @abstractmethod
    async def finish(self) -> None:
        """The client ended the stream: deliver the finals, close normally."""

    @abstractmethod
    async def refuse(self, e: Ended) -> None:
        """Tell the client why, in the protocol's shape, abort the session, close with e.code."""

    @abstractmethod
    async def failed(self) -> None:
        """The server failed this stream: tell the client, abort the session, close with 1011."""


async def receive(gw: Gateway, ws: WebSocket, protocol: Protocol, max_session_s: float = 0.0) -> None:
    """Feed `protocol` the socket's messages until the client ends the stream, leaves, breaks the protocol, or the
    server shuts down (`max_session_s`: the stream's length limit, 0 for none)."""
    limit, idle = gw.config.max_frame_bytes, gw.config.idle_timeout_s
    ends = time.monotonic() + max_session_s if max_session_s else float("inf")
    try:
        while True:
            try:
                async with asyncio.timeout(min(idle, ends - time.monotonic())):
                    msg = await ws.receive()
            except TimeoutError:  # silent or over time, not broken: what it said still deserves its finals
                return await protocol.idle(time.monotonic() >= ends)
            if msg["type"] == "websocket.disconnect":
                protocol.client_gone = True
                if msg.get("code") == 1012 or gw.draining:  # the server shuts down: finish for the viewers
                    await protocol.session.close()
                else:  # the client left: nobody asked for the rest
                    await protocol.session.abort()
                return
            data, text = msg.get("bytes"), msg.get("text")
            size = len(data) if data is not None else len(text or "")
            if size > limit:
                raise Ended(1009, f"a frame of {size} bytes is over the {limit} byte limit (--max-frame-bytes)")
            if data is not None:
                await protocol.audio(data)
            elif text is not None and await protocol.text(text):
                return await protocol.finish()
    except Ended as e:
        await protocol.refuse(e)
    except WebSocketDisconnect:
        await protocol.session.abort()
    except Exception:
        log.exception("stream failed")
        await protocol.failed()
