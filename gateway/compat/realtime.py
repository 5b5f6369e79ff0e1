"""Realtime transcription over a WebSocket, as OpenAI's Realtime API (`/v1/realtime?intent=transcription`) and
StepFun's realtime ASR (`/v1/realtime/asr/stream`) speak it: one protocol, driven by a CaptionSession (our VAD and
engine), with a Dialect per vendor for the fields that differ (the audio format object, StepFun's `text`/`stash` on
deltas and `enable_itn`, OpenAI's session `type`/`object`).

Client events: session.update, input_audio_buffer.append (base64 audio), input_audio_buffer.commit,
input_audio_buffer.clear. Server events: session.created, session.updated, input_audio_buffer.speech_started /
speech_stopped / committed / cleared, conversation.item.created, conversation.item.input_audio_transcription.delta /
completed / failed, and error ({type, code, message, param, event_id} under `error`; the session stays open).

Turns. With `turn_detection` server_vad (the default) each VAD segment is one conversation item: speech.started ->
speech_started; speech.stopped -> speech_stopped, committed, conversation.item.created; caption.final -> completed.
With `turn_detection: null` the audio between two commits is one item: the VAD still cuts it into segments so that
they decode while the client speaks, and the item is completed, their texts joined, once every segment is final.

Deltas only ever append, as the vendors' do, and carry final text only: each segment's final (which never
changes) sends its words, so an item's deltas add up to `completed.transcript`, as OpenAI's clients assume. A
segment is final at each short pause, so they still stream while the client speaks. StepFun's deltas also carry
`text` (the finals so far) and `stash` (the partial of the segment being heard), and come with every partial too.

Divergences, on purpose: deltas stream while the client speaks, before the item is committed; in server_vad mode
`threshold` and `prefix_padding_ms` are accepted but our VAD's own (webrtcvad, 200 ms pre-roll) apply, and
`silence_duration_ms` is at least 200; audio is PCM only (no G.711); cleared audio is still decoded for the stream's
viewers, but never reaches this client."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.websockets import WebSocket

from gateway import events as ev
from gateway.compat.errors import TYPES
from gateway.compat.intake import usage
from gateway.compat.itn import spoken
from gateway.compat.languages import iso_language
from gateway.compat.models import resolve
from gateway.config import STREAM_ID
from gateway.errors import parse_json
from gateway.media import PCM_DTYPES, SAMPLE_RATE, AudioError, decode_pcm
from gateway.offline import separator
from gateway.session import CaptionSession, SessionConfig
from gateway.state import Gateway
from gateway.stream import Ended, Live, Protocol, Refused, Relay, admitted, close, receive

MIN_COMMIT_S = 0.1  # OpenAI refuses to commit less audio than this
MIN_SILENCE_MS = 200  # our segmenter's post-roll: an endpoint cannot be shorter


class Invalid(Exception):
    """A client event the server cannot act on: an error event, and the session goes on."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


# -- settings ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFormat:
    encoding: str = "pcm_s16le"  # a gateway.media PCM_DTYPES key
    rate: int = 24000  # Hz, resampled to 16 kHz
    channels: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in PCM_DTYPES:
            raise Invalid(f"codec must be one of {', '.join(PCM_DTYPES)}, got {self.encoding!r}", "format.codec")
        if not 8000 <= self.rate <= 48000:
            raise Invalid(f"rate must be 8000..48000 Hz, got {self.rate}", "format.rate")
        if not 1 <= self.channels <= 8:
            raise Invalid(f"channel must be 1..8, got {self.channels}", "format.channel")


@dataclass(frozen=True)
class TurnDetection:
    silence_duration_ms: int = 500  # OpenAI's default; our endpoint
    threshold: float = 0.5  # accepted, not used (webrtcvad has no threshold)
    prefix_padding_ms: int = 200  # what our VAD keeps before speech, whatever the client asks

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise Invalid(f"threshold must be 0.0..1.0, got {self.threshold}", "turn_detection.threshold")
        if self.silence_duration_ms < 0:
            raise Invalid(f"silence_duration_ms must be >= 0, got {self.silence_duration_ms}",
                          "turn_detection.silence_duration_ms")


@dataclass(frozen=True)
class Settings:
    """A session's settings, whatever the dialect called them."""

    format: AudioFormat = AudioFormat()
    model: str | None = None  # as the client named it (validated against the served model)
    language: str | None = None  # ISO code; None: detected per segment
    prompt: str | None = None  # Whisper's initial prompt (hotwords/keywords are appended to it)
    enable_itn: bool = True  # StepFun: written form (as the model writes); False: numbers spelled out
    turn_detection: TurnDetection | None = TurnDetection()  # None: manual commits

    def session_config(self) -> SessionConfig:
        # server_vad: an item is the speech up to silence_duration_ms of silence, however short (the session's turn)
        endpoint = max(MIN_SILENCE_MS, self.turn_detection.silence_duration_ms) if self.turn_detection else SessionConfig.endpoint_ms
        return SessionConfig(language=self.language, prompt=self.prompt, endpoint_ms=endpoint,
                             turn_ms=endpoint if self.turn_detection else SessionConfig.turn_ms, empty_finals=True)


def _obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{param} must be an object", param)
    return value


def _typed(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], param: str) -> Any:
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        raise Invalid(f"{param}.{key} has the wrong type: {value!r}", f"{param}.{key}")
    return value


def _update(current: Settings, session: dict[str, Any], dialect: Dialect, served: str) -> Settings:
    """Apply a session.update's `session` object: only the fields present change (turn_detection: null turns
    server VAD off)."""
    audio = _obj(session.get("audio", {}), "session.audio")
    inp = _obj(audio.get("input", {}), "session.audio.input")
    out = current
    if inp.get("format") is not None:
        out = replace(out, format=dialect.parse_format(_obj(inp["format"], "session.audio.input.format"), out.format))
    if inp.get("transcription") is not None:
        p = "session.audio.input.transcription"
        t = _obj(inp["transcription"], p)
        changes: dict[str, Any] = {}
        if "model" in t:
            try:
                resolve(t["model"], served)
            except ValueError as e:
                raise Invalid(str(e), f"{p}.model", "model_not_found") from None
            changes["model"] = t["model"]
        if "language" in t:
            try:
                changes["language"] = iso_language(t["language"] and _typed(t, "language", str, p))
            except ValueError as e:
                raise Invalid(str(e), f"{p}.language") from None
        words = [w for key in ("hotwords", "keywords") if key in t
                 for w in _typed(t, key, list, p) if isinstance(w, str)]
        if "prompt" in t or words:
            prompt = (t.get("prompt") and _typed(t, "prompt", str, p)) or ""
            changes["prompt"] = ", ".join(filter(None, [prompt, ", ".join(words)])) or None
        if "enable_itn" in t:
            changes["enable_itn"] = _typed(t, "enable_itn", bool, p)
        out = replace(out, **changes)
    if "turn_detection" in inp:
        td = inp["turn_detection"]
        if td is None:
            out = replace(out, turn_detection=None)
        else:
            p = "session.audio.input.turn_detection"
            td = _obj(td, p)
            if td.get("type") not in ("server_vad", "semantic_vad"):  # semantic: our VAD, with its endpoint
                raise Invalid(f"{p}.type must be server_vad or semantic_vad, got {td.get('type')!r}", f"{p}.type")
            base = out.turn_detection or TurnDetection()
            out = replace(out, turn_detection=replace(
                base, silence_duration_ms=_typed(td, "silence_duration_ms", int, p) if "silence_duration_ms" in td
                else base.silence_duration_ms,
                threshold=float(_typed(td, "threshold", (int, float), p)) if "threshold" in td else base.threshold))
    return out


# -- dialects ------------------------------------------------------------------------------------------------------


class Dialect:
    """What differs between the vendors. Subclasses override the few methods that do."""

    name = ""
    default_format = AudioFormat()

    def parse_format(self, fmt: dict[str, Any], current: AudioFormat) -> AudioFormat:
        raise NotImplementedError

    def format_json(self, fmt: AudioFormat) -> dict[str, Any]:
        raise NotImplementedError

    def transcription_json(self, s: Settings, served: str) -> dict[str, Any]:
        return {"model": s.model or served, "language": s.language, "prompt": s.prompt}

    def session_json(self, session_id: str, s: Settings, served: str) -> dict[str, Any]:
        td = s.turn_detection
        return {"id": session_id, "audio": {"input": {
            "format": self.format_json(s.format),
            "transcription": self.transcription_json(s, served),
            "turn_detection": None if td is None else {
                "type": "server_vad", "threshold": td.threshold, "prefix_padding_ms": td.prefix_padding_ms,
                "silence_duration_ms": max(MIN_SILENCE_MS, td.silence_duration_ms)},
        }}}

    def delta_fields(self, delta: str, confirmed: str, stash: str) -> dict[str, Any] | None:
        """The dialect's fields of a delta event; None: nothing worth sending."""
        return {"delta": delta} if delta else None


class OpenAI(Dialect):
    name = "openai"
    default_format = AudioFormat(rate=24000)  # pcm16 at 24 kHz: OpenAI's only PCM rate

    def parse_format(self, fmt: dict[str, Any], current: AudioFormat) -> AudioFormat:
        kind = fmt.get("type", "audio/pcm")
        if kind != "audio/pcm":
            raise Invalid(f"format type {kind!r} is not supported; use audio/pcm (16-bit little-endian PCM)",
                          "session.audio.input.format.type")
        rate = fmt.get("rate", current.rate)
        if not isinstance(rate, int) or isinstance(rate, bool):
            raise Invalid(f"rate must be an integer, got {rate!r}", "session.audio.input.format.rate")
        return AudioFormat("pcm_s16le", rate, 1)

    def format_json(self, fmt: AudioFormat) -> dict[str, Any]:
        return {"type": "audio/pcm", "rate": fmt.rate}

    def session_json(self, session_id: str, s: Settings, served: str) -> dict[str, Any]:
        body = super().session_json(session_id, s, served)
        body["audio"]["input"]["noise_reduction"] = None
        return {"type": "transcription", "object": "realtime.transcription_session", **body, "include": None}


class StepFun(Dialect):
    name = "stepfun"
    default_format = AudioFormat(rate=SAMPLE_RATE)

    def parse_format(self, fmt: dict[str, Any], current: AudioFormat) -> AudioFormat:
        p = "session.audio.input.format"
        if fmt.get("type", "pcm") != "pcm":
            raise Invalid(f"format type {fmt.get('type')!r} is not supported for streaming; use pcm", f"{p}.type")
        codec = fmt.get("codec", current.encoding)
        bits = fmt.get("bits", PCM_DTYPES[codec].itemsize * 8 if codec in PCM_DTYPES else None)
        if codec in PCM_DTYPES and bits != PCM_DTYPES[codec].itemsize * 8:
            raise Invalid(f"bits {bits!r} does not match codec {codec}", f"{p}.bits")
        rate, channels = fmt.get("rate", current.rate), fmt.get("channel", current.channels)
        for name, value in (("rate", rate), ("channel", channels)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise Invalid(f"{name} must be an integer, got {value!r}", f"{p}.{name}")
        try:
            return AudioFormat(codec, rate, channels)
        except Invalid as e:
            raise Invalid(e.message, f"session.audio.input.{e.param}") from None

    def format_json(self, fmt: AudioFormat) -> dict[str, Any]:
        return {"type": "pcm", "codec": fmt.encoding, "rate": fmt.rate, "bits": PCM_DTYPES[fmt.encoding].itemsize * 8,
                "channel": fmt.channels}

    def transcription_json(self, s: Settings, served: str) -> dict[str, Any]:
        return {**super().transcription_json(s, served), "enable_itn": s.enable_itn}

    def delta_fields(self, delta: str, confirmed: str, stash: str) -> dict[str, Any] | None:
        # every partial and final: the finals so far plus the partial still being heard are the turn's text so far
        return {"delta": delta, "text": confirmed, "stash": stash}


# -- the connection ------------------------------------------------------------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(eq=False)
class _Item:
    """A conversation item: the user turn that one or more segments (keyed (generation, segment)) make up."""

    id: str
    pending: set[tuple[int, int]] = field(default_factory=set)  # segments whose final is not in yet
    texts: list[tuple[str, str]] = field(default_factory=list)  # (final text, its language) so far, in order
    language: str | None = None  # of its latest final (the session's setting before one)
    sent: str = ""  # what the deltas have sent
    start: float = 0.0  # server VAD: where its segment starts (s)
    audio_s: float = 0.0
    tokens: int = 0  # decoded
    failure: str | None = None
    committed: bool = False
    dropped: bool = False  # cleared before it was committed
    done: bool = False

    def joined(self, extra: str = "") -> str:
        """Its finals' texts, and `extra` (the open segment's), as one text."""
        out, previous = "", None
        for text, language in [*self.texts, (extra, self.language or "")]:
            if text:
                out, previous = out + separator(previous, language) + text, language
        return out


class Connection(Protocol):
    """One realtime client: reads its events, drives the CaptionSession, sends the protocol's events."""

    def __init__(self, gw: Gateway, ws: WebSocket, dialect: Dialect, live: Live, settings: Settings) -> None:
        assert gw.engine is not None
        self.gw, self.ws, self.dialect, self.live, self.settings = gw, ws, dialect, live, settings
        self.engine, self.served = gw.engine, gw.config.engine.model
        self.relay = Relay(gw, ws, live.stream, self._on_event)
        self.session = self._new_session(settings)
        self.fed = False  # the current session has had audio (replacing it means closing it)
        self.generation = 0  # bumped per replaced session: segment ids restart with each
        self.base_s = 0.0  # audio seconds fed to the sessions before the current one
        self.items: dict[tuple[int, int], _Item] = {}
        self.item: _Item | None = None  # the uncommitted item, if any
        self.last_item: str | None = None  # the last committed item's id: previous_item_id
        self.buffered_s = 0.0  # manual mode: audio since the last commit
        self.carry = b""  # bytes of a PCM frame split across appends
        self._lock = asyncio.Lock()  # the session's tasks and the reader both send
        self.client_gone = False

    def _new_session(self, settings: Settings) -> CaptionSession:
        try:
            session = CaptionSession(self.live.stream, self.engine, settings.session_config(), emit=self.relay.emit)
        except ValueError as e:  # a language this model does not know
            raise Invalid(str(e), "session.audio.input.transcription.language") from None
        self.live.attach(session)
        self.relay.attach(session)
        return session

    # -- sending -------------------------------------------------------------------------------------------------

    async def send(self, kind: str, **fields: Any) -> None:
        if self.client_gone:
            return
        async with self._lock:
            try:
                await self.ws.send_text(json.dumps({"event_id": _id("event"), "type": kind, **fields},
                                                   ensure_ascii=False))
            except Exception:  # gone mid-send: the session goes on for the stream's viewers until we notice
                self.client_gone = True

    async def error(self, message: str, code: str, param: str | None = None, event_id: str | None = None,
                    kind: str = "invalid_request_error") -> None:
        await self.send("error", error={"type": kind, "code": code, "message": message, "param": param,
                                        "event_id": event_id})

    def _session_json(self) -> dict[str, Any]:
        return self.dialect.session_json(self.live.stream, self.settings, self.served)

    # -- caption events -> protocol events --------------------------------------------------------------------

    async def _on_event(self, event: ev.Event) -> None:
        segment = getattr(event, "segment", None)
        if segment is None:
            return
        key, vad = (self.generation, segment), self.settings.turn_detection is not None
        if isinstance(event, ev.SpeechStarted):
            if vad or self.item is None:
                self.item = _Item(_id("item"))
            item = self.items[key] = self.item
            item.pending.add(key)
            if vad:
                item.start = event.start
                await self.send("input_audio_buffer.speech_started", audio_start_ms=self._ms(event.start),
                                item_id=item.id)
            return
        final = isinstance(event, (ev.CaptionFinal, ev.Error))
        item = self.items.pop(key, None) if final else self.items.get(key)
        if item is None or item.dropped:
            return
        if isinstance(event, ev.CaptionPartial):
            item.language = item.language or self.settings.language
            confirmed = item.joined()
            fields = self.dialect.delta_fields("", confirmed,
                                               item.joined(self._form(event.text, item.language))[len(confirmed):])
            if fields is not None:
                await self.send("conversation.item.input_audio_transcription.delta", item_id=item.id,
                                content_index=0, **fields)
        elif isinstance(event, ev.SpeechStopped):
            if vad and item is self.item:
                self.item, item.audio_s = None, event.end - item.start
                await self.send("input_audio_buffer.speech_stopped", audio_end_ms=self._ms(event.end), item_id=item.id)
                await self._commit(item)
        elif final:
            item.pending.discard(key)
            if isinstance(event, ev.Error):
                item.failure = event.message
            elif event.text:
                item.language, item.tokens = event.language, item.tokens + event.decode["tokens"]
                item.texts.append((self._form(event.text, event.language), event.language))
                confirmed = item.joined()
                fields = self.dialect.delta_fields(self._advance(item, confirmed), confirmed, "")
                if fields is not None:
                    await self.send("conversation.item.input_audio_transcription.delta", item_id=item.id,
                                    content_index=0, **fields)
            await self._complete(item)

    def _form(self, text: str, language: str | None) -> str:
        return text if self.settings.enable_itn else spoken(text, language)

    def _ms(self, seconds: float) -> int:
        return round((self.base_s + seconds) * 1000)

    @staticmethod
    def _advance(item: _Item, text: str) -> str:
        """The part of `text` (the finals so far) past what the deltas sent."""
        if len(text) > len(item.sent) and text.startswith(item.sent):
            delta, item.sent = text[len(item.sent):], text
            return delta
        return ""

    async def _commit(self, item: _Item) -> None:
        await self.send("input_audio_buffer.committed", previous_item_id=self.last_item, item_id=item.id)
        await self.send("conversation.item.created", previous_item_id=self.last_item, item={
            "id": item.id, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
            "content": [{"type": "input_audio", "transcript": None}]})
        self.last_item, item.committed = item.id, True
        await self._complete(item)

    async def _complete(self, item: _Item) -> None:
        if not item.committed or item.pending or item.done:
            return
        item.done = True
        if item.failure is not None:
            return await self.send("conversation.item.input_audio_transcription.failed", item_id=item.id,
                                   content_index=0, error={"type": "server_error", "code": "transcription_failed",
                                                           "message": item.failure, "param": None})
        await self.send("conversation.item.input_audio_transcription.completed", item_id=item.id, content_index=0,
                        transcript=item.joined(),
                        usage=usage(self.engine, item.audio_s, self.settings.prompt, item.tokens))

    # -- client events ---------------------------------------------------------------------------------------

    async def handle(self, text: str) -> None:
        try:
            event: Any = parse_json(text)
        except ValueError:
            raise Invalid("the message is not valid JSON", None, "invalid_json") from None
        if not isinstance(event, dict):
            raise Invalid("a client event must be a JSON object with a `type`", None, "invalid_json")
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            await self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            await self._commit_buffer()
        elif kind == "input_audio_buffer.clear":
            await self._clear()
        elif kind == "session.update":
            await self._update(_obj(event.get("session"), "session"))
        else:
            raise Invalid(f"unknown event type {kind!r}; this server takes session.update, input_audio_buffer.append, "
                          "input_audio_buffer.commit and input_audio_buffer.clear", "type")

    async def _append(self, audio: Any) -> None:
        if not isinstance(audio, str) or not audio:
            raise Invalid("input_audio_buffer.append needs `audio`: base64-encoded PCM", "audio",
                          "missing_required_parameter")
        try:
            data = self.carry + base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid("`audio` is not valid base64", "audio") from None
        fmt = self.settings.format
        whole = len(data) - len(data) % (PCM_DTYPES[fmt.encoding].itemsize * fmt.channels)
        self.carry = data[whole:]
        if whole:
            try:
                pcm = decode_pcm(data[:whole], fmt.encoding, fmt.rate, fmt.channels)
            except AudioError as e:
                raise Invalid(str(e), "audio") from None
            self.buffered_s += len(pcm) / SAMPLE_RATE
            self.fed = True
            await self.session.feed(pcm)

    async def _commit_buffer(self) -> None:
        if self.settings.turn_detection is not None:
            return await self.session.flush()  # ends the utterance now: its events follow as usual
        if self.buffered_s < MIN_COMMIT_S:
            raise Invalid(f"Error committing input audio buffer: buffer too small. Expected at least "
                          f"{MIN_COMMIT_S * 1000:.0f}ms of audio, but buffer only has {self.buffered_s * 1000:.2f}ms "
                          "of audio.", None, "input_audio_buffer_commit_empty")
        item = self.item or _Item(_id("item"))
        self.item, item.audio_s, self.buffered_s = None, self.buffered_s, 0.0
        await self.session.flush()  # the open segment ends: its final joins this item
        await self._commit(item)

    async def _clear(self) -> None:
        if self.item is not None:
            self.item.dropped = True
            self.item = None
        self.buffered_s, self.carry = 0.0, b""
        await self.session.flush()
        await self.send("input_audio_buffer.cleared")

    async def _update(self, session: dict[str, Any]) -> None:
        if session.get("type", "transcription") != "transcription":
            raise Invalid("this server runs transcription sessions only: use session.type 'transcription'",
                          "session.type")
        settings = _update(self.settings, session, self.dialect, self.served)
        try:
            config = settings.session_config()
        except ValueError as e:  # e.g. a prompt over the length limit
            raise Invalid(str(e)) from None
        if config != self.session.config:
            new = self._new_session(settings)
            old, self.session = self.session, new
            if self.fed:  # its finals still go out, under the old settings; viewers see one stream go on
                self.relay.replacing = True
                try:
                    await old.close()
                finally:
                    self.relay.replacing = False
                self.base_s += old.clock
                self.generation += 1
                self.fed = False
        if settings.format != self.settings.format:
            self.carry = b""
        self.settings = settings
        await self.send("session.updated", session=self._session_json())

    # -- the loop --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.send("session.created", session=self._session_json())
        await receive(self.gw, self.ws, self)

    async def audio(self, data: bytes) -> None:
        await self.error("binary frames are not part of this protocol: send input_audio_buffer.append events with "
                         "base64 audio", "invalid_value")

    async def text(self, text: str) -> bool:
        try:
            await self.handle(text)
        except Invalid as e:  # an error event; the session goes on
            await self.error(e.message, e.code, e.param, _event_id(text))
        return False

    async def idle(self, over_time: bool) -> None:
        await self.error(f"no event for {self.gw.config.idle_timeout_s:g} s", "idle_timeout")
        await self.session.close()
        await close(self.ws, 4408)

    async def finish(self) -> None:  # the protocol has no message that ends a session: the client closes
        await self.session.close()
        await close(self.ws, 1000)

    async def refuse(self, e: Ended) -> None:  # the loop's only refusal here: a frame over --max-frame-bytes
        await self.error(f"{e.message}: send audio in smaller appends", "frame_too_big")
        await self.session.abort()
        await close(self.ws, e.code)

    async def failed(self) -> None:
        await self.error("the server failed this session", "internal", kind="server_error")
        await self.session.abort()
        await close(self.ws, 1011)


def _event_id(text: str) -> str | None:
    try:
        event = parse_json(text)
    except ValueError:
        return None
    return event.get("event_id") if isinstance(event, dict) and isinstance(event.get("event_id"), str) else None


async def _serve(ws: WebSocket, dialect: Dialect) -> None:
    gw: Gateway = ws.app.state.gateway
    await ws.accept()
    query, served = ws.query_params, gw.config.engine.model

    async def refuse(status: int, code: str, message: str, close_code: int) -> None:
        await ws.send_text(json.dumps({"event_id": _id("event"), "type": "error", "error": {
            "type": TYPES.get(status, "server_error"), "code": code, "message": message, "param": None,
            "event_id": None}}))
        await close(ws, close_code, message)

    stream = query.get("stream") or _id("rt")
    if not STREAM_ID.fullmatch(stream):
        return await refuse(400, "invalid_value", f"stream must match {STREAM_ID.pattern}", 4400)
    if query.get("intent", "transcription") != "transcription":
        return await refuse(400, "invalid_value", "this server runs transcription sessions only: ?intent=transcription",
                            4400)
    try:
        resolve(query.get("model"), served)
        language = iso_language(gw.config.language)
    except ValueError as e:
        return await refuse(400, "model_not_found", str(e), 4400)
    try:
        async with admitted(gw, ws, stream, {"protocol": dialect.name, "language": gw.config.language}) as live:
            connection = Connection(gw, ws, dialect, live, Settings(dialect.default_format, language=language))
            await connection.run()
    except Refused as e:
        await refuse(e.status, e.code, e.message, e.close_code)


async def openai(ws: WebSocket) -> None:
    """`/v1/realtime?intent=transcription`: OpenAI's Realtime API, transcription sessions."""
    await _serve(ws, OpenAI())


async def stepfun(ws: WebSocket) -> None:
    """`/v1/realtime/asr/stream`: StepFun's realtime ASR."""
    await _serve(ws, StepFun())
