"""Deepgram's live streaming protocol on the ingest socket: `/v1/listen?protocol=deepgram`, or any connection that
carries Deepgram's own query parameters (`model`, `interim_results`, `endpointing`, ...), so Deepgram's SDKs work
unchanged once pointed at this server. Auth is the gateway's (`Authorization: Token KEY`, as Deepgram clients send).

In: binary frames of audio, `encoding=linear16` at `sample_rate` and `channels`, or with no `encoding` a WAV
stream (its header says the format); text frames {"type": "KeepAlive" | "Finalize" | "CloseStream"}. Out, mapped
from the CaptionSession's events: `Results` (caption.partial -> is_final false, only with `interim_results=true`;
caption.final -> is_final true, `speech_final` true when our VAD ended the utterance, `from_finalize` true when a
Finalize did), `SpeechStarted` (`vad_events=true`), `UtteranceEnd` (`utterance_end_ms`: once that much audio has
passed the last final with no new speech), `Metadata` after CloseStream (then close 1000), `Error`.

Parameters: `model` (Deepgram's model names and the compatible aliases all mean the served model), `language`
(BCP-47, region dropped; `multi` detects), `encoding`, `sample_rate`, `channels`, `interim_results`,
`endpointing` (ms of silence that end an utterance, at least 200; `false`: never `speech_final`),
`utterance_end_ms`, `vad_events`, `keyterm`/`keywords` (bias spellings: Whisper's initial prompt), `stream` (the
id viewers watch). Any other Deepgram parameter (`smart_format`, `punctuate`, `diarize`, ...) is accepted and has
no effect: Whisper punctuates and formats on its own. Refusals before the socket opens are HTTP responses, as
Deepgram's are: 400 (bad parameters), 409 (stream id busy), 429 (per-key limit), 503 (not ready). Word times in
Final results' `words` are timed from the model's cross-attention (engine/alignment.py); interim results' are
estimates, spread over the audio heard so far in proportion to each word's length (aligning every interim
decode would cost the engine more than the preview is worth)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from gateway import events as ev
from gateway.compat.languages import iso_language
from gateway.compat.models import resolve
from gateway.config import STREAM_ID, ServeConfig
from gateway.errors import parse_json
from gateway.media import PCM_DTYPES, SAMPLE_RATE, AudioError, decode_pcm
from gateway.session import CaptionSession, SessionConfig
from gateway.state import Gateway
from gateway.stream import Ended, Protocol, Refused, Relay, admitted, close, receive

# Deepgram's own parameters: any of them on /v1/listen means a Deepgram client (ours has none of these names)
DEEPGRAM_PARAMS = frozenset({
    "model", "interim_results", "endpointing", "utterance_end_ms", "vad_events", "smart_format", "punctuate",
    "numerals", "profanity_filter", "diarize", "diarize_model", "dictation", "filler_words", "keyterm", "keywords",
    "multichannel", "redact", "replace", "search", "tag", "extra", "mip_opt_out", "version", "callback",
    "callback_method", "detect_entities", "language_hint", "no_delay", "alternatives"})
DEEPGRAM_MODELS = ("nova", "enhanced", "base", "whisper", "flux", "general", "meeting", "phonecall")  # families
ENCODINGS = {"linear16": "pcm_s16le"}  # Deepgram's raw encodings we take -> gateway.media's
MIN_ENDPOINT_MS = 200  # our segmenter's post-roll: an endpoint cannot be shorter
WAV_TAGS = {(1, 16): "pcm_s16le", (3, 32): "pcm_f32le", (0xFFFE, 16): "pcm_s16le", (0xFFFE, 32): "pcm_f32le"}
MAX_WAV_HEADER = 65536  # bytes of a WAV stream's chunks before `data` we wait for


def requested(query: QueryParams) -> bool:
    """Whether a /v1/listen connection speaks Deepgram's protocol."""
    return query.get("protocol") == "deepgram" or not DEEPGRAM_PARAMS.isdisjoint(query)


def _bool(query: QueryParams, name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value == "true"


def _int(query: QueryParams, name: str, low: int, high: int) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {query[name]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, got {value}")
    return value


@dataclass(frozen=True)
class Options:
    """A Deepgram client's query string, validated."""

    stream: str
    model: str  # as the client named it
    language: str | None  # ISO code; None: detected
    encoding: str | None  # a gateway.media PCM encoding; None: a WAV stream, read from its header
    sample_rate: int
    channels: int
    interim_results: bool
    endpointing_ms: int | None  # None: `endpointing=false`
    utterance_end_ms: int | None
    vad_events: bool
    prompt: str | None  # keyterms and keywords

    @classmethod
    def parse(cls, query: QueryParams, config: ServeConfig) -> Options:
        model = query.get("model", "nova-3")
        resolve(None if model.split("-")[0] in DEEPGRAM_MODELS else model, config.engine.model)
        encoding = query.get("encoding")
        if encoding is not None and encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r} is not supported; use linear16, or send a WAV stream without "
                             "encoding")
        rate = _int(query, "sample_rate", 8000, 48000)
        if encoding is not None and rate is None:
            raise ValueError("sample_rate is required with encoding")
        if _bool(query, "multichannel"):
            raise ValueError("multichannel=true is not supported: channels are mixed into one transcript")
        endpointing = query.get("endpointing", "")
        if endpointing.lower() in ("false", "true", ""):
            endpoint_ms = None if endpointing.lower() == "false" else SessionConfig.endpoint_ms
        else:
            endpoint_ms = max(MIN_ENDPOINT_MS, _int(query, "endpointing", 0, 60000) or 0)
        terms = [t for name in ("keyterm", "keywords") for t in query.getlist(name)]
        stream = query.get("stream") or uuid.uuid4().hex[:12]
        if not STREAM_ID.fullmatch(stream):
            raise ValueError(f"stream must match {STREAM_ID.pattern}, got {stream!r}")
        return cls(stream=stream, model=model,
                   language=iso_language(query.get("language") or config.language),
                   encoding=ENCODINGS.get(encoding or ""), sample_rate=rate or SAMPLE_RATE,
                   channels=_int(query, "channels", 1, 8) or 1, interim_results=_bool(query, "interim_results"),
                   endpointing_ms=endpoint_ms, utterance_end_ms=_int(query, "utterance_end_ms", 1000, 60000),
                   vad_events=_bool(query, "vad_events"),
                   # "word:2" is a keyword with an intensifier: the word is what biases Whisper
                   prompt=", ".join(t.rsplit(":", 1)[0] for t in terms) or None)

    def session_config(self) -> SessionConfig:
        endpoint = self.endpointing_ms or SessionConfig.endpoint_ms  # speech_final at this silence, however short
        return SessionConfig(language=self.language, prompt=self.prompt, partials=self.interim_results,
                             endpoint_ms=endpoint, turn_ms=endpoint, empty_finals=True, words=True)


def wav_header(data: bytes) -> tuple[str, int, int, int] | None:
    """The start of a WAV stream -> (encoding, sample_rate, channels, offset of the samples), or None while the
    header is incomplete. AudioError if it is not a PCM WAV."""
    if data[:4] != b"RIFF"[:len(data)] or len(data) >= 12 and data[8:12] != b"WAVE":
        raise AudioError("the payload is not audio this server can decode: send linear16 with encoding= and "
                         "sample_rate=, or a PCM WAV stream")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"data":
            if fmt is None:
                raise AudioError("the WAV stream has no fmt chunk before its data")
            return (*fmt, pos + 8)
        if pos + 8 + size > len(data):
            return None
        if chunk == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", data[pos + 8:pos + 16])
            bits = struct.unpack("<H", data[pos + 22:pos + 24])[0]
            if (tag, bits) not in WAV_TAGS or not 1 <= channels <= 8 or not 8000 <= rate <= 48000:
                raise AudioError(f"WAV format {tag} with {bits} bits, {channels} channels at {rate} Hz is not "
                                 "supported: use 16-bit or float PCM, 1-8 channels, 8-48 kHz")
            fmt = (WAV_TAGS[tag, bits], rate, channels)
        pos += 8 + size + (size & 1)
    if len(data) > MAX_WAV_HEADER:
        raise AudioError("no WAV data chunk in the first 64 KiB of the stream")
    return None


def _words(text: str, start: float, end: float, timed: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Deepgram's words of a transcript: those of `timed` (a final's, aligned), else its words with times spread
    over [start, end] by length (an interim's estimates: see the module doc)."""
    if timed is None:
        words, total = text.split(), sum(len(w) for w in text.split()) or 1
        timed, t = [], start
        for w in words:
            span = (end - start) * len(w) / total
            timed.append({"word": w, "start": t, "end": t + span, "probability": 1.0})
            t += span
    return [{"word": w["word"].strip(".,!?;:\"'()").lower() or w["word"], "start": round(w["start"], 3),
             "end": round(w["end"], 3), "confidence": w["probability"], "punctuated_word": w["word"]} for w in timed]


class Connection(Protocol):
    """One Deepgram client: feeds its audio to the CaptionSession and answers in Deepgram's messages."""

    def __init__(self, gw: Gateway, ws: WebSocket, options: Options, session_of: Any) -> None:
        self.gw, self.ws, self.options = gw, ws, options
        self.request_id = str(uuid.uuid4())
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"livecaptions:{gw.config.engine.model}"))
        self.created = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.relay = Relay(gw, ws, options.stream, self._on_event)
        self.session: CaptionSession = session_of(self.relay.emit)
        self.relay.attach(self.session)
        self.format = None if options.encoding is None else (options.encoding, options.sample_rate, options.channels)
        self.pending = b""  # a WAV header not complete yet, or bytes of a frame split across messages
        self.digest = hashlib.sha256()  # of all the audio received: Metadata reports it
        self.open: set[int] = set()  # segments being spoken
        self.finalizing: set[int] = set()  # segments a Finalize ended
        self.utterance_end: tuple[float, float] | None = None  # (audio clock due, last word end)
        self.latest_start = -1.0  # where the latest segment started
        self._lock = asyncio.Lock()
        self.client_gone = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.client_gone:
            return
        async with self._lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except Exception:  # gone mid-send: the session goes on for the stream's viewers until we notice
                self.client_gone = True

    def _results(self, text: str, start: float, end: float, final: bool, speech_final: bool, from_finalize: bool,
                 confidence: float, words: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3), "start": start,
                "is_final": final, "speech_final": speech_final, "from_finalize": from_finalize,
                "channel": {"alternatives": [{"transcript": text, "confidence": confidence,
                                              "words": _words(text, start, end, words)}]},
                "metadata": {"request_id": self.request_id, "model_uuid": self.model_uuid,
                             "model_info": self._model_info()}}

    def _model_info(self) -> dict[str, str]:
        return {"name": self.options.model, "version": self.gw.config.engine.model, "arch": "whisper"}

    async def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.SpeechStarted):
            self.open.add(event.segment)
            self.latest_start = event.start
            if self.utterance_end is not None and event.start < self.utterance_end[0]:
                self.utterance_end = None  # speech again before the gap was long enough
            await self._utterance_end_due(event.start)
            if self.options.vad_events:
                await self.send({"type": "SpeechStarted", "channel": [0], "timestamp": event.start})
        elif isinstance(event, ev.SpeechStopped):
            self.open.discard(event.segment)
        elif isinstance(event, ev.CaptionPartial):
            await self.send(self._results(event.text, event.start, event.end, False, False, False, 0.0))
        elif isinstance(event, ev.CaptionFinal):
            finalized = event.segment in self.finalizing
            self.finalizing.discard(event.segment)
            speech_final = self.options.endpointing_ms is not None and not finalized
            await self.send(self._results(event.text, event.start, event.end, True, speech_final, finalized,
                                          round(1.0 - event.no_speech_prob, 3), event.words))
            # Finals come after their segment ended, maybe after later speech began: the gap to the next
            # segment's start, not the audio clock, says whether this was the utterance's last word.
            if self.options.utterance_end_ms and event.text:
                due, later = event.end + self.options.utterance_end_ms / 1000, self.latest_start > event.start
                if not later or self.latest_start >= due:
                    self.utterance_end = (due, event.words[-1]["end"] if event.words else event.end)
                    await self._utterance_end_due(due if later else self.session.clock)
        elif isinstance(event, ev.Error) and event.segment is not None:
            await self.send({"type": "Error", "variant": "TranscriptionError", "description": event.message,
                             "message": ""})

    async def _utterance_end_due(self, clock: float) -> None:
        """Send the pending UtteranceEnd if the audio clock `clock` has passed its gap."""
        if self.utterance_end is not None and clock >= self.utterance_end[0]:
            last_word_end, self.utterance_end = self.utterance_end[1], None
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})

    async def _audio(self, data: bytes) -> None:
        self.digest.update(data)
        data = self.pending + data
        if self.format is None:
            header = wav_header(data)
            if header is None:
                self.pending = data
                return
            *fmt, offset = header
            self.format, data = (fmt[0], fmt[1], fmt[2]), data[offset:]
        encoding, rate, channels = self.format
        whole = len(data) - len(data) % (PCM_DTYPES[encoding].itemsize * channels)
        self.pending = data[whole:]
        if whole:
            await self.session.feed(decode_pcm(data[:whole], encoding, rate, channels))
            await self._utterance_end_due(self.session.clock)

    async def _control(self, text: str) -> bool:
        """Act on one text message -> whether the client asked to close the stream."""
        try:
            message: Any = parse_json(text)
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "CloseStream":
            return True
        if kind == "Finalize":
            self.finalizing |= self.open
            await self.session.flush()
        elif kind == "Configure":
            await self.send({"type": "ConfigureFailure", "request_id": self.request_id,
                             "code": "CONFIGURE_KEYTERMS_NOT_SUPPORTED",
                             "description": "a live stream's settings are fixed: reconnect with new query parameters"})
        elif kind != "KeepAlive":  # KeepAlive: receiving it already reset the idle timer
            await self.send({"type": "Error", "variant": "SchemaError", "message": text[:1000],
                             "description": "a text message must be JSON with type KeepAlive, Finalize or CloseStream"})
        return False

    async def _metadata(self) -> None:
        await self.send({"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                         "sha256": self.digest.hexdigest(), "created": self.created,
                         "duration": round(self.session.clock, 3), "channels": self.options.channels,
                         "models": [self.model_uuid], "model_info": {self.model_uuid: self._model_info()}})

    async def run(self) -> None:
        await self.session.start()
        await receive(self.gw, self.ws, self)

    async def audio(self, data: bytes) -> None:
        try:
            await self._audio(data)
        except AudioError as e:  # Deepgram's DATA-0000: the payload cannot be decoded as audio
            raise Ended(1008, str(e)) from None

    async def text(self, text: str) -> bool:
        return await self._control(text)

    async def idle(self, over_time: bool) -> None:  # Deepgram's NET-0001: no audio or KeepAlive in time
        await self.session.close()  # finals first
        await close(self.ws, 1011, "NET-0001")

    async def finish(self) -> None:
        await self.session.close()
        await self._metadata()
        await close(self.ws, 1000)

    async def refuse(self, e: Ended) -> None:
        await self.send({"type": "Error", "variant": "DATA-0000", "description": e.message, "message": ""})
        await self.session.abort()
        await close(self.ws, e.code, "DATA-0000")

    async def failed(self) -> None:
        await self.session.abort()
        await close(self.ws, 1011, "NET-0000")


async def _deny(ws: WebSocket, status: int, message: str, request_id: str) -> None:
    """Refuse the handshake with an HTTP response, as Deepgram does."""
    reason = {400: "Bad Request", 409: "Conflict", 429: "Too Many Requests", 503: "Service Unavailable"}
    await ws.send_denial_response(JSONResponse({"err_code": reason.get(status, "Error"), "err_msg": message,
                                                "request_id": request_id}, status_code=status,
                                               headers={"dg-request-id": request_id}))


async def listen(ws: WebSocket) -> None:
    """/v1/listen for a Deepgram client (gateway/ingest.py hands it over before accepting the socket)."""
    gw: Gateway = ws.app.state.gateway
    try:
        options = Options.parse(ws.query_params, gw.config)
    except ValueError as e:
        return await _deny(ws, 400, str(e), str(uuid.uuid4()))
    try:
        async with admitted(gw, ws, options.stream, {"protocol": "deepgram",
                                                      "language": options.language or "auto"}) as live:
            engine = gw.engine
            assert engine is not None

            def session_of(emit: Any) -> CaptionSession:
                session = CaptionSession(options.stream, engine, options.session_config(), emit=emit)
                live.attach(session)
                return session

            try:
                connection = Connection(gw, ws, options, session_of)
            except ValueError as e:  # a language this model does not know
                return await _deny(ws, 400, str(e), str(uuid.uuid4()))
            await ws.accept(headers=[(b"dg-request-id", connection.request_id.encode())])
            await connection.run()
    except Refused as e:
        await _deny(ws, e.status, e.message, str(uuid.uuid4()))
