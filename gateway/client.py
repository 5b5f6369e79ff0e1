"""A client of the ingest socket `/v1/listen`, for programs and for `livecaptions listen`.

    async for event in listen("ws://127.0.0.1:8000", file_source("talk.mp3"), language="en"):
        if event.type == "caption.final":
            print(event.text)

`source` is any async iterable of 16 kHz mono float32 chunks (`file_source` paces a file like a live source,
`mic_source` records the microphone). When it ends the client asks the server to close the session; the iteration
ends once every final has arrived. A refused or failed session raises ListenError after its error event."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway import events as ev
from gateway.media import SAMPLE_RATE, decode_file
from gateway.playback import paced

MIC_BLOCK_MS = 40


class ListenError(Exception):
    def __init__(self, code: int | None, reason: str, error: ev.Error | None) -> None:
        detail = error.message if error is not None else reason or "no reason given"
        super().__init__(f"the server closed the session with {code}: {detail}")
        self.code, self.reason, self.error = code, reason, error


def listen_url(url: str, **params: object) -> str:
    """`url` (ws[s]:// or http[s]://, with or without /v1/listen) -> the ingest URL with `params` (None: left out)."""
    parts = urlsplit(url if "://" in url else "ws://" + url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"the server URL must be ws://, wss://, http:// or https://, got {url!r}")
    path = parts.path.rstrip("/")
    path = path if path.endswith("/v1/listen") else path + "/v1/listen"
    query = urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items() if v is not None})
    return urlunsplit((scheme, parts.netloc, path, query, ""))


async def listen(url: str, source: AsyncIterable[np.ndarray], *, stream: str | None = None,
                 language: str | None = None, partials: bool | None = None, endpointing_ms: int | None = None,
                 turn_ms: int | None = None, api_key: str | None = None,
                 token: str | None = None) -> AsyncIterator[ev.Event]:
    """Stream `source` to the server at `url`; yield its caption events (gateway/events.py) until the session ends."""
    target = listen_url(url, stream=stream, language=language, partials=partials, endpointing_ms=endpointing_ms,
                        turn_ms=turn_ms, token=token, encoding="pcm_s16le", sample_rate=SAMPLE_RATE)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with connect(target, additional_headers=headers, max_size=None) as ws:
        sender = asyncio.create_task(_send(ws, source))
        error: ev.Error | None = None
        try:
            async for message in ws:
                event = ev.from_json(json.loads(message))
                error = event if isinstance(event, ev.Error) else error
                yield event
        except ConnectionClosed:
            pass
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        if sender.done() and not sender.cancelled() and (exc := sender.exception()) is not None:
            raise exc  # the source failed (e.g. an unreadable file): that, not the close, is the news
        if ws.close_code != 1000:
            raise ListenError(ws.close_code, ws.close_reason or "", error)


async def _send(ws: ClientConnection, source: AsyncIterable[np.ndarray]) -> None:
    try:
        async for chunk in source:
            await ws.send((np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes())
        await ws.send(json.dumps({"type": "close"}))  # the server sends the remaining finals, then closes 1000
    except ConnectionClosed:
        pass  # the server ended the session: the receiving side reports why


def file_source(path: str | Path, speed: float = 1.0) -> AsyncIterator[np.ndarray]:
    """A file (any container FFmpeg reads) played at `speed` times real time (0: as fast as the socket takes it).
    Decoded now, so a missing or unreadable file is an AudioError before anything connects."""
    return paced(decode_file(path), speed)


async def mic_source(device: int | str | None = None) -> AsyncIterator[np.ndarray]:
    """The microphone, in MIC_BLOCK_MS chunks (needs the optional `sounddevice` package and PortAudio)."""
    try:
        import sounddevice  # type: ignore[import-not-found]
    except (ImportError, OSError) as e:
        raise RuntimeError(f"--mic needs the sounddevice package and PortAudio (pip install sounddevice): {e}") from None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue()

    def captured(data: np.ndarray, frames: int, time: object, status: object) -> None:  # PortAudio's thread
        loop.call_soon_threadsafe(queue.put_nowait, data[:, 0].copy())

    with sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=device,
                                 blocksize=SAMPLE_RATE * MIC_BLOCK_MS // 1000, callback=captured):
        while True:
            yield await queue.get()
