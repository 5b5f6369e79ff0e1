"""Events: sample-exact fields, seconds, immutability, value equality, validation."""
import dataclasses

import numpy as np
import pytest

from vad.events import PartialDue, SpeechEnded, SpeechStarted


def test_seconds_and_equality():
    audio = np.arange(8000, 24000, dtype=np.int16)
    ended = SpeechEnded(2, 8000, 24000, audio, 16000)
    assert (ended.start_s, ended.end_s, ended.duration_s) == (0.5, 1.5, 1.0)
    assert SpeechStarted(2, 8000, 16000).start_s == 0.5
    assert ended == SpeechEnded(2, 8000, 24000, audio.copy(), 16000)
    assert ended != PartialDue(2, 8000, 24000, audio, 16000)  # same fields, different event
    assert ended != SpeechEnded(2, 8000, 24000, audio.astype(np.float32), 16000)  # same values, other dtype
    assert "audio=<16000 int16>" in repr(ended)


def test_frozen_and_read_only():
    ended = SpeechEnded(0, 0, 3, np.zeros(3, np.int16), 16000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ended.end = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        ended.audio[0] = 1


@pytest.mark.parametrize("args, message", [
    ((0, 10, 5, np.zeros(0, np.int16), 16000), "invalid span"),
    ((-1, 0, 2, np.zeros(2, np.int16), 16000), "invalid span"),
    ((0, 0, 2, np.zeros(3, np.int16), 16000), "end - start = 2 samples"),
    ((0, 0, 2, np.zeros((2, 1), np.int16), 16000), "1-D"),
])
def test_invalid_spans_are_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        SpeechEnded(*args)
    with pytest.raises(ValueError, match="index and start must be >= 0"):
        SpeechStarted(0, -5, 16000)
