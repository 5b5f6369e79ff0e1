"""Offline helpers: segment a whole array, then batch segments into Whisper-sized spans."""
import numpy as np
import pytest

from vad.config import SegmenterConfig
from vad.events import SpeechEnded
from vad.offline import merge_segments, segment_audio
from vad.segmenter import Segmenter

RATE = 16000


def test_segment_audio_is_the_streaming_result(spliced):
    segmenter = Segmenter()
    streamed = [e for e in segmenter.feed(spliced.pcm[:RATE]) + segmenter.feed(spliced.pcm[RATE:]) + segmenter.flush()
                if isinstance(e, SpeechEnded)]
    assert segment_audio(spliced.pcm) == streamed
    assert segment_audio(spliced.pcm, SegmenterConfig(endpoint_ms=1500)) != streamed  # the config is used
    assert segment_audio(np.zeros(0, np.int16)) == []


def span(start_s: float, end_s: float) -> SpeechEnded:
    start, end = round(start_s * RATE), round(end_s * RATE)
    return SpeechEnded(0, start, end, np.zeros(end - start, np.int16), RATE)


def test_merge_segments_greedily_fills_windows():
    segments = [span(0, 5), span(6, 12), span(20, 29), span(29.5, 40), span(41, 45), span(50, 85), span(86, 87)]
    assert merge_segments(segments) == [(0, 29 * RATE), (round(29.5 * RATE), 45 * RATE), (50 * RATE, 85 * RATE),
                                        (86 * RATE, 87 * RATE)]
    assert merge_segments(segments, max_s=100) == [(0, 87 * RATE)]
    assert merge_segments([]) == []


def test_merge_segments_on_real_segments(spliced):
    segments = segment_audio(spliced.pcm)
    spans = merge_segments(segments, max_s=10.0)
    assert spans[0][0] == segments[0].start and spans[-1][1] == segments[-1].end
    assert all(end - start <= 10 * RATE or any(s.start == start and s.end == end for s in segments)
               for start, end in spans)
    assert sum(1 for s in segments for a, b in spans if a <= s.start and s.end <= b) == len(segments)


def test_merge_segments_rejects_bad_input():
    with pytest.raises(ValueError, match="ordered and non-overlapping"):
        merge_segments([span(5, 6), span(0, 1)])
    with pytest.raises(ValueError, match="max_s must be > 0"):
        merge_segments([span(0, 1)], max_s=0)
