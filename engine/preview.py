"""Decodes of a growing segment that encode only its new audio.

A live segment is decoded again every quarter second for its partial caption, and encoding the whole segment each
time makes a decode cost grow with the segment (quadratic over it). Here a stream's decodes keep the encoder's
keys/values, and the decoder's cross-attention keys/values, of the positions an earlier decode already
encoded, and each decode encodes only the positions after them, attending over the kept ones
(`AudioEncoder.extend`). The kept positions never saw the audio after them, so this approximates the full
encode, at a fraction of the encoder time (tests/engine/test_preview.py bounds the difference in words; figures in
docs/performance.md). Partials start such a state. On a busy engine a pause's decode starts or extends it too,
and a final extends the one its partials and pauses left, so it encodes its last half second and the padding, not
the whole segment; an engine with nothing else to do encodes them in full, as offline (engine/service.py).

The positions of the last MARGIN_S of audio are encoded again by the next decode: they saw only the silence
padding after them, and re-encoding them with the audio that follows keeps word endings right. The audio is
followed by the same silence as in the full encode (EngineConfig.trim_pad_s), so a preview differs from it only
in its kept positions: a shorter pad read more words differently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.audio import HOP_LENGTH, HOP_PAD, N_FRAMES, SAMPLE_RATE, log_mel_spectrogram, n_frames
from engine.model import CrossKV, EncoderCache, Whisper

MARGIN_S = 0.5


@dataclass
class Preview:
    """One stream's kept encoding of its current segment, valid for audio that starts with `audio`. Only the
    thread that runs the previews touches it."""

    encoder: EncoderCache = field(default_factory=EncoderCache)
    cross: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per decoder layer, (H, T, D/H) each
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # the samples the kept positions cover

    def reset(self) -> None:
        self.encoder, self.cross, self.audio = EncoderCache(), [], np.zeros(0, np.float32)

    def extends(self, audio: np.ndarray) -> bool:
        n = len(self.audio)
        return n <= len(audio) and np.array_equal(audio[:n], self.audio)


@torch.inference_mode()
def preview_cross(model: Whisper, audio: np.ndarray, state: Preview, dtype: torch.dtype, pad_s: float) -> CrossKV:
    """A segment's cross-attention keys/values for a preview, as one CrossKV row, encoded with `pad_s` of silence
    after the audio; `state` is updated for the next, longer audio of the segment (and starts afresh when `audio`
    does not extend what it kept)."""
    if not state.extends(audio):
        state.reset()
    try:
        return _extend(model, audio, state, dtype, pad_s)
    except BaseException:
        state.reset()  # half updated: the next preview starts afresh
        raise


def _extend(model: Whisper, audio: np.ndarray, state: Preview, dtype: torch.dtype, pad_s: float) -> CrossKV:
    enc, dec = model.encoder, model.decoder
    pad = int(pad_s * SAMPLE_RATE)
    frames = min(N_FRAMES, n_frames(len(audio) + pad))  # as the full encode: at most Whisper's 30 s window
    device = dec.positional_embedding.device
    mel = log_mel_spectrogram(audio, model.dims.n_mels, padding=pad + HOP_PAD)[:, :frames].to(device, dtype)
    commit = max(0, n_frames(len(audio)) - int(MARGIN_S * SAMPLE_RATE) // HOP_LENGTH) // 2
    features = enc.extend(mel[None], state.encoder, commit)[0]
    new = dec.cross_kv(features[None], None)
    kept = state.encoder.length
    keys, values = [], []
    for i, (k, v) in enumerate(zip(new.keys, new.values)):
        k, v = k[0], v[0]
        if i < len(state.cross):
            k, v = torch.cat([state.cross[i][0], k], 1), torch.cat([state.cross[i][1], v], 1)
            state.cross[i] = k[:, :kept], v[:, :kept]
        else:
            state.cross.append((k[:, :kept], v[:, :kept]))
        keys.append([k])
        values.append([v])
    state.audio = audio[: kept * 2 * HOP_LENGTH].copy()
    return CrossKV(keys, values)
