"""Offline transcription of whole files: decode, split long audio at silence, batch the pieces through the engine.

`pieces()` is the one way to do it: an async iterator that yields each window's transcript as soon as its batch is
decoded, batches growing 1, 2, 4, ... up to the engine's max batch, so the first text of a long file comes after one
window's decode and later batches are full. The CLI drives it with a ModelRunner in a thread (`runner_batches`),
the HTTP APIs with the served Engine (`engine_batches`); both build their result with `separator`.

The JSON shape of `FileTranscript.to_json()` is a contract: benchmarks and checks read `file`, `language`, `text`,
`segments`, `audio_s`, `wall_s`, `rtf`, `decode.forwards` and `decode.tokens`."""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from gateway.media import SAMPLE_RATE, AudioError, decode_file
from vad.config import SegmenterConfig
from vad.offline import merge_segments, segment_audio

if TYPE_CHECKING:  # torch: the engine is reached through the objects callers pass in
    from engine.messages import DecodeOptions
    from engine.runner import ModelRunner
    from engine.messages import Transcript, WordTiming
    from engine.service import Engine

WINDOW_S = 30.0  # the engine's longest segment
CHARACTER_LANGUAGES = ("zh", "ja")  # written without spaces: their pieces are joined without one

# a batch of 16 kHz windows and their options -> one Transcript each, in order
Batches = Callable[[list[np.ndarray], "DecodeOptions"], Awaitable[list["Transcript"]]]


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the file
    end: float
    text: str
    language: str = ""
    words: list[dict] | None = None  # with word timestamps: [{"word", "start", "end", "probability"}], file seconds


@dataclass(frozen=True)
class Piece:
    """One window of a file, transcribed."""

    index: int  # position among the file's windows
    start: float  # seconds from the start of the file
    end: float
    transcript: Transcript  # text "" when the window held no speech


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
        for segment in d["segments"]:  # words only where asked for
            if segment["words"] is None:
                del segment["words"]
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


def waves(n: int, max_batch: int) -> Iterator[range]:
    """Index ranges of batches over n windows: 1, 2, 4, ... then max_batch each."""
    i, size = 0, 1
    while i < n:
        yield range(i, min(n, i + size))
        i, size = i + size, min(2 * size, max_batch)


def separator(previous: str | None, language: str) -> str:
    """What goes between the previous piece's text (its language; None: none yet) and the next one's."""
    if previous is None or previous in CHARACTER_LANGUAGES or language in CHARACTER_LANGUAGES:
        return ""
    return " "


async def pieces(audio: np.ndarray, options: DecodeOptions, batches: Batches, max_batch: int) -> AsyncIterator[Piece]:
    """The file's windows in order, each yielded once its batch is decoded (see the module docstring)."""
    spans = await asyncio.to_thread(split, audio)  # the VAD is CPU work: off the event loop
    for wave in waves(len(spans), max_batch):
        part = spans[wave.start : wave.stop]
        for i, (s, e), t in zip(wave, part, await batches([audio[s:e] for s, e in part], options)):
            yield Piece(i, round(s / SAMPLE_RATE, 3), round(e / SAMPLE_RATE, 3), t)


def runner_batches(runner: ModelRunner) -> Batches:
    """Batches on a ModelRunner of this process, run in the calling thread (the CLI, whose event loop has nothing
    else to do meanwhile). Not in a worker thread: there torch's many small parallel ops start their OpenMP teams
    slower, and a 5-minute file took 10.3 s instead of 6.5 s on this 2-core CPU."""

    async def run(audios: list[np.ndarray], options: DecodeOptions) -> list[Transcript]:
        return runner.transcribe(audios, options)

    return run


def engine_batches(engine: Engine, stream: str) -> Batches:
    """Batches on the served Engine as finals of `stream` (never shed); cancelling the caller cancels them."""

    async def run(audios: list[np.ndarray], options: DecodeOptions) -> list[Transcript]:
        return list(await asyncio.gather(*(engine.transcribe(a, options, stream=stream, final=True) for a in audios)))

    return run


async def transcribe_audio(audio: np.ndarray, name: str, options: DecodeOptions, batches: Batches, max_batch: int,
                           progress: bool = False) -> FileTranscript:
    """Decoded audio -> its FileTranscript."""
    t0 = time.perf_counter()
    got: list[Piece] = []
    async for piece in pieces(audio, options, batches, max_batch):
        got.append(piece)
        if progress:
            print(f"\r{name}: {piece.end:.0f}/{len(audio) / SAMPLE_RATE:.0f} s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return assemble(name, got, len(audio) / SAMPLE_RATE, time.perf_counter() - t0, options.language or "en")


def assemble(name: str, got: list[Piece], audio_s: float, wall_s: float, default_language: str) -> FileTranscript:
    """A file's pieces, in order -> its FileTranscript: the spoken pieces' texts joined, the majority language."""
    spoken = [p for p in got if p.transcript.text]
    languages = [p.transcript.result.language for p in spoken]
    text, previous = "", None
    for p in spoken:
        text += separator(previous, p.transcript.result.language) + p.transcript.text
        previous = p.transcript.result.language
    return FileTranscript(
        file=name,
        language=max(set(languages), key=languages.count) if languages else default_language,
        text=text,
        segments=[Segment(p.start, p.end, p.transcript.text, p.transcript.result.language, words(p)) for p in spoken],
        audio_s=audio_s,
        wall_s=wall_s,
        decode={"forwards": sum(p.transcript.result.forwards for p in got),
                "tokens": sum(p.transcript.result.emitted for p in got)},
    )


def word_dicts(timed: tuple[WordTiming, ...], offset: float, span: tuple[float, float] | None = None) -> list[dict]:
    """The engine's timed words as JSON: `offset` seconds added (where the decoded audio began), times kept inside
    `span` if given."""
    lo, hi = span or (float("-inf"), float("inf"))
    at = lambda t: round(min(max(offset + t, lo), hi), 3)  # noqa: E731
    return [{"word": w.word.strip(), "start": at(w.start), "end": at(w.end), "probability": round(w.probability, 3)}
            for w in timed if w.word.strip()]


def words(piece: Piece) -> list[dict] | None:
    """A piece's timed words in file seconds, or None when its decode did not time them."""
    return word_dicts(piece.transcript.result.words, piece.start) if piece.transcript.result.words else None


def transcribe_file(runner: ModelRunner, path: str, options: DecodeOptions, progress: bool = False) -> FileTranscript:
    """One file through the runner; raises AudioError for unusable input."""
    t0 = time.perf_counter()
    audio = decode_file(path)
    check_signal(audio, path)
    result = asyncio.run(transcribe_audio(audio, path, options, runner_batches(runner), runner.config.max_batch, progress))
    return replace(result, wall_s=time.perf_counter() - t0)  # decoding counts, as it always has
