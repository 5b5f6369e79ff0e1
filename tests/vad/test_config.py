"""SegmenterConfig: defaults, derived sizes, and validation with clear messages."""
import dataclasses

import pytest

from vad.config import SegmenterConfig, ms_to_samples


def test_defaults_and_derived_sizes():
    config = SegmenterConfig()
    assert (config.sample_rate, config.frame_ms, config.endpoint_ms, config.max_segment_s) == (16000, 10, 600, 20.0)
    assert (config.frame_samples, config.window_frames, config.start_frames) == (160, 30, 20)
    assert SegmenterConfig(start_ratio=0.6).start_frames == 18  # 0.6 * 30 is 18.000000000000004 in floats
    assert SegmenterConfig(sample_rate=8000, frame_ms=30).frame_samples == 240
    assert [ms_to_samples(ms, rate) for ms, rate in ((10, 48000), (200, 8000), (1, 32000))] == [480, 1600, 32]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.frame_ms = 20  # type: ignore[misc]


@pytest.mark.parametrize("fields, message", [
    ({"sample_rate": 44100}, r"sample_rate must be one of \(8000, 16000, 32000, 48000\) Hz \(webrtcvad\), got 44100"),
    ({"frame_ms": 25}, "frame_ms must be one of"),
    ({"aggressiveness": 4}, "aggressiveness must be 0..3"),
    ({"start_window_ms": 5}, "start_window_ms"),
    ({"start_ratio": 0.0}, "start_ratio"),
    ({"pre_roll_ms": -1}, ">= 0"),
    ({"post_roll_ms": 700}, r"post_roll_ms \(700\) must not exceed endpoint_ms \(600\)"),
    ({"endpoint_ms": 5, "post_roll_ms": 0}, "at least one frame"),
    ({"partial_interval_ms": 0}, "at least one frame"),
    ({"max_segment_s": 0.5}, "max_segment_s must be >= 1.0 s"),
])
def test_invalid_values_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        SegmenterConfig(**fields)
