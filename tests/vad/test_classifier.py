"""Frame labels: webrtcvad's verdicts with steady noise and background vetoed, a fixed look-ahead late."""
import numpy as np
import webrtcvad

from vad.classifier import NOISE_WINDOW_MS, FrameClassifier, energy_db, level_db
from vad.config import SegmenterConfig

RATE, FRAME = 16000, 160


def labels(pcm: np.ndarray, config: SegmenterConfig | None = None) -> np.ndarray:
    classifier = FrameClassifier(config or SegmenterConfig())
    frames = pcm[:len(pcm) // FRAME * FRAME].reshape(-1, FRAME)
    out = [classifier.push(*f) for f in zip(frames, energy_db(frames), level_db(frames))]
    assert out[:classifier.delay] == [None] * classifier.delay  # the look-ahead fills first
    return np.array(out[classifier.delay:] + classifier.drain())


def test_one_label_per_frame_after_a_fixed_delay(clip):
    pcm = clip("one-two-three.wav")
    assert FrameClassifier(SegmenterConfig()).delay == NOISE_WINDOW_MS // 10
    assert FrameClassifier(SegmenterConfig(frame_ms=30)).delay == NOISE_WINDOW_MS // 30
    out = labels(pcm)
    assert len(out) == len(pcm) // FRAME and np.array_equal(out, labels(pcm))


def test_speech_frames_are_speech(clip, runs_of):
    for name in ("jfk.wav", "aishell-BAC009S0764W0121.wav", "librispeech-1995-1837-0001.wav"):
        pcm = clip(name)
        out = labels(np.concatenate([np.zeros(RATE, np.int16), pcm]))[RATE // FRAME:]
        speech, near = np.zeros(len(out), bool), np.zeros(len(out), bool)
        for a, b in runs_of(pcm):
            speech[a // FRAME:b // FRAME] = True
            near[max(a // FRAME - 15, 0):b // FRAME + 15] = True  # 150 ms: the edge tolerance
        assert out[speech].mean() > 0.8, name  # webrtcvad's own gaps inside words make up most of the rest
        assert out[~near].mean() < 0.1, name  # jfk: 7 %, crowd murmur in its pauses


def test_steady_noise_after_speech_is_not_speech(clip, noise):
    """webrtcvad alone calls much of this hiss speech for seconds; none of it survives the vetoes."""
    speech = clip("aishell-BAC009S0724W0121.wav")
    for kind in ("white", "brown"):
        hiss = noise(kind, 5.0, seed=3)
        pcm = np.concatenate([speech, hiss])
        vad = webrtcvad.Vad(2)
        raw = np.array([vad.is_speech(pcm[i:i + FRAME].tobytes(), RATE) for i in range(0, len(pcm) - FRAME + 1, FRAME)])
        tail = len(speech) // FRAME + 1
        out = labels(pcm)
        assert raw[tail:].mean() > 0.1 and not out[tail:].any(), kind


def test_speech_over_steady_hiss_is_still_speech(clip, noise, runs_of):
    pcm = clip("librispeech-1995-1837-0001.wav")
    hiss = noise("white", len(pcm) / RATE + 1, seed=4, dbfs=-50)
    noisy = hiss.astype(np.int32)
    noisy[RATE:] += pcm
    out = labels(noisy.astype(np.int16))[RATE // FRAME:]
    speech = np.zeros(len(out), bool)
    for a, b in runs_of(pcm):
        speech[a // FRAME:b // FRAME] = True
    assert out[speech].mean() > 0.7 and out[~speech].mean() < 0.15


def test_energy_and_level():
    assert energy_db(np.zeros(FRAME, np.int16)) == level_db(np.zeros(FRAME, np.int16)) == 0.0
    assert level_db(np.full(FRAME, 1000, np.int16)) == 0.0  # DC is not loudness
    white = np.random.default_rng(0).standard_normal(100 * FRAME) * 328  # -40 dBFS
    frames = np.round(white).astype(np.int16).reshape(100, FRAME)
    level = np.mean([level_db(f) for f in frames])
    assert abs(level - 20 * np.log10(328)) < 0.5
    assert abs(np.mean([energy_db(f) for f in frames]) - level - 10 * np.log10(2)) < 0.5  # differencing doubles it
