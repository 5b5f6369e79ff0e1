"""Per-frame speech decisions: webrtcvad's, vetoed where the audio is steady noise or far below the speech around it.

webrtcvad adapts its noise model slowly and never fully: after a step up in background level (a fan starting,
-40 dBFS hiss after a quiet stretch, even a clip's room tone after digital silence) it calls 15-50 % of the noise
speech for many seconds. So a voiced frame must also pass:

- Steadiness. Speech is never steady for long: on the reference clips every 300 ms of loud speech spans >= 6.9 dB
  of frame energy (energy_db), while white or brown noise spans <= 4.6 dB. Frames in a window that stays within
  NOISE_RANGE_DB for NOISE_WINDOW_MS are noise, and later frames must clear that window's loudest frame by
  NOISE_MARGIN_DB.
- Escape. energy_db weighs high frequencies, so hiss can hide quiet speech there while the speech still shows in
  the full-band level_db: a frame ESCAPE_DB louder (level_db) than the steady noise is speech riding on it.
- Level. A frame EDGE_DB below the speech envelope (the loudest frame of the next NOISE_WINDOW_MS, or an earlier
  one less ENVELOPE_DECAY_DB_S per second since) is background: crowd murmur or room tone next to a talker.

Labels need NOISE_WINDOW_MS of look-ahead, so they come out that much late, and the same whatever the chunking."""
import itertools
import math
import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from vad.config import SegmenterConfig

NOISE_WINDOW_MS = 300  # ms of steady energy that prove noise (loud speech is never that steady)
NOISE_RANGE_DB = 5.0  # dB: noise spans <= 4.6 dB over NOISE_WINDOW_MS (80-sample frames at 8 kHz; 1.8 at 48 kHz)
NOISE_MARGIN_DB = 3.0  # dB of energy above the loudest frame of the latest noise window that speech must reach
ESCAPE_DB = 6.0  # dB of level above the steady noise's loudest frame that marks speech on top of it
EDGE_DB = 25.0  # dB below the envelope where speech ends and background begins
ENVELOPE_DECAY_DB_S = 5.0  # dB/s: a talker 25 dB softer than the last one is heard again within 5 s


def energy_db(frames: np.ndarray) -> np.ndarray:
    """Energy of the first difference of each frame (the last axis), dB re 1 LSB^2 (digital silence: 0 dB).
    Differencing pre-emphasises as speech front ends do: it removes DC and whitens brown noise, whose raw level
    wanders with its sub-audio drift, so any steady noise reads as steady."""
    d = np.diff(frames.astype(np.float64), axis=-1)
    return 10.0 * np.log10((d * d).sum(-1) / max(d.shape[-1], 1) + 1.0)


def level_db(frames: np.ndarray) -> np.ndarray:
    """Mean square of each frame (the last axis) with its DC removed, dB re 1 LSB^2: unlike energy_db it keeps the
    vowels' low frequencies, which carry most of speech's loudness."""
    x = frames.astype(np.float64)
    x -= x.mean(-1, keepdims=True)
    return 10.0 * np.log10((x * x).sum(-1) / x.shape[-1] + 1.0)


@dataclass
class _Frame:
    voiced: bool  # webrtcvad's verdict
    energy: float  # energy_db
    level: float  # level_db
    steady: bool = False  # inside a steady (noise) window


class FrameClassifier:
    """Push int16 frames in order, each with its energy_db and level_db (measured a chunk of frames at a time:
    numpy's cost is per call); each push returns the final label of the frame `delay` frames back, or None while
    the look-ahead fills. `drain()` labels the rest at the end of the stream."""

    def __init__(self, config: SegmenterConfig) -> None:
        self._vad = webrtcvad.Vad(config.aggressiveness)  # stateful (it adapts): one per stream
        self._rate = config.sample_rate
        self.delay = max(1, NOISE_WINDOW_MS // config.frame_ms)  # frames of look-ahead
        self._decay = ENVELOPE_DECAY_DB_S * config.frame_ms / 1000  # dB per frame
        self._queue: deque[_Frame] = deque()  # frames pushed but not yet labelled, oldest first
        self._levels: deque[float] = deque()  # their level_db, for maxima over the look-ahead
        self._window: deque[_Frame] = deque(maxlen=self.delay)  # the latest frames pushed: a noise window if steady
        self._energies: deque[float] = deque(maxlen=self.delay)  # their energy_db
        self._noise_energy = math.inf  # energy floor speech must clear (nothing known yet)
        self._noise_level = math.inf  # level of the steady noise, to escape from (nothing known yet)
        self._envelope = -math.inf  # decayed level of the loudest frame labelled so far

    def push(self, frame: np.ndarray, energy: float, level: float) -> bool | None:
        new = _Frame(self._vad.is_speech(frame.tobytes(), self._rate), energy, level)
        self._queue.append(new)
        self._levels.append(level)
        self._window.append(new)
        self._energies.append(energy)
        self._noise_energy = min(self._noise_energy, energy + NOISE_RANGE_DB)  # quieter background: follow now
        window, energies = self._window, self._energies
        if len(window) == self.delay and max(energies) - min(energies) < NOISE_RANGE_DB:
            self._noise_energy = max(energies)
            for f in window:
                f.steady = True
            # Learn the noise's level when the level is steady too (hiss), mostly well above the known one (a new,
            # low-pitched noise: brown noise's level swings 15 dB) or all below it (the noise went quieter). Anything
            # else is speech riding on the known noise, which must not raise it.
            levels = [f.level for f in window]
            typical = statistics.median(levels)
            if (max(levels) - min(levels) < NOISE_RANGE_DB or typical > self._noise_level + NOISE_RANGE_DB
                    or max(levels) < self._noise_level):
                self._noise_level = max(levels)
        return self._release() if len(self._queue) > self.delay else None

    def ahead(self) -> tuple[int, int]:
        """What is known of the labels of the frames pushed but not yet labelled (oldest first) -> (quiet, loud):
        the first `quiet` and every frame after the first `loud` will be labelled False (loud 0: all of them).
        Known False: webrtcvad called it unvoiced, or it is EDGE_DB below the speech envelope as far as it is known
        (the vetoes only ever turn voiced frames unvoiced, and frames still to come can only raise the envelope). A
        speaker's reverberant tail that webrtcvad still calls voiced is heard as silence this way, and so is the
        silence after the last words while the look-ahead still holds them."""
        frames, levels, n = self._queue, self._levels, len(self._queue)
        envelope, decay, first = self._envelope, self._decay, n
        envelopes = []  # each frame's envelope as _release will have it when its turn comes
        for i, f in enumerate(frames):
            envelope = envelope - decay if envelope - decay > f.level else f.level
            envelopes.append(envelope)
            if f.voiced and f.level >= max(envelope, max(itertools.islice(levels, i + 1, None),
                                                         default=-math.inf)) - EDGE_DB:
                first = i
                break
        if first == n:
            return n, 0
        newest = frames[-1]
        if newest.voiced and newest.level >= max(self._envelope, max(levels)) - EDGE_DB:  # above any envelope's bound
            return first, n
        for f in itertools.islice(frames, first + 1, None):
            envelope = envelope - decay if envelope - decay > f.level else f.level
            envelopes.append(envelope)
        later = -math.inf  # the loudest frame after i
        for i in range(n - 1, first, -1):
            f = frames[i]
            if f.voiced and f.level >= max(envelopes[i], later) - EDGE_DB:
                return first, i + 1
            later = max(later, f.level)
        return first, first + 1

    def drain(self) -> list[bool]:
        return [self._release() for _ in range(len(self._queue))]

    def _release(self) -> bool:
        f = self._queue.popleft()
        self._levels.popleft()
        self._envelope = max(self._envelope - self._decay, f.level)
        envelope = max(self._envelope, max(self._levels, default=-math.inf))
        above_noise = not f.steady and f.energy > self._noise_energy + NOISE_MARGIN_DB
        escaped = f.level > self._noise_level + ESCAPE_DB
        return f.voiced and (above_noise or escaped) and f.level >= envelope - EDGE_DB
