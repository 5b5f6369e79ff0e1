"""A pure, deterministic streaming speech segmenter over webrtcvad.

The stream is cut into a fixed grid of `frame_ms` frames counted from sample 0, and every decision is taken once
per frame, so the events depend only on the samples, never on how they were chunked. Per frame:

  idle     -> pending   when >= `start_ratio` of the last `start_window_ms` is voiced; speech begins at the
                        window's first voiced frame, the segment `pre_roll_ms` earlier (never before the previous
                        segment's end, so no sample belongs to two segments)
  pending  -> open      once first-to-last voiced frame spans `min_speech_ms` (emits SpeechStarted); a pending
                        burst that goes quiet is dropped as a click
  open     -> idle      after `endpoint_ms` without a voiced frame (emits SpeechEnded, ending `post_roll_ms`
                        after the last voiced frame)
  open     -> open      at `max_segment_s`: SpeechEnded at the quietest frame of the last second, and the next
                        segment starts on the very next sample
"""
from collections import deque
from dataclasses import dataclass

import numpy as np

from vad.classifier import FrameClassifier
from vad.config import INT16_SCALE, QUIET_SEARCH_MS, SegmenterConfig
from vad.events import Event, PartialDue, SpeechEnded, SpeechStarted

INPUT_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))


def to_int16(pcm: np.ndarray) -> np.ndarray:
    """int16 as is; float32 in [-1, 1] scaled by 32768, rounded and clipped (int16 / 32768 round-trips exactly)."""
    if pcm.dtype == np.int16:
        return pcm
    return np.clip(np.round(pcm * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


@dataclass
class _Segment:
    """The segment being built; every field is an absolute sample index."""

    start: int  # first sample of its audio (pre-roll included)
    voiced_start: int  # start of its first voiced frame
    voiced_end: int  # end of its latest voiced frame
    confirm_at: int  # voiced_end must reach this before SpeechStarted (the min_speech_ms click filter)
    partial_mark: int  # where the last PartialDue ended (or the speech onset)
    confirmed: bool = False


class Segmenter:
    """Feed PCM chunks of any size (int16, or float32 in [-1, 1]); get events back. Single use: `flush()` ends it.

    A stream has one sample rate, `config.sample_rate`: pass `sample_rate=` to `feed` to have a mismatch (say, a
    client that renegotiated its rate) rejected with a ValueError instead of silently mis-timed."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        self._classifier = FrameClassifier(self.config)
        self._frame = self.config.frame_samples
        self._window: deque[bool] = deque(maxlen=self.config.window_frames)
        self._dtype: np.dtype | None = None
        self._buf = np.zeros(0, np.int16)  # samples [_buf_start, _received) of the stream, caller's dtype
        self._buf_start = 0
        self._received = 0
        self._seen = 0  # end of the last frame given to the classifier
        self._pos = 0  # end of the last frame labelled, the state machine's clock (`delay` frames behind _seen)
        self._floor = 0  # end of the last emitted segment: pre-roll never reaches before it
        self._index = 0  # index of the next segment to emit
        self._seg: _Segment | None = None
        self._flushed = False

    def feed(self, pcm: np.ndarray, sample_rate: int | None = None) -> list[Event]:
        """Append a chunk (1-D, any length, empty included) and return the events it completes, in order."""
        if self._flushed:
            raise ValueError("feed() after flush(): a Segmenter handles one stream; create a new one")
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise ValueError(f"sample rate changed mid-stream: got {sample_rate} Hz, this stream is "
                             f"{self.config.sample_rate} Hz; resample, or start a new Segmenter")
        pcm = np.asarray(pcm)
        if pcm.ndim != 1:
            raise ValueError(f"expected mono 1-D PCM, got shape {pcm.shape}")
        if pcm.dtype not in INPUT_DTYPES:
            raise ValueError(f"PCM must be int16 or float32, got {pcm.dtype}")
        if self._dtype is None:
            self._dtype, self._buf = pcm.dtype, self._buf.astype(pcm.dtype)
        elif pcm.dtype != self._dtype:
            raise ValueError(f"dtype changed mid-stream: the stream is {self._dtype}, this chunk is {pcm.dtype}")
        self._buf = np.concatenate([self._buf, pcm])
        self._received += len(pcm)
        events: list[Event] = []
        while self._seen + self._frame <= self._received:
            frame = to_int16(self._buf[self._seen - self._buf_start:self._seen + self._frame - self._buf_start])
            self._seen += self._frame
            label = self._classifier.push(frame)
            if label is not None:
                events += self._step(label)
        self._trim()
        return events

    def flush(self) -> list[Event]:
        """End the stream: an open segment ends `post_roll_ms` after its last voiced frame (or at the last sample)."""
        if self._flushed:
            raise ValueError("flush() called twice: the stream has already ended")
        self._flushed = True
        events = [e for label in self._classifier.drain() for e in self._step(label)]
        seg, self._seg = self._seg, None
        if seg is not None and seg.confirmed:
            events.append(self._end(seg, min(seg.voiced_end + self.config.samples(self.config.post_roll_ms),
                                             self._received)))
        return events

    def _audio(self, start: int, end: int) -> np.ndarray:
        return self._buf[start - self._buf_start:end - self._buf_start].copy()

    def _end(self, seg: _Segment, end: int) -> SpeechEnded:
        ended = SpeechEnded(self._index, seg.start, end, self._audio(seg.start, end), self.config.sample_rate)
        self._index, self._floor = self._index + 1, end
        return ended

    def _step(self, voiced: bool) -> list[Event]:
        cfg = self.config
        end = self._pos = self._pos + self._frame
        self._window.append(voiced)
        seg = self._seg
        if seg is None:
            if sum(self._window) < cfg.start_frames:
                return []
            first = self._window.index(True)  # speech began at the window's first voiced frame
            onset = end - (len(self._window) - first) * self._frame
            seg = self._seg = _Segment(max(onset - cfg.samples(cfg.pre_roll_ms), self._floor), onset, end,
                                       onset + cfg.samples(cfg.min_speech_ms), onset)
        elif voiced:
            seg.voiced_end = end
        events: list[Event] = []
        if not seg.confirmed and seg.voiced_end >= seg.confirm_at:
            seg.confirmed = True
            events.append(SpeechStarted(self._index, seg.start, cfg.sample_rate))
        if end - seg.voiced_end >= cfg.samples(cfg.endpoint_ms):
            if seg.confirmed:  # endpoint_ms >= post_roll_ms, so the post-roll is already buffered
                events.append(self._end(seg, seg.voiced_end + cfg.samples(cfg.post_roll_ms)))
            self._seg = None
            self._window.clear()  # the next onset is judged on frames after this segment only
        elif seg.confirmed and end - seg.start >= cfg.samples(cfg.max_segment_s * 1000):
            events += self._split(seg)
        elif seg.confirmed and end - seg.partial_mark >= cfg.samples(cfg.partial_interval_ms):
            seg.partial_mark = end
            events.append(PartialDue(self._index, seg.start, end, self._audio(seg.start, end), cfg.sample_rate))
        return events

    def _split(self, seg: _Segment) -> list[Event]:
        """End `seg` at the end of the quietest whole frame that lies in its last second, and carry on from there."""
        cfg = self.config
        limit = seg.start + cfg.samples(cfg.max_segment_s * 1000)  # the split keeps the segment <= max_segment_s
        lo = -(-max(limit - cfg.samples(QUIET_SEARCH_MS), seg.start) // self._frame) * self._frame  # grid frames only
        n = (limit - lo) // self._frame
        frames = to_int16(self._audio(lo, lo + n * self._frame)).astype(np.float64).reshape(n, self._frame)
        cut = lo + (int(np.argmin((frames ** 2).mean(axis=1))) + 1) * self._frame  # RMS order = mean-square order
        events: list[Event] = [self._end(seg, cut)]
        # The rest is the same utterance: no pre-roll, and it is speech as soon as a voiced frame lies past the cut.
        self._seg = _Segment(cut, cut, seg.voiced_end, cut + 1, cut)
        if seg.voiced_end > cut:
            self._seg.confirmed = True
            events.append(SpeechStarted(self._index, cut, cfg.sample_rate))
        return events

    def _trim(self) -> None:
        """Drop samples no future event can contain: keep the open segment, or what a new pre-roll could reach."""
        cfg = self.config
        reach = self._pos - cfg.window_frames * self._frame - cfg.samples(cfg.pre_roll_ms)
        keep = self._seg.start if self._seg else max(self._floor, reach)
        if keep > self._buf_start:
            self._buf, self._buf_start = self._buf[keep - self._buf_start:], keep
