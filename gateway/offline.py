"""Offline transcription of whole files: decode, split long audio at silence, batch the pieces through the engine.

The JSON shape of `FileTranscript.to_json()` is a contract: benchmarks and checks read `file`, `language`, `text`,
`segments`, `audio_s`, `wall_s`, `rtf`, `decode.forwards` and `decode.tokens`."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from gateway.media import SAMPLE_RATE, AudioError, decode_file
from vad.config import SegmenterConfig
from vad.offline import merge_segments, segment_audio

WINDOW_S = 30.0  # the engine's longest segment


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the file
    end: float
    text: str


@dataclass(frozen=True)
class FileTranscript:
    file: str
    language: str
    text: str
    segments: list[Segment]
    audio_s: float
    wall_s: float
    decode: dict[str, int] = field(default_factory=dict)  # forwards: decoder passes, tokens: tokens emitted

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["rtf"] = round(self.rtf, 4)
        d["wall_s"] = round(self.wall_s, 3)
        d["audio_s"] = round(self.audio_s, 3)
        return d


def split(audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample spans of at most 30 s: the whole clip when it fits, else speech merged into windows."""
    if len(audio) <= WINDOW_S * SAMPLE_RATE:
        return [(0, len(audio))]
    segments = segment_audio(audio, SegmenterConfig(sample_rate=SAMPLE_RATE))
    return merge_segments(segments, max_s=WINDOW_S)


def check_signal(audio: np.ndarray, name: str) -> None:
    if len(audio) < SAMPLE_RATE // 10:
        raise AudioError(f"{name}: {len(audio) / SAMPLE_RATE:.3f} s of audio; at least 0.1 s is needed")
    if not np.any(audio):
        raise AudioError(f"{name}: every sample is zero (no signal)")


def transcribe_file(runner, path: str, options, progress: bool = False) -> FileTranscript:
    """One file through the runner (an engine.runner.ModelRunner); raises AudioError for unusable input."""
    t0 = time.perf_counter()
    audio = decode_file(path)
    check_signal(audio, path)
    spans = split(audio)
    pieces, batch = [], runner.config.max_batch
    for i in range(0, len(spans), batch):
        part = spans[i : i + batch]
        pieces += runner.transcribe([audio[s:e] for s, e in part], options)
        if progress:
            done = spans[min(i + batch, len(spans)) - 1][1] / SAMPLE_RATE
            print(f"\r{path}: {done:.0f}/{len(audio) / SAMPLE_RATE:.0f} s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    segments = [Segment(round(s / SAMPLE_RATE, 3), round(e / SAMPLE_RATE, 3), t.text) for (s, e), t in zip(spans, pieces) if t.text]
    languages = [t.result.language for t in pieces if t.text]
    joiner = "" if languages and max(set(languages), key=languages.count) in ("zh", "ja") else " "
    return FileTranscript(
        file=path,
        language=max(set(languages), key=languages.count) if languages else (options.language or "en"),
        text=joiner.join(s.text for s in segments),
        segments=segments,
        audio_s=len(audio) / SAMPLE_RATE,
        wall_s=time.perf_counter() - t0,
        decode={"forwards": sum(t.result.forwards for t in pieces), "tokens": sum(t.result.emitted for t in pieces)},
    )
