"""What every compatible HTTP endpoint does around its transcription, whatever the vendor's request shape.

Auth and the body-size limit have run before a route (gateway/auth.py, gateway/limits.py middleware). `Endpoint`
holds the caller's per-key stream limit from the handler's start until its response is sent, a streamed one
included, and turns ApiError/LimitError into their JSON bodies. The helpers below check readiness, decode audio
off the event loop within `max_audio_s`, build the engine's options, stream a transcript as deltas with its usage,
and frame server-sent events."""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.compat.errors import ApiError
from gateway.limits import LimitError
from gateway.media import SAMPLE_RATE, AudioError, TooLong, decode_file, decode_pcm
from gateway.offline import Piece, check_signal, engine_batches, pieces, separator
from gateway.state import Gateway

if TYPE_CHECKING:  # torch: reached through gw.engine only
    from engine.messages import DecodeOptions
    from engine.service import Engine

AUDIO_TOKENS_PER_S = 50  # Whisper's encoder: 100 mel frames per second, halved by its strided convolution
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # as gateway/sse.py: no proxy buffering

Handler = Callable[[Request, Gateway], Awaitable[Response]]


class Endpoint:
    """An ASGI route around `handler(request, gw)`: per-key stream limit held for the whole response, JSON errors."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        gw: Gateway = request.app.state.gateway
        try:
            async with gw.limits.stream(request.state.grant):
                response = await self.handler(request, gw)
                await response(scope, receive, send)
        except ApiError as e:
            await e.response()(scope, receive, send)
        except LimitError as e:
            await JSONResponse(e.body(), status_code=e.status)(scope, receive, send)
        except ClientDisconnect:  # gone while its body was read: nobody to answer
            pass


def ready_engine(gw: Gateway) -> Engine:
    if gw.draining:
        raise ApiError(503, "the server is shutting down: retry on another instance", code="draining")
    if gw.engine is None:
        raise ApiError(503, "the model is still loading: retry shortly", code="not_ready")
    return gw.engine


@dataclass(frozen=True)
class Pcm:
    """Raw PCM's layout (a container says it itself)."""

    encoding: str  # pcm_s16le | pcm_f32le
    sample_rate: int
    channels: int


async def decode(gw: Gateway, source: bytes | BinaryIO, param: str, pcm: Pcm | None = None) -> np.ndarray:
    """Uploaded audio -> 16 kHz mono float32, decoded in a thread; 400 if unusable, 413 over max_audio_s."""
    limit = gw.config.max_audio_s or None

    def run() -> np.ndarray:
        if pcm is None:
            audio = decode_file(source, max_s=limit)
        else:
            data = source if isinstance(source, bytes) else source.read()
            audio = decode_pcm(data, pcm.encoding, pcm.sample_rate, pcm.channels, max_s=limit)
        check_signal(audio, "audio")
        return audio

    try:
        return await asyncio.to_thread(run)
    except TooLong as e:
        raise ApiError(413, f"{e} (--max-audio-s)", param=param, code="audio_too_long") from None
    except AudioError as e:
        raise ApiError(400, str(e), param=param, code="invalid_audio") from None


def decode_options(engine: Engine, language: str | None, prompt: str | None, task: str = "transcribe",
                   param: str = "language", words: bool = False) -> DecodeOptions:
    """The engine's options for one request (`words`: time each word); a language the model does not know is a
    400."""
    from engine.messages import DecodeOptions

    lang = None if language in (None, "", "auto") else language
    try:
        engine.check_language(lang)
    except ValueError:
        raise ApiError(400, f"unsupported language {lang!r}; use an ISO 639-1 code such as 'en' or 'zh', or 'auto'",
                       param=param, code="unsupported_language") from None
    try:
        return DecodeOptions(language=lang, task=task, prompt=prompt or None, word_timestamps=words)
    except ValueError as e:  # the prompt's length
        raise ApiError(400, str(e), param="prompt", code="invalid_value") from None


class Deltas:
    """A file's transcript as text deltas, each as soon as its window is decoded: iterate for (piece, delta) of
    every spoken window; the deltas concatenate to `text`. `form(text, language)` rewrites each piece's text
    (e.g. the spoken form of gateway/compat/itn.py)."""

    def __init__(self, engine: Engine, audio: np.ndarray, options: DecodeOptions,
                 form: Callable[[str, str], str] = lambda text, language: text) -> None:
        self.engine, self.audio, self.options, self.form = engine, audio, options, form
        self.stream = f"http:{uuid.uuid4().hex}"  # the engine requests' owner: cancelled together
        self.pieces: list[Piece] = []  # every window so far, silent ones included
        self.text = ""

    @property
    def audio_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    async def __aiter__(self) -> AsyncIterator[tuple[Piece, str]]:
        previous = None
        async for piece in pieces(self.audio, self.options, engine_batches(self.engine, self.stream),
                                  self.engine.max_batch):
            self.pieces.append(piece)
            if piece.transcript.text:
                language = piece.transcript.result.language
                delta = separator(previous, language) + self.form(piece.transcript.text, language)
                self.text, previous = self.text + delta, language
                yield piece, delta

    def usage(self) -> dict[str, Any]:
        return usage(self.engine, self.audio_s, self.options.prompt,
                     sum(len(p.transcript.result.tokens) for p in self.pieces))


def usage(engine: Engine, audio_s: float, prompt: str | None, output_tokens: int) -> dict[str, Any]:
    """Token usage as the vendors report it: audio frames and prompt tokens in, text tokens out."""
    text_tokens = engine.count_tokens(prompt) if prompt else 0
    audio_tokens = round(audio_s * AUDIO_TOKENS_PER_S)
    return {"type": "tokens", "input_tokens": audio_tokens + text_tokens,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            "output_tokens": output_tokens, "total_tokens": audio_tokens + text_tokens + output_tokens}


def event_stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Server-sent events: one `data: <json>` per event, nothing else (no `event:` lines, no `[DONE]`)."""

    async def frames() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)
