"""What runs next: the policy over queued transcription requests of every stream. No tensors, no threads.

Rule: finals, then pauses, then partials, each in arrival order; an admission that takes finals takes nothing
else (the encoder runs a whole admission before any of it decodes). A final is a caption people keep; a partial is
only a preview; a pause is a partial of audio that ends in a pause (its transcript is the final if the pause turns
out to end the segment, so it runs ahead of previews). A stream has at most one queued partial or pause (a newer
one replaces the stale one); the queue is bounded, and when it is full an arriving partial is shed, or makes room
by shedding the oldest partial or pause; finals are never shed.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

from engine.messages import DecodeOptions


@dataclass(frozen=True, eq=False)
class Request:
    stream: str  # who asked: stale partials are replaced per stream, cancellation frees per stream
    audio: np.ndarray = field(repr=False)  # 16 kHz float32, at most 30 s
    options: DecodeOptions = DecodeOptions()
    final: bool = True  # False: a partial of a growing segment
    pause: bool = False  # a partial of the segment up to a pause: likely its final (scheduled before partials)


class Superseded(Exception):
    """A newer partial of the same stream replaced this one before it ran."""


class Overloaded(Exception):
    """The queue is full: this partial was shed (finals are never shed)."""


class Cancelled(Exception):
    """The stream was cancelled before this request ran."""


@dataclass
class Scheduler:
    max_queue: int = 64  # queued partials beyond which partials are shed
    finals: OrderedDict[int, Request] = field(default_factory=OrderedDict)
    partials: OrderedDict[int, Request] = field(default_factory=OrderedDict)
    shed: int = 0  # partials dropped for overload, ever
    superseded: int = 0  # partials replaced by a newer one of their stream before they ran, ever
    _ids: itertools.count = field(default_factory=itertools.count)

    def add(self, req: Request) -> tuple[int, list[tuple[int, Exception]]]:
        """Queue `req` -> (its id, [(id, reason)] of requests dropped to make way; the new id may be among them)."""
        rid = next(self._ids)
        dropped: list[tuple[int, Exception]] = []
        if req.final:
            self.finals[rid] = req
            return rid, dropped
        stale = [i for i, r in self.partials.items() if r.stream == req.stream]
        for i in stale:
            del self.partials[i]
            self.superseded += 1
            dropped.append((i, Superseded(f"a newer partial of stream {req.stream!r} replaced this one")))
        self.partials[rid] = req
        if len(self.partials) + len(self.finals) > self.max_queue:
            oldest = next(iter(self.partials))
            del self.partials[oldest]
            self.shed += 1
            dropped.append((oldest, Overloaded("engine overloaded: partial shed (finals are still served)")))
        return rid, dropped

    def promote(self, stream: str) -> bool:
        """Make `stream`'s queued partial a final (it turned out to be one: the segment ended where it does)."""
        for i, r in self.partials.items():
            if r.stream == stream:
                del self.partials[i]
                self.finals[i] = replace(r, final=True)
                return True
        return False

    def cancel(self, stream: str) -> list[int]:
        """Forget every queued request of `stream` -> their ids."""
        gone = [i for q in (self.finals, self.partials) for i, r in q.items() if r.stream == stream]
        for i in gone:
            self.finals.pop(i, None) or self.partials.pop(i, None)
        return gone

    def schedule(self, max_batch: int, budget_s: float = float("inf"), partials: bool = True) -> list[tuple[int, Request]]:
        """Take the next requests to start: finals (up to max_batch, whatever their length), or else pauses, then,
        if `partials`, partials, oldest first, while the audio taken stays within budget_s (the encoder runs
        them all before any of them decodes, so the budget bounds how long a final arriving meanwhile waits)."""
        batch: list[tuple[int, Request]] = []
        audio_s = 0.0
        while self.finals and len(batch) < max_batch:
            batch.append(self.finals.popitem(last=False))
            audio_s += len(batch[-1][1].audio) / 16000
        for pauses in () if batch else (True, False) if partials else (True,):
            for i, r in list(self.partials.items()):
                if len(batch) >= max_batch or (batch and audio_s + len(r.audio) / 16000 > budget_s):
                    break
                if r.pause == pauses:
                    batch.append((i, self.partials.pop(i)))
                    audio_s += len(r.audio) / 16000
        assert len(batch) <= max_batch and (not self.finals or all(r.final for _, r in batch))
        return batch

    def __len__(self) -> int:
        return len(self.finals) + len(self.partials)
