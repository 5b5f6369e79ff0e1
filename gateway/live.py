"""`livecaptions transcribe --live FILE`: play a file through a CaptionSession as if it were a live source, and show
the captions as a viewer would get them.

The file is fed in CHUNK_MS chunks, each when a live source would have produced it (`speed` times real time; 0: as
fast as possible). Captions are labelled `[end +lag]`: where the caption's audio ends, and how far the live audio
clock had got past that when the caption came out. The live clock is the audio fed so far; after the file ends it
goes on with the wall clock (times `speed`), as a microphone would, so the last finals show their real lag too."""
from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np

from engine.service import Engine
from gateway import events as ev
from gateway.media import SAMPLE_RATE
from gateway.session import CaptionSession, SessionConfig

CHUNK_MS = 50  # a typical live frame: small enough that pacing stays smooth, big enough to keep the loop idle


async def play(session: CaptionSession, audio: np.ndarray, speed: float = 1.0, chunk_ms: int = CHUNK_MS) -> None:
    """Feed `audio` to `session` at `speed` times real time (0: no waiting), then close it (every final out)."""
    if speed < 0 or chunk_ms <= 0:
        raise ValueError(f"speed must be >= 0 and chunk_ms > 0, got {speed} and {chunk_ms}")
    step = SAMPLE_RATE * chunk_ms // 1000
    t0 = time.monotonic()
    for i in range(0, len(audio), step):
        chunk = audio[i : i + step]
        # A live source delivers a chunk once it has been spoken: sleep until then (on a shared schedule: no drift).
        ready = t0 + (i + len(chunk)) / SAMPLE_RATE / speed if speed else 0.0
        await asyncio.sleep(max(0.0, ready - time.monotonic()))  # sleep(0) still lets decoded captions out
        await session.feed(chunk)
    await session.close()


class Printer:
    """The session's `emit`: JSON lines, or captions for people (partials rewritten in place on a terminal)."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout, tty: bool | None = None) -> None:
        self.as_json, self.out = as_json, out
        self.tty = out.isatty() if tty is None else tty
        self.clock: Callable[[], float] = lambda: 0.0  # the live audio clock, set once the session exists
        self.counts: dict[str, int] = {}
        self.lags: dict[str, list[float]] = {ev.CaptionPartial.type: [], ev.CaptionFinal.type: []}
        self._partial_shown = False

    async def __call__(self, event: ev.Event) -> None:
        self.counts[event.type] = self.counts.get(event.type, 0) + 1
        if event.type in self.lags:
            self.lags[event.type].append(self.clock() - event.end)
        if self.as_json:
            self._write(json.dumps(ev.to_json(event), ensure_ascii=False) + "\n")
        elif isinstance(event, ev.SessionEnded):
            self._clear()  # a preview whose final never came (no words after all) must not stay on screen
        elif isinstance(event, ev.Error):
            self._clear()
            print(f"error: {event.message}", file=sys.stderr, flush=True)
        elif isinstance(event, ev.CaptionFinal):
            self._clear()
            self._write(f"{self._label(event)} {event.text}\n")
        elif isinstance(event, ev.CaptionPartial) and self.tty:  # a partial is only useful if it can be replaced
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be rewritten with \r
            self._write(f"\r\x1b[K{f'{self._label(event)} {event.text}'[:width]}")
            self._partial_shown = True

    def _label(self, event: ev.CaptionPartial | ev.CaptionFinal) -> str:
        return f"[{event.end:5.2f}s +{self.clock() - event.end:.2f}s]"

    def _clear(self) -> None:
        if self._partial_shown:
            self._write("\r\x1b[K")
            self._partial_shown = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


async def run(runner, audio: np.ndarray, stream: str, config: SessionConfig, speed: float, printer: Printer) -> CaptionSession:
    """One file, live, through an engine of its own over `runner` -> the finished session."""
    engine = Engine(runner)
    try:
        session = CaptionSession(stream, engine, config, emit=printer)
        t0 = time.monotonic()
        printer.clock = lambda: max(session.clock, (time.monotonic() - t0) * speed) if speed else session.clock
        await play(session, audio, speed)
        return session
    finally:
        await asyncio.to_thread(engine.close)


def summary(printer: Printer) -> str:
    """One line for people: how many captions, and how far behind the live audio they came."""
    parts = []
    for kind, lags in printer.lags.items():
        name = kind.split(".")[1] + "s"
        parts.append(f"{len(lags)} {name}" + (f" (lag mean {sum(lags) / len(lags):.2f} s, max {max(lags):.2f} s)" if lags else ""))
    return ", ".join(reversed(parts))
