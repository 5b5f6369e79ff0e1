"""Audio played as a live source: chunks handed out when a microphone would have produced them."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from gateway.media import SAMPLE_RATE

CHUNK_MS = 50  # a typical live frame: small enough that pacing stays smooth, big enough to keep the loop idle


async def paced(audio: np.ndarray, speed: float = 1.0, chunk_ms: int = CHUNK_MS) -> AsyncIterator[np.ndarray]:
    """`audio` (16 kHz) in `chunk_ms` chunks, each once it has been spoken at `speed` times real time (0: at once)."""
    if speed < 0 or chunk_ms <= 0:
        raise ValueError(f"speed must be >= 0 and chunk_ms > 0, got {speed} and {chunk_ms}")
    step = SAMPLE_RATE * chunk_ms // 1000
    t0 = time.monotonic()
    for i in range(0, len(audio), step):
        chunk = audio[i : i + step]
        ready = t0 + (i + len(chunk)) / SAMPLE_RATE / speed if speed else 0.0  # one shared schedule: no drift
        await asyncio.sleep(max(0.0, ready - time.monotonic()))  # sleep(0) still lets other tasks run
        yield chunk
