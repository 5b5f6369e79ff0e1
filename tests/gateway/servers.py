"""Test helpers for the service: tiny HTTP/SSE clients and audio streaming; the server process is support/server.py's."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np

from gateway.media import decode_file
from support.server import LIVECAPTIONS, Server, free_port, get, serving  # noqa: F401 (the tests' one way in)
from support.speech import SPEECH

JFK = SPEECH / "jfk.wav"


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def jfk_pcm() -> bytes:
    return pcm16(decode_file(JFK))


async def stream_audio(ws: Any, pcm: bytes, frame_ms: int = 40, speed: float = 10.0, rate: int = 16000) -> None:
    """Send s16le mono `pcm` in `frame_ms` frames at `speed` times real time."""
    step = rate * 2 * frame_ms // 1000
    t0 = time.monotonic()
    for i in range(0, len(pcm), step):
        await ws.send(pcm[i:i + step])
        await asyncio.sleep(max(0.0, t0 + (i + step) / (rate * 2) / speed - time.monotonic()))


async def receive_all(ws: Any, timeout: float = 120) -> list[dict]:
    """Every event until the server closes the socket."""
    from websockets.exceptions import ConnectionClosed

    out = []
    async with asyncio.timeout(timeout):
        try:
            async for message in ws:
                out.append(json.loads(message))
        except ConnectionClosed:
            pass
    return out


class SSE:
    """A minimal SSE client over asyncio streams (HTTP/1.0: no chunked encoding to undo)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int,
                 headers: dict[str, str] | None = None) -> None:
        self.reader, self.writer, self.status = reader, writer, status
        self.body = b""  # of a refusal
        self.headers = headers or {}  # response headers, names lower-cased

    @classmethod
    async def open(cls, port: int, path: str, last_event_id: str | None = None) -> SSE:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        if last_event_id is not None:
            head += f"Last-Event-ID: {last_event_id}\r\n"
        writer.write((head + "\r\n").encode())
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        sse = cls(reader, writer, status, headers)
        if status != 200:  # a refusal: its body is the error, and the connection is of no further use
            sse.body = await reader.read()
            await sse.close()
        else:
            comment = await sse.next_block()  # "retry + : subscribed": live from here on
            assert comment is not None and comment.get("id") is None
        return sse

    async def next_block(self) -> dict[str, str] | None:
        """The next blank-line-terminated block as {field: value} (comments under ":"); None at the end."""
        block: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if not line:
                return None
            line = line.decode().rstrip("\r\n")
            if not line:
                return block
            name, _, value = line.partition(":")
            block[name or ":"] = value.removeprefix(" ")

    async def event(self, timeout: float = 120) -> tuple[str, dict] | None:
        """The next (id, event), skipping comments; None when the response ends."""
        async with asyncio.timeout(timeout):
            while (block := await self.next_block()) is not None:
                if "data" in block:
                    return block["id"], json.loads(block["data"])
        return None

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
