"""A pure, deterministic streaming speech segmenter over webrtcvad.

The stream is cut into `frame_ms` frames counted from sample 0 and each frame is labelled once (vad/classifier.py),
so the events depend only on the samples, never on how they were chunked. Per labelled frame:

  idle    -> pending  when >= `start_ratio` of the last `start_window_ms` is voiced. Speech begins where the voiced
                      run ending the window begins; the segment `pre_roll_ms` earlier, but never before the
                      previous segment's end, so no sample belongs to two segments.
  pending -> open     once its voiced frames span `min_speech_ms`: emits SpeechStarted. A pending burst that goes
                      quiet for `endpoint_ms` is dropped as a click.
  open    -> open     every `partial_interval_ms` while speech goes on: PartialDue (none in a pause); and
                      `pause_ms` after the last voiced frame (`post_roll_ms` when the segment's endpoint comes
                      sooner): SpeechPaused, with the audio SpeechEnded will have if the silence lasts (once per
                      pause).
  open    -> idle     after `endpoint_ms` with no voiced run of MIN_RUN_MS: emits SpeechEnded, `post_roll_ms` after
                      the last voiced frame (or after where its pause put the end of speech: `_speech_end`).
  open    -> open     at `max_segment_s`: SpeechEnded at the end of the quietest frame of the segment's last second;
                      the next segment starts on the very next sample.
  idle    -> idle     `turn_ms` after the last voiced frame of a segment ended by silence, with no speech started
                      since: TurnEnded (the turn's last segment). An utterance's endpoint never exceeds `turn_ms`.

Labels lag the input by the classifier's look-ahead (300 ms). The labels of frames webrtcvad called unvoiced, or
far below the speech, are known before it ends, so pauses and endpoints are heard without that lag: once the
frames after the last one that may still be speech are known silent for `pause_ms` or `endpoint_ms`, the pause or
endpoint is announced with the speech running to that frame (`_ahead`); only a silence the look-ahead could not rule
out (steady noise webrtcvad calls voiced) waits for the labels. A PartialDue holds all the audio fed so far, the
look-ahead's too.
"""
from collections import deque
from dataclasses import dataclass

import numpy as np

from vad.classifier import FrameClassifier, energy_db, level_db
from vad.config import INT16_SCALE, QUIET_SEARCH_MS, SegmenterConfig
from vad.events import Event, PartialDue, SpeechEnded, SpeechPaused, SpeechStarted, TurnEnded

INPUT_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))
ONSET_GAP_MS = 50  # ms: gaps bridged when tracing an onset back; a longer one sets off a blip before the speech
MIN_RUN_MS = 30  # ms (and >= 2 frames): a shorter voiced run (a click, a splice) does not keep a segment open


def to_int16(pcm: np.ndarray) -> np.ndarray:
    """int16 as is; float32 in [-1, 1] scaled by 32768, rounded and clipped (int16 / 32768 round-trips exactly)."""
    if pcm.dtype == np.int16:
        return pcm
    return np.clip(np.round(pcm * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


@dataclass
class _Segment:
    """The segment being built; every field is an absolute sample index."""

    start: int  # first sample of its audio (pre-roll included)
    voiced_end: int  # end of its latest voiced frame
    confirm_at: int  # voiced_end must reach this before SpeechStarted (the min_speech_ms click filter)
    partial_mark: int  # end of the last PartialDue, or the speech onset
    confirmed: bool = False
    paused_at: int = -1  # where the speech ended at the last SpeechPaused (>= voiced_end then): one per pause


class Segmenter:
    """Feed PCM chunks of any size (int16, or float32 in [-1, 1]); get events back. Single use: `flush()` ends it.

    A stream has one sample rate, `config.sample_rate`: pass `sample_rate=` to `feed` to have a mismatch (a client
    that renegotiated its rate, say) rejected with a ValueError instead of silently mis-timed."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = cfg = config or SegmenterConfig()
        self._classifier = FrameClassifier(cfg)
        self._frame = cfg.frame_samples
        self._window: deque[bool] = deque(maxlen=cfg.window_frames)
        self._min_run = max(2, -(-MIN_RUN_MS // cfg.frame_ms))  # frames: one frame alone is never evidence
        self._dtype: np.dtype | None = None
        self._buf = np.zeros(0, np.int16)  # samples from _buf_start on (capacity grows by doubling)
        self._buf_start = 0
        self._received = 0  # samples fed so far
        self._seen = 0  # end of the last frame given to the classifier
        self._pos = 0  # end of the last labelled frame: the state machine's clock
        self._run = 0  # consecutive voiced frames up to _pos
        self._floor = 0  # end of the last emitted segment: pre-roll never reaches before it
        self._index = 0  # index of the next segment
        self._seg: _Segment | None = None
        self._resume = 0  # labels of frames ending up to here were known ahead of time (_ahead): skipped
        self._turn = False  # a segment ended by silence and no speech has started since: its turn may be over
        self._heard = 0  # end of the last frame labelled voiced
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
            raise ValueError(f"PCM must be int16 or float32 in [-1, 1], got {pcm.dtype}")
        if self._dtype is None:
            self._dtype, self._buf = pcm.dtype, self._buf.astype(pcm.dtype)
        elif pcm.dtype != self._dtype:
            raise ValueError(f"dtype changed mid-stream: the stream is {self._dtype}, this chunk is {pcm.dtype}")
        self._append(pcm)
        events: list[Event] = []
        n = (self._received - self._seen) // self._frame  # whole frames not yet classified: measured together
        frames = to_int16(self._audio(self._seen, self._seen + n * self._frame, copy=False)).reshape(n, self._frame)
        for frame, energy, level in zip(frames, energy_db(frames).tolist(), level_db(frames).tolist()):
            label = self._classifier.push(frame, energy, level)
            self._seen += self._frame
            if label is not None:
                events += self._step(label)
            events += self._ahead()
        self._trim()
        return events

    def flush(self) -> list[Event]:
        """End the stream: label the look-ahead, then end an open segment `post_roll_ms` after its last voiced
        frame or at the last sample, whichever comes first. A trailing partial frame is never labelled."""
        if self._flushed:
            raise ValueError("flush() called twice: the stream has already ended")
        self._flushed = True
        events = [event for label in self._classifier.drain() for event in self._step(label)]
        seg, self._seg = self._seg, None
        if seg is not None and seg.confirmed:
            post_roll = self.config.samples(self.config.post_roll_ms)
            events.append(self._end(seg, min(self._speech_end(seg) + post_roll, self._received)))
            self._turn = True
        if self._turn and self.config.turn_ms is not None:  # the client ended the turn
            events.append(TurnEnded(self._index - 1, self._received, self.config.sample_rate, forced=True))
        return events

    def _append(self, pcm: np.ndarray) -> None:
        used, need = self._received - self._buf_start, self._received - self._buf_start + len(pcm)
        if need > len(self._buf):  # amortised O(1) per sample, however small the chunks
            grown = np.empty(max(2 * need, 1 << 14), self._buf.dtype)
            grown[:used] = self._buf[:used]
            self._buf = grown
        self._buf[used:need] = pcm
        self._received += len(pcm)

    def _audio(self, start: int, end: int, copy: bool = True) -> np.ndarray:
        view = self._buf[start - self._buf_start:end - self._buf_start]
        return view.copy() if copy else view

    def _end(self, seg: _Segment, end: int) -> SpeechEnded:
        ended = SpeechEnded(self._index, seg.start, end, self._audio(seg.start, end), self.config.sample_rate)
        self._index, self._floor = self._index + 1, end
        return ended

    def _ahead(self) -> list[Event]:
        """A pause or an endpoint in frames not labelled yet whose labels are already known to be False, after the
        last frame that may still be labelled voiced (vad/classifier.py): announced now instead of the classifier's
        look-ahead later. A pause's speech runs to that frame, whatever the labels of the frames before it turn
        out to be."""
        seg, cfg = self._seg, self.config
        if seg is not None and not seg.confirmed:
            return []
        quiet, loud = self._classifier.ahead()
        if seg is None:
            return self._turn_over(self._pos + quiet * self._frame) if quiet else []
        end = max(seg.voiced_end, self._pos + loud * self._frame) if loud else seg.voiced_end  # speech runs no further
        silent = self._seen - end  # every frame pushed after it is known silent
        endpoint_ms = cfg.endpoint_after((end - seg.start) / cfg.sample_rate)
        events: list[Event] = []
        # once per pause: another needs speech labelled since (the frames that may be speech may be noise)
        if seg.paused_at < seg.voiced_end and silent >= cfg.samples(self._pause_ms(endpoint_ms)):
            events.append(self._pause(seg, end))
        # the frame whose label would end the segment; no forced split may come before it
        at = end + -(-cfg.samples(endpoint_ms) // self._frame) * self._frame
        if silent >= cfg.samples(endpoint_ms) and at - self._frame - seg.start < cfg.samples(cfg.max_segment_s * 1000):
            self._seg, self._resume, self._turn = None, at, True
            self._window.clear()
            events.append(self._end(seg, self._speech_end(seg) + cfg.samples(cfg.post_roll_ms)))
            events += self._turn_over(self._pos + quiet * self._frame)
        return events

    def _turn_over(self, heard: int) -> list[Event]:
        """TurnEnded if the silence up to sample `heard` (no frame labelled voiced, or known to be) has reached
        turn_ms: a voiced blip restarts the count, since it may be the onset of speech not yet started."""
        turn_ms = self.config.turn_ms
        if not self._turn or turn_ms is None or heard - self._heard < self.config.samples(turn_ms):
            return []
        self._turn = False
        return [TurnEnded(self._index - 1, self._heard + self.config.samples(turn_ms), self.config.sample_rate)]

    def _pause_ms(self, endpoint_ms: int) -> int:
        """ms after the last voiced frame at which SpeechPaused comes (the post-roll, when the endpoint is sooner)."""
        return self.config.pause_ms if self.config.pause_ms < endpoint_ms else self.config.post_roll_ms

    def _pause(self, seg: _Segment, end: int) -> SpeechPaused:
        """SpeechPaused of speech that ran to sample `end` (voiced_end, or later frames the look-ahead still holds
        that may be speech): the audio the segment ends with if the silence lasts (_speech_end)."""
        seg.paused_at, stop = end, end + self.config.samples(self.config.post_roll_ms)
        return SpeechPaused(self._index, seg.start, stop, self._audio(seg.start, stop), self.config.sample_rate)

    @staticmethod
    def _speech_end(seg: _Segment) -> int:
        """Where a segment ended by silence ends its speech: at its last voiced frame, or where its last pause put
        it if no speech came since (the frames between were unvoiced after all), so its audio is the pause's."""
        return max(seg.voiced_end, seg.paused_at)

    def _step(self, voiced: bool) -> list[Event]:
        cfg = self.config
        end = self._pos = self._pos + self._frame
        self._run = self._run + 1 if voiced else 0
        if voiced:
            self._heard = end
        if end <= self._resume:  # known ahead: the segment it ended is out, and the frame is not in the new window
            return []
        self._window.append(voiced)
        seg = self._seg
        if seg is None:
            if sum(self._window) < cfg.start_frames:
                return self._turn_over(end)
            onset = end - self._onset_frames() * self._frame
            seg = self._seg = _Segment(max(onset - cfg.samples(cfg.pre_roll_ms), self._floor), end,
                                       onset + cfg.samples(cfg.min_speech_ms), onset)
        elif self._run >= self._min_run:
            seg.voiced_end = end
        events: list[Event] = []
        if not seg.confirmed and seg.voiced_end >= seg.confirm_at:
            seg.confirmed, self._turn = True, False  # the turn goes on
            events.append(SpeechStarted(self._index, seg.start, cfg.sample_rate))
        endpoint_ms = cfg.endpoint_after((seg.voiced_end - seg.start) / cfg.sample_rate)
        if end - seg.voiced_end >= cfg.samples(endpoint_ms):
            if seg.confirmed:  # post_roll_ms <= endpoint_ms, so the post-roll is already buffered
                events.append(self._end(seg, self._speech_end(seg) + cfg.samples(cfg.post_roll_ms)))
                self._turn = True
            self._seg = None
            self._window.clear()  # the next onset is judged on frames after this segment only
            events += self._turn_over(end)
        elif seg.confirmed and end - seg.start >= cfg.samples(cfg.max_segment_s * 1000):
            events += self._split(seg)
        elif seg.confirmed and end - seg.partial_mark >= cfg.samples(cfg.partial_interval_ms) \
                and end - seg.voiced_end < cfg.samples(cfg.post_roll_ms) and seg.paused_at < seg.voiced_end:
            # not in a pause (it would add no speech); the audio is all that has come, the look-ahead's too
            seg.partial_mark = end
            events.append(PartialDue(self._index, seg.start, self._seen, self._audio(seg.start, self._seen),
                                     cfg.sample_rate))
        if self._seg is seg and seg.confirmed and seg.paused_at < seg.voiced_end \
                and end - seg.voiced_end >= cfg.samples(self._pause_ms(endpoint_ms)):
            events.append(self._pause(seg, seg.voiced_end))  # noise the look-ahead could not rule out, say
        return events

    def _onset_frames(self) -> int:
        """Frames back to the start of the voiced run that ends the window, bridging gaps up to ONSET_GAP_MS, so an
        earlier blip does not pull the onset back."""
        run, gap, max_gap = 0, 0, ONSET_GAP_MS // self.config.frame_ms
        for back, voiced in enumerate(reversed(self._window), 1):
            if voiced:
                run, gap = back, 0
            elif (gap := gap + 1) > max_gap:
                break
        return run

    def _split(self, seg: _Segment) -> list[Event]:
        """End `seg` with the quietest (lowest-RMS) whole frame in its last second, and carry on from there."""
        cfg = self.config
        limit = seg.start + cfg.samples(cfg.max_segment_s * 1000)  # the cut keeps the segment <= max_segment_s
        lo = -(-max(limit - cfg.samples(QUIET_SEARCH_MS), seg.start) // self._frame) * self._frame  # on the grid
        n = (limit - lo) // self._frame
        frames = to_int16(self._audio(lo, lo + n * self._frame)).astype(np.float64).reshape(n, self._frame)
        cut = lo + (int(np.argmin((frames ** 2).mean(axis=1))) + 1) * self._frame  # mean square orders as RMS does
        events: list[Event] = [self._end(seg, cut)]
        # The rest is the same utterance: no pre-roll, and it is speech once a voiced frame lies past the cut.
        self._seg = _Segment(cut, seg.voiced_end, cut + 1, cut)
        if seg.voiced_end > cut:
            self._seg.confirmed = True
            events.append(SpeechStarted(self._index, cut, cfg.sample_rate))
        return events

    def _trim(self) -> None:
        """Forget samples no future event can contain: keep the open segment, or what a new pre-roll could reach."""
        cfg = self.config
        reach = self._pos - cfg.window_frames * self._frame - cfg.samples(cfg.pre_roll_ms)
        keep = self._seg.start if self._seg else max(self._floor, reach)
        if keep > self._buf_start:
            self._buf, self._buf_start = self._buf[keep - self._buf_start:], keep
