"""Captions for people on a terminal (or JSON lines for programs): `transcribe --live` and `listen` both print
with this. Each caption is labelled `[end +lag]`: where its audio ends, and how far the live audio clock had got
past that when the caption came out."""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import TextIO

from gateway import events as ev


class Printer:
    """The session's `emit`: JSON lines, or captions for people (partials rewritten in place on a terminal)."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout, tty: bool | None = None) -> None:
        self.as_json, self.out = as_json, out
        self.tty = out.isatty() if tty is None else tty
        self.clock: Callable[[], float] = lambda: 0.0  # the live audio clock, set once the session exists
        self.speed = 1.0  # audio seconds played per wall second: lags are shown in wall seconds
        self.on_gone: Callable[[], None] = lambda: None  # called once if the reader goes away (`| head`)
        self.gone = False
        self.counts: dict[str, int] = {}
        self.lags: dict[str, list[float]] = {ev.CaptionPartial.type: [], ev.CaptionFinal.type: []}
        self._partial_shown = False

    async def __call__(self, event: ev.Event) -> None:
        self.counts[event.type] = self.counts.get(event.type, 0) + 1
        if event.type in self.lags:
            self.lags[event.type].append(self._lag(event))
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

    def _lag(self, event: ev.CaptionPartial | ev.CaptionFinal) -> float:
        return (self.clock() - event.end) / (self.speed or 1.0)

    def _label(self, event: ev.CaptionPartial | ev.CaptionFinal) -> str:
        return f"[{event.end:5.2f}s +{self._lag(event):.2f}s]"

    def _clear(self) -> None:
        if self._partial_shown:
            self._write("\r\x1b[K")
            self._partial_shown = False

    def _write(self, text: str) -> None:
        if self.gone:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:  # nothing more to say to anyone, at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            self.gone = True
            self.on_gone()


def summary(printer: Printer) -> str:
    """One line for people: how many captions, and how far behind the live audio they came."""
    parts = []
    for kind, lags in printer.lags.items():
        name = kind.split(".")[1] + "s"
        parts.append(f"{len(lags)} {name}" + (f" (lag mean {sum(lags) / len(lags):.2f} s, max {max(lags):.2f} s)" if lags else ""))
    return ", ".join(reversed(parts))
