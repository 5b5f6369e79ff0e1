"""Constants and the validated, immutable configuration of the streaming segmenter."""
import math
from dataclasses import dataclass

VAD_SAMPLE_RATES = (8000, 16000, 32000, 48000)  # Hz: the only rates webrtcvad accepts
VAD_FRAME_MS = (10, 20, 30)  # ms: the only frame lengths webrtcvad accepts
VAD_AGGRESSIVENESS = range(4)  # 0 (keeps the most audio) .. 3 (rejects the most non-speech)
INT16_SCALE = 32768  # float32 in [-1, 1] <-> int16, the same scale Whisper's loader divides by
QUIET_SEARCH_MS = 1000  # ms: a forced split cuts at the quietest frame of the segment's last second


def ms_to_samples(ms: float, sample_rate: int) -> int:
    """Whole samples in `ms` milliseconds; exact for integer ms at every rate webrtcvad accepts."""
    return round(ms * sample_rate / 1000)


@dataclass(frozen=True)
class SegmenterConfig:
    """Tunables of `Segmenter`; every duration is in milliseconds except `max_segment_s`.

    With these defaults, on /work/shared/speech clips spliced with 0.3-2 s of silence or -40 dBFS white/brown
    noise, every detected speech edge lands within 50 ms of the energy-defined one (tests/vad/test_segmenter.py)."""

    sample_rate: int = 16000  # Hz
    frame_ms: int = 10  # ms per webrtcvad decision: the finest grid, so edges are placed to 10 ms
    aggressiveness: int = 2  # webrtcvad's mode; behind the classifier's vetoes 0-3 all keep edges within 70 ms
    start_window_ms: int = 300  # ms: speech starts once `start_ratio` of this sliding window is voiced
    start_ratio: float = 0.65  # 65 % of 300 ms = 200 ms voiced: a click cannot open a segment
    endpoint_ms: int = 600  # ms of unvoiced frames that end speech: shorter pauses stay inside one utterance
    pre_roll_ms: int = 200  # ms kept before the first voiced frame, so soft onsets (fricatives) survive
    post_roll_ms: int = 200  # ms kept after the last voiced frame, so word tails survive
    min_speech_ms: int = 250  # ms from onset to last voiced frame below which a burst is dropped as a click
    max_segment_s: float = 20.0  # s: longer speech is force-split, keeping each piece well inside Whisper's 30 s
    # An utterance already this long ends at a shorter pause (long_endpoint_ms): a caption line should not wait for
    # a speaker who never pauses long, e.g. read text or audio looped with short gaps (None: endpoint_ms only).
    long_segment_s: float | None = 10.0
    long_endpoint_ms: int = 250
    # An utterance still shorter than this ends only at a longer pause (short_endpoint_ms, if longer than
    # endpoint_ms): a word or two alone reads worse than with the words after it ("one two three" spoken with
    # half-second gaps). None: endpoint_ms only.
    short_segment_s: float | None = None
    short_endpoint_ms: int = 1250
    partial_interval_ms: int = 500  # ms of new audio between PartialDue events while a segment is open
    # ms into a pause (>= post_roll_ms) at which SpeechPaused comes, so its audio can be decoded before the endpoint.
    # Most pauses end sooner and their decode is wasted: at the sessions' 1250 ms endpoint, ../shared/speech has 24
    # pauses that speech resumes after and 7 that end a segment at 200 ms; at 400 ms, 9 and 4 (the other 3 end long
    # segments, whose 250 ms endpoint comes first), and 850 ms still remain for the decode.
    pause_ms: int = 400
    # ms of silence after the last segment that end the speaker's turn (TurnEnded); an utterance never waits longer
    # than this for its endpoint. None: no turns.
    turn_ms: int | None = None

    def __post_init__(self) -> None:
        if self.sample_rate not in VAD_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {VAD_SAMPLE_RATES} Hz (webrtcvad), got {self.sample_rate}")
        if self.frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"frame_ms must be one of {VAD_FRAME_MS} (webrtcvad), got {self.frame_ms}")
        if self.aggressiveness not in VAD_AGGRESSIVENESS:
            raise ValueError(f"aggressiveness must be 0..3, got {self.aggressiveness}")
        if self.start_window_ms < self.frame_ms:
            raise ValueError(f"start_window_ms ({self.start_window_ms}) must hold a {self.frame_ms} ms frame")
        if not 0.0 < self.start_ratio <= 1.0:
            raise ValueError(f"start_ratio must be in (0, 1], got {self.start_ratio}")
        if min(self.pre_roll_ms, self.post_roll_ms, self.min_speech_ms) < 0:
            raise ValueError("pre_roll_ms, post_roll_ms and min_speech_ms must be >= 0")
        if not self.post_roll_ms <= self.endpoint_ms:  # the post-roll must already be heard when speech ends
            raise ValueError(f"post_roll_ms ({self.post_roll_ms}) must not exceed endpoint_ms ({self.endpoint_ms})")
        if not self.post_roll_ms <= min(self.long_endpoint_ms, self.short_endpoint_ms):
            raise ValueError(f"post_roll_ms ({self.post_roll_ms}) must not exceed long_endpoint_ms or short_endpoint_ms")
        if self.pause_ms < self.post_roll_ms:  # the paused audio ends post_roll_ms after speech: it must be heard
            raise ValueError(f"pause_ms ({self.pause_ms}) must be at least post_roll_ms ({self.post_roll_ms})")
        if self.endpoint_ms < self.frame_ms or self.partial_interval_ms < self.frame_ms:
            raise ValueError(f"endpoint_ms and partial_interval_ms must be at least one frame ({self.frame_ms} ms)")
        if self.turn_ms is not None and self.turn_ms < self.post_roll_ms:
            raise ValueError(f"turn_ms ({self.turn_ms}) must be at least post_roll_ms ({self.post_roll_ms})")
        if self.max_segment_s * 1000 < QUIET_SEARCH_MS:  # the split point is searched in the last second
            raise ValueError(f"max_segment_s must be >= {QUIET_SEARCH_MS / 1000} s, got {self.max_segment_s}")

    def endpoint_after(self, length_s: float) -> int:
        """ms of silence that end an utterance already `length_s` seconds long (never more than the turn's)."""
        ms = self.endpoint_ms
        if self.long_segment_s is not None and length_s >= self.long_segment_s:
            ms = min(self.endpoint_ms, self.long_endpoint_ms)
        elif self.short_segment_s is not None and length_s < self.short_segment_s:
            ms = max(self.endpoint_ms, self.short_endpoint_ms)
        return ms if self.turn_ms is None else min(ms, self.turn_ms)

    @property
    def frame_samples(self) -> int:
        return ms_to_samples(self.frame_ms, self.sample_rate)

    @property
    def window_frames(self) -> int:
        return self.start_window_ms // self.frame_ms

    @property
    def start_frames(self) -> int:
        """Voiced frames the start window needs (at least one, so an all-silent window never starts speech)."""
        # - 1e-9: in floats 0.6 * 30 is 18.000000000000004, which must not round up to 19
        return max(1, math.ceil(self.start_ratio * self.window_frames - 1e-9))

    def samples(self, ms: float) -> int:
        return ms_to_samples(ms, self.sample_rate)
