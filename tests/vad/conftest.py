"""Real speech from /work/shared/speech, spliced with known silences and noise, and its energy-defined speech edges."""
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

SPEECH_DIR = Path("/work/shared/speech")
RATE = 16000  # Hz: every reference clip
FRAME = RATE // 100  # samples: the 10 ms frames the reference edges are measured on
FLOOR_DBFS = -70.0  # a clip's background is taken as no quieter than this (digital silence has no level)
MERGE_MS = 200  # ms: energy dips shorter than this are inside a word, not between words
CLIPS = (  # the English and Chinese clips short enough for a fast stream (mit-license-read is 31 s)
    "aishell-BAC009S0724W0121.wav", "one-two-three.wav", "aishell-BAC009S0764W0121.wav",
    "librispeech-1995-1837-0001.wav", "aishell-BAC009S0764W0122.wav", "jfk.wav",
)
GAPS = (  # (kind, seconds) after each clip: silence and -40 dBFS noise, 0.3-2 s
    ("silence", 0.3), ("brown", 1.0), ("white", 0.6), ("silence", 2.0), ("brown", 0.5), ("white", 1.5),
)
NOISE_ONLY = (("brown", 3.0), ("white", 3.0))  # inserted after the third clip's gap


@lru_cache(maxsize=None)
def load_clip(name: str) -> np.ndarray:
    with wave.open(str(SPEECH_DIR / name)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    pcm.flags.writeable = False
    return pcm


def make_noise(kind: str, seconds: float, seed: int, dbfs: float = -40.0, rate: int = RATE) -> np.ndarray:
    """Digital silence, or white / brown (leaky-integrated white, corner ~13 Hz) noise at `dbfs` RMS, as int16."""
    n = round(seconds * rate)
    if kind == "silence":
        return np.zeros(n, np.int16)
    x = np.random.default_rng(seed).standard_normal(n)
    if kind == "brown":
        y, acc, leak = np.empty(n), 0.0, 1 - 80 / rate
        for i, v in enumerate(x):  # a few seconds at most: a plain loop is fast enough
            acc = leak * acc + v
            y[i] = acc
        x = y
    x *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(x ** 2))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def speech_runs(pcm: np.ndarray) -> list[tuple[int, int]]:
    """True speech inside one clip: 10 ms frames whose RMS (DC removed) exceeds the midpoint, in dB, between the
    clip's background (10th percentile, at least -70 dBFS) and its speech level (90th percentile); runs closer
    than MERGE_MS are one run. Sample indices into `pcm`."""
    n = len(pcm) // FRAME
    frames = pcm[:n * FRAME].astype(np.float64).reshape(n, FRAME)
    db = 20 * np.log10(frames.std(axis=1) / 32768 + 1e-9)
    threshold = (max(np.percentile(db, 10), FLOOR_DBFS) + np.percentile(db, 90)) / 2
    runs: list[list[int]] = []
    for i in np.flatnonzero(db > threshold):
        if runs and i * FRAME - runs[-1][1] < MERGE_MS * RATE // 1000:
            runs[-1][1] = (i + 1) * FRAME
        else:
            runs.append([i * FRAME, (i + 1) * FRAME])
    return [(a, b) for a, b in runs]


@dataclass(frozen=True)
class Spliced:
    pcm: np.ndarray  # int16 at 16 kHz
    runs: list[tuple[int, int]]  # true speech runs, in order, sample indices into pcm
    noise_only: list[tuple[int, int]]  # stretches holding nothing but noise


@pytest.fixture(scope="session")
def spliced() -> Spliced:
    """~47 s: 1 s of white noise, then each clip followed by its gap, with 3 s of brown and 3 s of white noise
    after the third clip's gap."""
    parts, runs, noise_only = [make_noise("white", 1.0, seed=1)], [], []
    pos = len(parts[0])
    for i, (name, (kind, seconds)) in enumerate(zip(CLIPS, GAPS)):
        clip = load_clip(name)
        runs += [(pos + a, pos + b) for a, b in speech_runs(clip)]
        parts += [clip, make_noise(kind, seconds, seed=10 + i)]
        pos += len(clip) + len(parts[-1])
        if i == 2:
            for j, (kind, seconds) in enumerate(NOISE_ONLY):
                parts.append(make_noise(kind, seconds, seed=90 + j))
                noise_only.append((pos, pos + len(parts[-1])))
                pos += len(parts[-1])
    pcm = np.concatenate(parts)
    pcm.flags.writeable = False
    return Spliced(pcm, runs, noise_only)


# The helpers as fixtures: test modules take them as arguments instead of importing conftest, which pytest does
# not guarantee to be importable by name.
@pytest.fixture(scope="session")
def clip():
    return load_clip


@pytest.fixture(scope="session")
def noise():
    return make_noise


@pytest.fixture(scope="session")
def runs_of():
    return speech_runs
