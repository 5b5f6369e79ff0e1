"""Audio in: any container FFmpeg reads (WAV, FLAC, OGG/Opus, MP3, M4A/AAC, WebM) or raw PCM -> 16 kHz mono float32.

PyAV decodes (its wheels bundle FFmpeg), channels are averaged, soxr resamples. The engine only sees arrays."""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

from engine.messages import SAMPLE_RATE  # the engine's rate (torch-free), what all audio is converted to

PCM_DTYPES = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}
TRUNCATED_S = 1.0  # decoded audio this much (and 10 %) shorter than the container declares: a cut-off upload


class AudioError(ValueError):
    """Input that is not usable audio; the message is safe to show to the client."""


class TooLong(AudioError):
    """Audio over the caller's duration limit (decoding stops there: a 4 h upload never sits in memory whole)."""


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono at `rate` -> float32 mono at 16 kHz."""
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32, copy=False)


def decode_file(source: str | Path | bytes | BinaryIO, max_s: float | None = None) -> np.ndarray:
    """A whole media file (path, bytes or file object) -> 16 kHz mono float32. Raises AudioError; TooLong past
    `max_s` seconds. A file that decodes to far less than its header declares (an upload cut off mid-way: MP3 with
    a Xing/Info header, WebM, M4A) is an AudioError too, rather than a transcript of its first part."""
    import av

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    name = str(source) if isinstance(source, (str, Path)) else "input"
    if isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        raise AudioError(f"{name}: the file is empty")
    try:
        # mode "r" always: PyAV would take a read-write file object's mode ("w+b", e.g. a spooled upload) for output
        with av.open(source if not isinstance(source, Path) else str(source), "r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: not an audio file (no audio stream found)")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            declared = container.duration / 1e6 if container.duration else None  # AV_TIME_BASE: microseconds
            chunks, samples = [], 0
            for frame in container.decode(stream):
                pcm = _to_float(frame.to_ndarray())
                if frame.format.is_planar:  # (channels, samples)
                    chunks.append(pcm.mean(axis=0))
                else:  # (1, samples * channels), interleaved
                    chunks.append(pcm.reshape(-1, len(frame.layout.channels)).mean(axis=1))
                samples += len(chunks[-1])
                if max_s is not None and rate and samples > max_s * rate:
                    raise TooLong(f"{name}: audio longer than the {max_s:g} s limit")
    except AudioError:
        raise
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:  # InvalidDataError and friends
        raise AudioError(f"{name}: not a readable audio file ({e.__class__.__name__}: {e})") from None
    if not chunks or not rate:
        raise AudioError(f"{name}: no audio samples could be decoded")
    decoded = samples / rate
    if declared is not None and declared - decoded > max(TRUNCATED_S, 0.1 * declared):
        raise AudioError(f"{name}: truncated: the file declares {declared:.1f} s of audio, only {decoded:.1f} s decodes")
    return resample(np.concatenate(chunks), rate)


def decode_pcm(data: bytes, encoding: str = "pcm_s16le", sample_rate: int = SAMPLE_RATE, channels: int = 1,
               max_s: float | None = None) -> np.ndarray:
    """Raw interleaved PCM -> 16 kHz mono float32. Raises AudioError on a bad encoding or a partial sample, TooLong
    past `max_s` seconds."""
    dtype = PCM_DTYPES.get(encoding)
    if dtype is None:
        raise AudioError(f"unsupported encoding {encoding!r}; use one of {', '.join(PCM_DTYPES)}")
    frame = dtype.itemsize * channels
    if len(data) % frame:
        raise AudioError(f"{len(data)} bytes is not a whole number of {encoding} frames of {channels} channel(s) ({frame} bytes each)")
    if max_s is not None and len(data) // frame > max_s * sample_rate:
        raise TooLong(f"audio longer than the {max_s:g} s limit")
    pcm = _to_float(np.frombuffer(data, dtype=dtype))
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1)
    return resample(pcm, sample_rate)


def _to_float(pcm: np.ndarray) -> np.ndarray:
    """Samples of any PCM dtype -> float32 in [-1, 1). AudioError for NaN or infinite float samples, which no
    microphone makes and every later stage would choke on."""
    if pcm.dtype.kind in "iu":
        info = np.iinfo(pcm.dtype)
        return ((pcm.astype(np.float32) - (info.min + info.max + 1) / 2) / (info.max + 1)).astype(np.float32)
    pcm = pcm.astype(np.float32)
    if not np.isfinite(pcm).all():
        raise AudioError("the audio holds NaN or infinite samples")
    return pcm
