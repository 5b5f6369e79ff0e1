"""What runs next: the policy over queued transcription requests of every stream. No tensors, no threads: the
engine's service (engine/service.py) only runs what this decides.

Every request is due some time after it arrives (`Request.slack_s`: a final now, a pause's decode when its endpoint
comes, a partial when the next one would). Rule: finals first, earliest due first, and an admission that takes
finals takes nothing else (the encoder runs a whole admission before any of it decodes); else pauses, earliest due
first, within an audio budget per admission; else one partial, alone, so that a pause or a final that comes
meanwhile waits for one preview's encode at most (docs/performance.md, "The decoder step without the GIL; pauses
first"): the first words of a segment before the other partials, earliest due first. A final is a caption people
keep; a partial is only a preview; a pause is a partial of audio that ends in a pause (its transcript is the final
if the pause turns out to end the segment). A stream has at most one queued partial or pause (a newer one replaces
the stale one). A partial still queued STALE_S past its due time is shed (its preview would be old news), and so is
the oldest when the queue is full; finals are never shed. `lag` is how late a request started: now minus its due
time.

Partials also wait while a final waits or decodes (each would slow every step of the final's decode), and they may
take only `partial_share` of the encoder's time, as a token bucket: each second earns that share of encoding,
saved up to PARTIAL_BURST_S, and `charge` spends what an admission of previews took. An idle engine serves every
partial; a loaded one makes fewer (only each stream's newest is kept) and the rest goes to finals and pauses.
"""
from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from engine.messages import SAMPLE_RATE, DecodeOptions


@dataclass(frozen=True, eq=False)
class Request:
    stream: str  # who asked: stale partials are replaced per stream, cancellation frees per stream
    audio: np.ndarray = field(repr=False)  # 16 kHz float32, at most 30 s
    options: DecodeOptions = DecodeOptions()
    final: bool = True  # False: a partial of a growing segment
    pause: bool = False  # a partial of the segment up to a pause: likely its final (scheduled before partials)
    slack_s: float = 0.0  # seconds after it arrives by which its result is wanted
    first: bool = False  # a partial of a segment nothing of which has been shown yet: its first words

    @property
    def urgent(self) -> bool:
        """A final, or a pause (likely the final): not a preview."""
        return self.final or self.pause


class Superseded(Exception):
    """A newer partial of the same stream replaced this one before it ran."""


class Overloaded(Exception):
    """The queue is full: this partial was shed (finals are never shed)."""


class Cancelled(Exception):
    """The stream was cancelled before this request ran."""


STALE_S = 1.0
ADMIT_BUDGET_S = 10.0  # pause audio encoded per admission: bounds a waiting final's delay to one such encode
PARTIAL_SHARE = 0.5
PARTIAL_BURST_S = 1.0


@dataclass
class Scheduler:
    max_queue: int = 64  # queued partials beyond which partials are shed
    partial_share: float = PARTIAL_SHARE  # of the encoder's time that previews may take
    budget_s: float = ADMIT_BUDGET_S
    clock: Callable[[], float] = time.monotonic
    finals: OrderedDict[int, Request] = field(default_factory=OrderedDict)
    partials: OrderedDict[int, Request] = field(default_factory=OrderedDict)
    due: dict[int, float] = field(default_factory=dict)  # by id: when each queued request is due (clock)
    shed: int = 0  # partials dropped for overload (queue full or stale), ever
    superseded: int = 0  # partials replaced by a newer one of their stream before they ran, ever
    credit: float = PARTIAL_BURST_S  # seconds of preview encoding that may start now
    _ids: itertools.count = field(default_factory=itertools.count)
    _credit_at: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.partial_share <= 1:
            raise ValueError(f"partial_share must be in (0, 1], not {self.partial_share}")

    def add(self, req: Request) -> tuple[int, list[tuple[int, Exception]]]:
        """Queue `req` -> (its id, [(id, reason)] of requests dropped to make way; the new id may be among them)."""
        rid = next(self._ids)
        self.due[rid] = self.clock() + req.slack_s
        dropped: list[tuple[int, Exception]] = []
        if req.final:
            self.finals[rid] = req
            return rid, dropped
        stale = [i for i, r in self.partials.items() if r.stream == req.stream]
        for i in stale:
            del self.partials[i], self.due[i]
            self.superseded += 1
            dropped.append((i, Superseded(f"a newer partial of stream {req.stream!r} replaced this one")))
        self.partials[rid] = req
        if len(self.partials) + len(self.finals) > self.max_queue:
            oldest = next(iter(self.partials))
            del self.partials[oldest], self.due[oldest]
            self.shed += 1
            dropped.append((oldest, Overloaded("engine overloaded: partial shed (finals are still served)")))
        return rid, dropped

    def waiting(self, stream: str) -> bool:
        """Whether a partial (not a pause) of `stream` is queued."""
        return any(r.stream == stream and not r.pause for r in self.partials.values())

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
            del self.due[i]
        return gone

    def schedule(self, max_batch: int, final_in_flight: bool = False, budget_s: float | None = None
                 ) -> tuple[list[tuple[int, Request, float]], list[tuple[int, Exception]]]:
        """Take the next requests to start -> ([(id, request, lag)], [(id, reason)] of stale partials shed): finals
        (up to max_batch, whatever their length); or else pauses, while the audio taken stays within the budget (the
        encoder runs them all before any of them decodes, so the budget bounds how long a final arriving meanwhile
        waits); or else, if partials may run (no final waits or, as `final_in_flight` says, decodes; credit left),
        one partial. Earliest due first in each case."""
        now = self.clock()
        budget_s = self.budget_s if budget_s is None else budget_s
        partials = not (self.finals or final_in_flight) and self._refill(now) >= 0
        dropped: list[tuple[int, Exception]] = []
        for i, r in list(self.partials.items()):
            if not r.pause and (late := now - self.due[i]) > STALE_S:
                del self.partials[i], self.due[i]
                self.shed += 1
                dropped.append((i, Overloaded(f"engine overloaded: partial {late:.1f} s past due, shed")))
        pauses = [i for i, r in self.partials.items() if r.pause]
        chosen: list[int] = []
        if self.finals:
            chosen = sorted(self.finals, key=self.due.__getitem__)[:max_batch]
        elif pauses:
            audio_s = 0.0
            for i in sorted(pauses, key=self.due.__getitem__)[:max_batch]:
                audio_s += len(self.partials[i].audio) / SAMPLE_RATE
                if chosen and audio_s > budget_s:
                    break
                chosen.append(i)
        elif partials and self.partials:  # first words first
            chosen = [min(self.partials, key=lambda i: (not self.partials[i].first, self.due[i]))]
        batch = [(i, self.finals.pop(i, None) or self.partials.pop(i), now - self.due.pop(i)) for i in chosen]
        return batch, dropped

    def charge(self, started: list[Request], seconds: float) -> None:
        """An admission took `seconds` of the encoder: previews alone (no final, no pause) spend partial credit."""
        if started and not any(r.urgent for r in started):
            self.credit -= seconds

    def wake_in(self, final_in_flight: bool = False) -> float | None:
        """Seconds until queued partials may run on credit that comes back; None: nothing waits on it (a new request
        or a freed batch row wakes the engine instead)."""
        if not self.partials or self.finals or final_in_flight:
            return None
        return max(0.005, -self._refill(self.clock()) / self.partial_share)

    def _refill(self, now: float) -> float:
        """Partial credit, refilled by the clock since it was last looked at."""
        if self._credit_at is not None:
            self.credit = min(PARTIAL_BURST_S, self.credit + (now - self._credit_at) * self.partial_share)
        self._credit_at = now
        return self.credit

    def requests(self) -> list[Request]:
        """Every queued request."""
        return [*self.finals.values(), *self.partials.values()]

    def __len__(self) -> int:
        return len(self.finals) + len(self.partials)
