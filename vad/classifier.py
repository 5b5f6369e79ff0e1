"""Per-frame speech decisions: webrtcvad, vetoed where the audio is stationary noise.

webrtcvad adapts its noise model slowly: when a steady hiss starts after a quiet stretch (a fan, a mic gain step,
-40 dBFS white noise after a clip) it calls the noise speech for 1-3 s. Speech is never steady for long: on the
reference clips every 300 ms of loud speech spans >= 6.9 dB of frame energy, while white or brown noise spans
<= 4.6 dB. So audio whose frame energies stay within NOISE_RANGE_DB for NOISE_WINDOW_MS is noise, its level becomes
the noise floor, and a frame counts as speech only if webrtcvad says so and it is NOISE_MARGIN_DB above that floor.
Deciding that needs NOISE_WINDOW_MS of look-ahead, so decisions come out that much late (and exact)."""
import math
from collections import deque

import numpy as np
import webrtcvad

from vad.config import SegmenterConfig

NOISE_WINDOW_MS = 300  # ms of steady energy that prove noise (speech is steady for at most ~200 ms)
NOISE_RANGE_DB = 5.0  # dB: max - min frame energy of noise over NOISE_WINDOW_MS (4.6 at 8 kHz, 1.8 at 48 kHz)
NOISE_MARGIN_DB = 3.0  # dB above the loudest frame of the noise window that speech must reach


def frame_energy_db(frame: np.ndarray) -> float:
    """Energy of the first difference, in dB re 1 LSB^2 (digital silence is 0 dB). Differencing pre-emphasises
    like speech front ends do: it removes DC and whitens brown noise, whose raw energy wanders with sub-audio drift."""
    d = np.diff(frame.astype(np.float64))
    return 10.0 * math.log10(float(np.dot(d, d)) / max(len(d), 1) + 1.0)


class FrameClassifier:
    """Push int16 frames in order; each push returns the final label of the frame `delay` frames back, or None
    while the look-ahead fills. `drain()` labels what is left at the end of the stream."""

    def __init__(self, config: SegmenterConfig) -> None:
        self._vad = webrtcvad.Vad(config.aggressiveness)  # stateful (it adapts): one per stream
        self._rate = config.sample_rate
        self.delay = max(1, NOISE_WINDOW_MS // config.frame_ms)  # frames of look-ahead
        self._queue: deque[tuple[bool, float]] = deque()  # (webrtcvad's verdict, energy) of undecided frames
        self._pushed = 0
        self._noise_until = -1  # index of the newest frame in the latest all-noise window
        self._noise_db = math.inf  # floor speech must clear; nothing is known yet

    def push(self, frame: np.ndarray) -> bool | None:
        energy = frame_energy_db(frame)
        self._queue.append((self._vad.is_speech(frame.tobytes(), self._rate), energy))
        self._pushed += 1
        self._noise_db = min(self._noise_db, energy + NOISE_RANGE_DB)  # the background got quieter: follow at once
        label = self._release() if len(self._queue) > self.delay else None
        window = [e for _, e in self._queue]  # the newest `delay` frames
        if len(window) == self.delay and max(window) - min(window) < NOISE_RANGE_DB:
            self._noise_until, self._noise_db = self._pushed - 1, max(window)
        return label

    def drain(self) -> list[bool]:
        return [self._release() for _ in range(len(self._queue))]

    def _release(self) -> bool:
        index = self._pushed - len(self._queue)
        voiced, energy = self._queue.popleft()
        return voiced and index > self._noise_until and energy > self._noise_db + NOISE_MARGIN_DB
