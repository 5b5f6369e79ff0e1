"""Audio in: any container FFmpeg reads (WAV, FLAC, OGG/Opus, MP3, M4A/AAC, WebM) or raw PCM -> 16 kHz mono float32.

PyAV decodes (its wheels bundle FFmpeg), channels are averaged, soxr resamples. The engine only sees arrays."""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

SAMPLE_RATE = 16000  # Hz: what the engine takes
PCM_DTYPES = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}


class AudioError(ValueError):
    """Input that is not usable audio; the message is safe to show to the client."""


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono at `rate` -> float32 mono at 16 kHz."""
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32, copy=False)


def decode_file(source: str | Path | bytes | BinaryIO) -> np.ndarray:
    """A whole media file (path, bytes or file object) -> 16 kHz mono float32. Raises AudioError."""
    import av

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    name = str(source) if isinstance(source, (str, Path)) else "input"
    if isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        raise AudioError(f"{name}: the file is empty")
    try:
        with av.open(source if not isinstance(source, Path) else str(source), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: not an audio file (no audio stream found)")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            chunks = []
            for frame in container.decode(stream):
                pcm = _to_float(frame.to_ndarray())
                if frame.format.is_planar:  # (channels, samples)
                    chunks.append(pcm.mean(axis=0))
                else:  # (1, samples * channels), interleaved
                    chunks.append(pcm.reshape(-1, len(frame.layout.channels)).mean(axis=1))
    except AudioError:
        raise
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:  # InvalidDataError and friends
        raise AudioError(f"{name}: not a readable audio file ({e.__class__.__name__}: {e})") from None
    if not chunks or not rate:
        raise AudioError(f"{name}: no audio samples could be decoded")
    return resample(np.concatenate(chunks), rate)


def decode_pcm(data: bytes, encoding: str = "pcm_s16le", sample_rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """Raw interleaved PCM -> 16 kHz mono float32. Raises AudioError on a bad encoding or a partial sample."""
    dtype = PCM_DTYPES.get(encoding)
    if dtype is None:
        raise AudioError(f"unsupported encoding {encoding!r}; use one of {', '.join(PCM_DTYPES)}")
    frame = dtype.itemsize * channels
    if len(data) % frame:
        raise AudioError(f"{len(data)} bytes is not a whole number of {encoding} frames of {channels} channel(s) ({frame} bytes each)")
    pcm = _to_float(np.frombuffer(data, dtype=dtype)).reshape(-1, channels).mean(axis=1)
    return resample(pcm, sample_rate)


def _to_float(pcm: np.ndarray) -> np.ndarray:
    """Samples of any PCM dtype -> float32 in [-1, 1)."""
    if pcm.dtype.kind in "iu":
        info = np.iinfo(pcm.dtype)
        return ((pcm.astype(np.float32) - (info.min + info.max + 1) / 2) / (info.max + 1)).astype(np.float32)
    return pcm.astype(np.float32)
