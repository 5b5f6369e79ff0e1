"""`livecaptions transcribe --live FILE`: play a file through a CaptionSession as if it were a live source, and show
the captions as a viewer would get them (gateway/printer.py).

The live clock is the audio fed so far; after the file ends it goes on with the wall clock (times `speed`), as a
microphone would, so the last finals show their real lag too."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from gateway.playback import CHUNK_MS, paced
from gateway.printer import Printer
from gateway.session import CaptionSession, SessionConfig


async def play(session: CaptionSession, audio: np.ndarray, speed: float = 1.0, chunk_ms: int = CHUNK_MS) -> None:
    """Feed `audio` to `session` at `speed` times real time (0: no waiting), then close it (every final out)."""
    async for chunk in paced(audio, speed, chunk_ms):
        await session.feed(chunk)
    await session.close()


async def run(runner, audio: np.ndarray, stream: str, config: SessionConfig, speed: float, printer: Printer) -> CaptionSession:
    """One file, live, through an engine of its own over `runner` -> the finished session."""
    from engine.service import Engine  # torch: loaded with the runner, not when the gateway is imported

    engine = Engine(runner)
    try:
        session = CaptionSession(stream, engine, config, emit=printer)
        t0 = time.monotonic()
        printer.clock = lambda: max(session.clock, (time.monotonic() - t0) * speed) if speed else session.clock
        printer.speed = speed
        await play(session, audio, speed)
        return session
    finally:
        await asyncio.to_thread(engine.close)
