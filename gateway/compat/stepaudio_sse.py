"""StepFun's StepAudio 2.5 ASR over HTTP + SSE: `POST /v1/audio/asr/sse`, as StepFun documents it.

Request (JSON): {"audio": {"data": BASE64, "input": {"transcription": {"model", "language", "enable_itn",
"enable_timestamp", "prompt", "hotwords"}, "format": {"type", "codec", "rate", "bits", "channel"}}}}; `rate`,
`bits` and `channel` are required for raw `pcm`, a container (wav, ogg, mp3, m4a, ...) describes itself.

Response: `data: {json}` lines only, closed after the done event. One `transcript.text.delta` per transcribed window
as soon as its batch is decoded (gateway/offline.py `pieces`: a long file's first delta comes long before the
last window is decoded), deltas that concatenate to the done event's `text`; then `transcript.text.done` with
`usage` and `audio_seconds`. A failure once the stream has begun is an `error` event. Before it, an HTTP status
with a JSON error body (gateway/compat/errors.py)."""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from gateway.compat import itn
from gateway.compat.errors import ApiError
from gateway.compat.intake import Deltas, Pcm, decode, decode_options, event_stream, ready_engine
from gateway.compat.models import UnknownModel, resolve
from gateway.errors import parse_json
from gateway.media import PCM_DTYPES
from gateway.offline import words
from gateway.state import Gateway

if TYPE_CHECKING:  # torch: reached through gw.engine only
    from engine.messages import DecodeOptions
    from engine.service import Engine

log = logging.getLogger("livecaptions.compat.stepaudio")

CONTAINERS = ("wav", "ogg", "mp3", "m4a", "flac", "webm", "opus", "aac")  # FFmpeg reads each; it sniffs, not trusts
BASE64_SPACE = b" \t\r\n"  # wrapped base64 (e.g. `base64` without -w0) is accepted


@dataclass(frozen=True)
class AsrRequest:
    """The request body, validated."""

    data: bytes  # the audio, base64-decoded
    pcm: Pcm | None  # raw PCM's layout; None: a container
    model: str  # the engine model it resolves to
    language: str | None
    enable_itn: bool
    enable_timestamp: bool
    prompt: str | None  # the client's prompt and hotwords, as Whisper's initial prompt

    @classmethod
    def parse(cls, body: Any, served: str) -> AsrRequest:
        audio = _field(body, "audio", dict, "", required=True)
        data = _field(audio, "data", str, "audio.", required=True)
        inp = _field(audio, "input", dict, "audio.", required=True)
        tr = _field(inp, "transcription", dict, "audio.input.") or {}
        fmt = _field(inp, "format", dict, "audio.input.", required=True)
        try:
            model = resolve(_field(tr, "model", str, "audio.input.transcription."), served)
        except UnknownModel as e:
            raise ApiError(400, str(e), param="audio.input.transcription.model", code="model_not_found") from None
        hotwords = _field(tr, "hotwords", list, "audio.input.transcription.") or []
        if not all(isinstance(w, str) for w in hotwords):
            raise ApiError(400, "audio.input.transcription.hotwords must be a list of strings",
                           param="audio.input.transcription.hotwords")
        prompt = " ".join(p for p in (_field(tr, "prompt", str, "audio.input.transcription."), ", ".join(hotwords)) if p)
        itn_on, timestamps = (_field(tr, name, bool, "audio.input.transcription.") for name in ("enable_itn", "enable_timestamp"))
        try:
            raw = base64.b64decode(data.encode().translate(None, BASE64_SPACE), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ApiError(400, f"audio.data is not valid base64 ({e})", param="audio.data", code="invalid_base64") from None
        if not raw:
            raise ApiError(400, "audio.data is empty", param="audio.data", code="invalid_audio")
        return cls(raw, _pcm(fmt), model, _field(tr, "language", str, "audio.input.transcription."),
                   itn_on is not False, timestamps is True, prompt or None)


def _field(obj: dict, name: str, kind: type, path: str, required: bool = False) -> Any:
    """obj[name] if it is a `kind` (None if absent and optional); a 400 naming the field otherwise."""
    value = obj.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"missing field {path}{name}", param=path + name, code="missing_field")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"{path}{name} must be {_KINDS[kind]}", param=path + name, code="invalid_field")
    return value


_KINDS = {dict: "an object", str: "a string", list: "an array", bool: "a boolean", int: "an integer"}


def _pcm(fmt: dict) -> Pcm | None:
    """audio.input.format -> raw PCM's layout, or None for a container; 400 for an unsupported or incomplete one."""
    path = "audio.input.format."
    kind = _field(fmt, "type", str, path, required=True)
    if kind in CONTAINERS:
        return None
    if kind != "pcm":
        raise ApiError(400, f"unsupported audio format type {kind!r}; use pcm or one of {', '.join(CONTAINERS)}",
                       param=path + "type", code="unsupported_format")
    codec = _field(fmt, "codec", str, path) or "pcm_s16le"
    if codec not in PCM_DTYPES:
        raise ApiError(400, f"unsupported pcm codec {codec!r}; use one of {', '.join(PCM_DTYPES)}", param=path + "codec",
                       code="unsupported_format")
    rate, bits, channel = (_field(fmt, name, int, path, required=True) for name in ("rate", "bits", "channel"))
    if bits != PCM_DTYPES[codec].itemsize * 8:
        raise ApiError(400, f"bits {bits} does not match codec {codec} ({PCM_DTYPES[codec].itemsize * 8} bits)",
                       param=path + "bits", code="invalid_field")
    if not 8000 <= rate <= 192000 or not 1 <= channel <= 8:
        raise ApiError(400, f"rate must be 8000..192000 and channel 1..8, got {rate} and {channel}", param=path + "rate",
                       code="invalid_field")
    return Pcm(codec, rate, channel)


def _parse(raw: bytes, served: str) -> AsrRequest:
    try:
        body = parse_json(raw)
    except ValueError as e:  # UnicodeDecodeError included
        raise ApiError(400, f"the body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object with an `audio` field", code="invalid_json")
    return AsrRequest.parse(body, served)


async def asr_sse(request: Request, gw: Gateway) -> Response:
    engine = ready_engine(gw)
    # Up to max_body_bytes of JSON and base64: parsed in a thread, like the audio decoding after it.
    req = await asyncio.to_thread(_parse, await request.body(), gw.config.engine.model)
    options = decode_options(engine, req.language, req.prompt, param="audio.input.transcription.language",
                             words=req.enable_timestamp)
    audio = await decode(gw, req.data, "audio.data", req.pcm)
    return event_stream(_events(engine, req, options, audio))


async def _events(engine: Engine, req: AsrRequest, options: DecodeOptions,
                  audio: np.ndarray) -> AsyncIterator[dict[str, Any]]:
    session = uuid.uuid4().hex

    def meta() -> dict[str, Any]:
        return {"session_id": session, "timestamp": int(time.time() * 1000)}

    deltas = Deltas(engine, audio, options, form=(lambda text, language: text) if req.enable_itn else itn.spoken)
    try:
        async for piece, delta in deltas:
            event: dict[str, Any] = {"type": "transcript.text.delta", "meta": meta(), "delta": delta}
            if req.enable_timestamp:
                event.update(item_id=f"item_{session}", content_index=piece.index,
                             start_time=round(piece.start * 1000), end_time=round(piece.end * 1000),
                             words=[{"word": w["word"], "start_time": round(w["start"] * 1000),
                                     "end_time": round(w["end"] * 1000)} for w in words(piece) or []])
            yield event
        yield {"type": "transcript.text.done", "meta": meta(), "text": deltas.text, "usage": deltas.usage(),
               "audio_seconds": round(deltas.audio_s, 3)}
    except Exception:  # the stream has begun: the failure is an event, the status stays 200
        log.exception("asr sse %s failed", session)
        yield {"type": "error", "meta": meta(), "message": "transcription failed on the server"}
