"""The ingest WebSocket `/v1/listen`: a client streams audio in, gets its caption events back, and every event is
published on the bus under the stream id for subscribers anywhere.

Binary frames are audio (`encoding` PCM at `sample_rate`, `channels` interleaved); text frames are JSON control
messages: {"type": "flush"|"close"|"keepalive"|"config"}. See CLOSE_CODES for how a connection ends. Whatever one
stream does, it only ever ends its own session: every failure below is caught per connection."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.websockets import WebSocket

from gateway import events as ev
from gateway.config import LANGUAGE, STREAM_ID, ServeConfig
from gateway.errors import parse_json
from gateway.media import PCM_DTYPES, SAMPLE_RATE, AudioError, decode_pcm
from gateway.session import CaptionSession, SessionConfig
from gateway.state import Gateway
from gateway.stream import Ended, Outbox, Protocol, Refused, admitted, close, receive

# close code -> (error event code, meaning); 1000 (after {"type": "close"}) and 1012 (server restart) carry no error
CLOSE_CODES = {
    1003: ("bad_control", "a text frame that is not a JSON object"),
    1007: ("bad_audio", "audio that is not whole PCM frames (odd byte count)"),
    1008: ("bad_control", "a control message of unknown type or with invalid fields"),
    1009: ("frame_too_big", "a frame over --max-frame-bytes"),
    1011: ("internal", "the server failed this session"),
    1013: ("unavailable", "model still loading, or the server is draining: retry later"),
    4400: ("bad_request", "invalid query parameters"),
    4401: ("unauthorized", "missing, invalid or expired API key or token (gateway/auth.py)"),
    4403: ("forbidden", "the credential does not allow this stream or scope, or the Origin is not allowed"),
    4408: ("idle_timeout", "no frame for --idle-timeout seconds"),
    4409: ("stream_busy", "the stream id is already live"),
    4413: ("session_too_long", "the session reached --max-session seconds (finals are delivered first)"),
    4429: ("too_many_streams", "the key already has --max-streams-per-key streams open"),
}


@dataclass(frozen=True)
class ListenParams:
    """The query string of /v1/listen, validated."""

    stream: str
    encoding: str = "pcm_s16le"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    language: str = "auto"
    partials: bool = True
    endpointing_ms: int = SessionConfig.endpoint_ms
    turn_ms: int = SessionConfig.turn_ms
    words: bool = False

    def __post_init__(self) -> None:
        if not STREAM_ID.fullmatch(self.stream):
            raise ValueError(f"stream must match {STREAM_ID.pattern}, got {self.stream!r}")
        if self.encoding not in PCM_DTYPES:
            raise ValueError(f"encoding must be one of {', '.join(PCM_DTYPES)}, got {self.encoding!r}")
        if not 8000 <= self.sample_rate <= 48000:
            raise ValueError(f"sample_rate must be 8000..48000, got {self.sample_rate}")
        if not 1 <= self.channels <= 8:
            raise ValueError(f"channels must be 1..8, got {self.channels}")
        if not LANGUAGE.fullmatch(self.language):
            raise ValueError(f"language must be 'auto' or an ISO code such as 'en', got {self.language!r}")
        self.session_config()  # the segmenter validates endpointing_ms and turn_ms

    @classmethod
    def parse(cls, query: QueryParams, config: ServeConfig) -> ListenParams:
        known = {"stream", "encoding", "sample_rate", "channels", "language", "partials", "endpointing_ms", "turn_ms",
                 "words", "token"}
        if unknown := set(query) - known:
            raise ValueError(f"unknown query parameters: {', '.join(sorted(unknown))}")
        q = query.get
        return cls(stream=q("stream") or uuid.uuid4().hex[:12], encoding=q("encoding", "pcm_s16le"),
                   sample_rate=_int(q("sample_rate", str(SAMPLE_RATE)), "sample_rate"), channels=_int(q("channels", "1"), "channels"),
                   language=q("language") or config.language, partials=_bool(q("partials", "true"), "partials"),
                   endpointing_ms=_int(q("endpointing_ms", str(SessionConfig.endpoint_ms)), "endpointing_ms"),
                   turn_ms=_int(q("turn_ms", str(SessionConfig.turn_ms)), "turn_ms"),
                   words=_bool(q("words", "false"), "words"))

    def session_config(self) -> SessionConfig:
        return SessionConfig(language=None if self.language == "auto" else self.language, partials=self.partials,
                             endpoint_ms=self.endpointing_ms, turn_ms=self.turn_ms, words=self.words)


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _bool(value: str, name: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


async def _reject(ws: WebSocket, stream: str, code: int, message: str) -> None:
    """Refuse a connection before any session exists: one error event (not published: no stream began), then close."""
    error = ev.Error(stream=stream, seq=0, code=CLOSE_CODES[code][0], message=message)
    await ws.send_text(json.dumps(ev.to_json(error)))
    await close(ws, code, message)


async def listen(ws: WebSocket) -> None:
    gw: Gateway = ws.app.state.gateway
    await ws.accept()
    fallback = ws.query_params.get("stream") or uuid.uuid4().hex[:12]
    fallback = fallback if STREAM_ID.fullmatch(fallback) else "invalid"
    try:
        params = ListenParams.parse(ws.query_params, gw.config)
    except ValueError as e:
        return await _reject(ws, fallback, 4400, str(e))
    try:
        async with admitted(gw, ws, params.stream, {"language": params.language}) as live:
            engine = gw.engine
            assert engine is not None  # admitted: the model is loaded
            outbox = Outbox(gw, ws, params.stream)
            try:
                session = CaptionSession(params.stream, engine, params.session_config(), emit=outbox.emit)
            except ValueError as e:  # e.g. a language this model does not know
                return await _reject(ws, params.stream, 4400, str(e))
            outbox.session = session
            live.attach(session)
            await session.start()
            await receive(gw, ws, Ingest(gw, ws, params, session, outbox), gw.config.max_session_s)
    except Refused as e:
        await _reject(ws, params.stream, e.close_code, e.message)


class Ingest(Protocol):
    """Our own protocol: binary frames are PCM, text frames JSON controls; every event goes out as it is."""

    def __init__(self, gw: Gateway, ws: WebSocket, params: ListenParams, session: CaptionSession,
                 outbox: Outbox) -> None:
        self.gw, self.ws, self.params, self.session, self.outbox = gw, ws, params, session, outbox

    @property
    def client_gone(self) -> bool:  # type: ignore[override]
        return self.outbox.client_gone

    @client_gone.setter
    def client_gone(self, gone: bool) -> None:
        self.outbox.client_gone = gone

    async def audio(self, data: bytes) -> None:
        if data:
            p = self.params
            try:
                pcm = decode_pcm(data, p.encoding, p.sample_rate, p.channels)
            except AudioError as e:
                raise Ended(1007, str(e)) from None
            await self.session.feed(pcm)

    async def text(self, text: str) -> bool:
        return await _control(self.session, text)

    async def idle(self, over_time: bool) -> None:
        code = 4413 if over_time else 4408
        await self.session.error(CLOSE_CODES[code][0], f"the session reached the {self.gw.config.max_session_s:g} s "
                                "limit" if over_time else f"no frame for {self.gw.config.idle_timeout_s:g} s")
        await self.session.close()
        await close(self.ws, code)

    async def finish(self) -> None:
        await self.session.close()
        await close(self.ws, 1000)

    async def refuse(self, e: Ended) -> None:
        await self.session.error(CLOSE_CODES[e.code][0], e.message)
        await self.session.abort()
        await close(self.ws, e.code, e.message)

    async def failed(self) -> None:
        if not self.session.ended:
            await self.session.error("internal", "the server failed this stream")
            await self.session.abort()
        await close(self.ws, 1011)


async def _control(session: CaptionSession, text: str) -> bool:
    """Act on one control message -> whether the client asked to close."""
    try:
        msg: Any = parse_json(text)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        raise Ended(1003, "a text frame must be a JSON object such as {\"type\": \"flush\"}")
    kind = msg.get("type")
    if kind == "flush":
        await session.flush()
    elif kind == "close":
        return True
    elif kind == "keepalive":
        pass  # receiving it already reset the idle timer
    elif kind == "config":
        # From the next decode on; the VAD's endpoint is fixed per connection (its segmenter is mid-utterance).
        try:
            changes, unknown = _config_changes(msg)
            if unknown:
                raise ValueError(f"config can change language, prompt and partials, not {', '.join(sorted(unknown))}")
            session.reconfigure(**changes)
        except (ValueError, TypeError) as e:
            await session.error("config_invalid", str(e)[:300])
        else:
            await session.configured()
    else:
        raise Ended(1008, f"unknown control type {kind!r}; known: flush, close, keepalive, config")
    return False


def _config_changes(msg: dict) -> tuple[dict, set[str]]:
    """A config message -> (CaptionSession.reconfigure keywords, keys it does not know)."""
    changes: dict[str, Any] = {}
    if "language" in msg:
        lang = msg["language"]
        if not isinstance(lang, str) or not LANGUAGE.fullmatch(lang):
            raise ValueError(f"language must be 'auto' or an ISO code such as 'en', got {lang!r}")
        changes["language"] = None if lang == "auto" else lang
    if "prompt" in msg:
        if msg["prompt"] is not None and not isinstance(msg["prompt"], str):
            raise ValueError("prompt must be a string or null")
        changes["prompt"] = msg["prompt"] or None
    if "partials" in msg:
        if not isinstance(msg["partials"], bool):
            raise ValueError("partials must be true or false")
        changes["partials"] = msg["partials"]
    return changes, set(msg) - {"type", "language", "prompt", "partials"}


