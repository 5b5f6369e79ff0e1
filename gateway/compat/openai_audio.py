"""OpenAI's audio API: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations` (to English), `GET /v1/models`.

Multipart fields as OpenAI documents them: `file`, `model`, `language` (transcriptions only), `prompt`,
`response_format` (json | text | verbose_json | srt | vtt), `temperature` (0 only: decoding is greedy),
`timestamp_granularities[]` (segment, word: verbose_json only; words are timed from the cross-attention,
engine/alignment.py), `stream` (json or text only): server-sent
`transcript.text.delta` {type, delta} per decoded window, then `transcript.text.done` {type, text, usage}.
Unknown fields are ignored, as clients send options we need not act on (`chunking_strategy`: we always cut at
silence). The model names OpenAI clients send are aliases of the served model (gateway/compat/models.py)."""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from gateway.compat.errors import ApiError
from gateway.compat.intake import Deltas, decode, decode_options, event_stream, ready_engine
from gateway.compat.languages import name_of
from gateway.compat.models import UnknownModel, resolve, served_names
from gateway.offline import assemble, words
from gateway.state import Gateway
from gateway.subtitles import MEDIA_TYPES, to_srt, to_vtt

if TYPE_CHECKING:
    from gateway.offline import FileTranscript

log = logging.getLogger("livecaptions.compat.openai")

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
STREAM_FORMATS = ("json", "text")
MEL_FRAMES_PER_S = 100  # Whisper's `seek` counts 10 ms mel frames


@dataclass(frozen=True)
class AudioForm:
    """The form fields of one request, validated (the file is read separately)."""

    model: str  # the engine model it resolves to
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool
    granularities: frozenset[str] = frozenset()  # of timestamp_granularities[]: segment, word

    @classmethod
    def parse(cls, form: FormData, task: str, served: str) -> AudioForm:
        text = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        if not text.get("model"):
            raise ApiError(400, "you must provide a model parameter", param="model", code="missing_field")
        try:
            model = resolve(text["model"], served)
        except UnknownModel as e:
            raise ApiError(400, str(e), param="model", code="model_not_found") from None
        fmt = text.get("response_format") or "json"
        if fmt not in FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}",
                           param="response_format", code="invalid_value")
        try:
            temperature = float(text.get("temperature") or 0)
        except ValueError:
            raise ApiError(400, "temperature must be a number", param="temperature", code="invalid_value") from None
        if temperature != 0:
            raise ApiError(400, f"only temperature 0 is supported (decoding is greedy), got {temperature:g}",
                           param="temperature", code="unsupported_value")
        granularities = frozenset(map(str, form.getlist("timestamp_granularities[]")))
        if unsupported := granularities - {"segment", "word"}:
            raise ApiError(400, f"timestamp granularities {', '.join(sorted(unsupported))} are not supported; "
                                "use segment and/or word", param="timestamp_granularities", code="invalid_value")
        if granularities and fmt != "verbose_json":
            raise ApiError(400, "timestamp_granularities need response_format verbose_json",
                           param="timestamp_granularities", code="invalid_value")
        if form.getlist("include[]"):
            raise ApiError(400, "include[] (logprobs) is not supported", param="include", code="unsupported_value")
        stream = (text.get("stream") or "false").lower() in ("true", "1")
        if stream and fmt not in STREAM_FORMATS:
            raise ApiError(400, f"stream=true needs response_format json or text, got {fmt!r}", param="stream",
                           code="unsupported_value")
        if task == "translate" and text.get("language"):
            raise ApiError(400, "translations take no language: the source language is detected", param="language",
                           code="invalid_value")
        return cls(model, text.get("language"), text.get("prompt"), fmt, stream, granularities)


async def transcriptions(request: Request, gw: Gateway) -> Response:
    return await _handle(request, gw, "transcribe")


async def translations(request: Request, gw: Gateway) -> Response:
    return await _handle(request, gw, "translate")


async def _handle(request: Request, gw: Gateway, task: str) -> Response:
    engine = ready_engine(gw)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "the body must be multipart/form-data with a `file` and a `model`", code="invalid_content_type")
    try:
        form = await request.form(max_files=1, max_fields=64)
    except MultiPartException as e:
        raise ApiError(400, f"invalid multipart body: {e.message}", code="invalid_multipart") from None
    try:
        fields = AudioForm.parse(form, task, gw.config.engine.model)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "you must provide a file (an audio file upload)", param="file", code="missing_field")
        # subtitles are cut into lines at word times (gateway/subtitles.py)
        timed = "word" in fields.granularities or fields.response_format in ("srt", "vtt")
        options = decode_options(engine, fields.language, fields.prompt, task, words=timed)
        audio = await decode(gw, upload.file, "file")
        name = upload.filename or "audio"
    finally:
        await form.close()
    deltas = Deltas(engine, audio, options)
    if fields.stream:
        return event_stream(_events(deltas))
    t0 = time.perf_counter()
    async for _ in deltas:
        pass
    result = assemble(name, deltas.pieces, deltas.audio_s, time.perf_counter() - t0, options.language or "en")
    return _render(result, deltas, fields, task)


async def _events(deltas: Deltas) -> AsyncIterator[dict[str, Any]]:
    try:
        async for _, delta in deltas:
            yield {"type": "transcript.text.delta", "delta": delta}
        yield {"type": "transcript.text.done", "text": deltas.text, "usage": deltas.usage()}
    except Exception:  # begun streaming: an error event the official client raises as APIError
        log.exception("transcription stream %s failed", deltas.stream)
        yield {"type": "error", "error": ApiError(500, "transcription failed on the server").body()["error"]}


def _render(result: FileTranscript, deltas: Deltas, fields: AudioForm, task: str) -> Response:
    fmt = fields.response_format
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt in ("srt", "vtt"):
        cues = [asdict(s) for s in result.segments]
        return Response(to_srt(cues) if fmt == "srt" else to_vtt(cues), media_type=MEDIA_TYPES[fmt])
    duration = {"type": "duration", "seconds": round(result.audio_s, 3)}
    if fmt == "json":
        return JSONResponse({"text": result.text, "usage": duration})
    spoken = [p for p in deltas.pieces if p.transcript.text]
    segments = [{"id": i, "seek": round(p.start * MEL_FRAMES_PER_S), "start": p.start, "end": p.end,
                 "text": p.transcript.text, "tokens": list(p.transcript.result.tokens), "temperature": 0.0,
                 "avg_logprob": round(p.transcript.result.avg_logprob, 4),
                 "compression_ratio": round(p.transcript.result.compression_ratio, 4),
                 "no_speech_prob": round(p.transcript.result.no_speech_prob, 4)} for i, p in enumerate(spoken)]
    body = {"task": task, "language": name_of(result.language), "duration": round(result.audio_s, 3),
            "text": result.text}
    if "word" in fields.granularities:
        body["words"] = [{k: w[k] for k in ("word", "start", "end")} for p in spoken for w in words(p) or []]
    if "word" not in fields.granularities or "segment" in fields.granularities:  # word alone: words only, as OpenAI
        body["segments"] = segments
    return JSONResponse(body | {"usage": duration})


CREATED = 0  # unix time of "creation" in model objects: unknown for a local model, so the epoch


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "livecaptions"}


async def models(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return JSONResponse({"object": "list", "data": [_model(n) for n in served_names(gw.config.engine.model)]})


async def model(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    name = request.path_params["model"]
    if name not in served_names(gw.config.engine.model):
        return ApiError(404, f"the model {name!r} does not exist here", param="model", code="model_not_found").response()
    return JSONResponse(_model(name))
