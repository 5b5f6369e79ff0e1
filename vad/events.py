"""Events the segmenter emits. Times are sample indices from the start of the stream, so they are exact and
independent of how the audio was chunked; `start_s`/`end_s` convert them to seconds.

A segment's `start`/`end` include the pre- and post-roll: `audio` is exactly `stream[start:end]`."""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpeechStarted:
    """Segment `index` opened; its audio will begin at sample `start` (pre-roll included)."""

    index: int
    start: int
    sample_rate: int

    def __post_init__(self) -> None:
        if self.index < 0 or self.start < 0 or self.sample_rate <= 0:
            raise ValueError(f"invalid {self!r}: index and start must be >= 0, sample_rate > 0")

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate


@dataclass(frozen=True, eq=False)  # eq=False: the generated __eq__ would compare arrays ambiguously
class _Span:
    index: int
    start: int
    end: int
    audio: np.ndarray  # stream[start:end], read-only, in the dtype the caller fed
    sample_rate: int

    def __post_init__(self) -> None:
        if self.index < 0 or not 0 <= self.start <= self.end or self.sample_rate <= 0:
            raise ValueError(f"invalid span: index={self.index} start={self.start} end={self.end}")
        if self.audio.ndim != 1 or len(self.audio) != self.end - self.start:
            raise ValueError(f"audio must be 1-D with end - start = {self.end - self.start} samples, "
                             f"got shape {self.audio.shape}")
        self.audio.flags.writeable = False  # frozen means frozen: no one edits the samples in place

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and (self.index, self.start, self.end, self.sample_rate)
                == (other.index, other.start, other.end, other.sample_rate)
                and self.audio.dtype == other.audio.dtype and np.array_equal(self.audio, other.audio))

    __hash__ = None  # type: ignore[assignment]  # equal by value, and arrays are not hashable

    def __repr__(self) -> str:  # the samples are too long to print
        return (f"{type(self).__name__}(index={self.index}, start={self.start}, end={self.end}, "
                f"audio=<{len(self.audio)} {self.audio.dtype}>, sample_rate={self.sample_rate})")

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / self.sample_rate


class PartialDue(_Span):
    """Segment `index` is still open and speech has gone on for `partial_interval_ms` more (none come in a pause):
    `audio` is the segment so far."""


class SpeechPaused(_Span):
    """Segment `index` has been quiet for `pause_ms`: `audio` is exactly what its SpeechEnded will hold if no
    speech comes before the endpoint. Decoding it now has the final ready the moment the segment ends."""


class SpeechEnded(_Span):
    """Segment `index` is complete: `audio` is exactly `stream[start:end]`, pre- and post-roll included."""


@dataclass(frozen=True)
class TurnEnded:
    """The speaker's turn is over: `turn_ms` of silence followed segment `index` (the turn's last), or the stream
    was flushed (`forced`). `end` is the sample where that was decided."""

    index: int
    end: int
    sample_rate: int
    forced: bool = False

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate


Event = SpeechStarted | PartialDue | SpeechPaused | SpeechEnded | TurnEnded
