"""Whole-array helpers for offline transcription: segment a recording, then batch segments into Whisper windows."""
import numpy as np

from vad.config import SegmenterConfig
from vad.events import SpeechEnded
from vad.segmenter import Segmenter


def segment_audio(pcm: np.ndarray, config: SegmenterConfig | None = None) -> list[SpeechEnded]:
    """The segments of a whole recording: exactly what streaming it through `Segmenter` would emit."""
    segmenter = Segmenter(config)
    events = segmenter.feed(pcm) + segmenter.flush()
    return [e for e in events if isinstance(e, SpeechEnded)]


def merge_segments(segments: list[SpeechEnded], max_s: float = 30.0) -> list[tuple[int, int]]:
    """Greedily merge consecutive segments into (start, end) sample spans no longer than `max_s` (Whisper's 30 s
    window), each from its first segment's start to its last one's end, gaps included. A segment that is itself
    longer than `max_s` stays a span of its own."""
    if max_s <= 0:
        raise ValueError(f"max_s must be > 0, got {max_s}")
    spans: list[tuple[int, int]] = []
    for seg in segments:
        if spans and seg.start < spans[-1][1]:
            raise ValueError(f"segments must be ordered and non-overlapping: {seg.start} < {spans[-1][1]}")
        if spans and seg.end - spans[-1][0] <= round(max_s * seg.sample_rate):
            spans[-1] = (spans[-1][0], seg.end)
        else:
            spans.append((seg.start, seg.end))
    return spans
