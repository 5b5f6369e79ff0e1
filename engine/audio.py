"""Log-mel features exactly as Whisper defines them, in plain torch (no torchaudio, no librosa)."""
from functools import lru_cache

import numpy as np
import torch

from engine.messages import SAMPLE_RATE

N_FFT = 400  # samples: a 25 ms analysis window
HOP_LENGTH = 160  # samples: a 10 ms frame hop
CHUNK_LENGTH = 30  # seconds: the window Whisper was trained on
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30 s window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
ENCODER_STRIDE = 2  # the second conv halves the frame rate: 1500 encoder positions per 30 s
HOP_PAD = 400  # samples of zeros after a trimmed segment's padding: the last frames see silence, not a reflection


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """Slaney-normalised triangular filterbank (n_mels, N_FFT // 2 + 1), as librosa.filters.mel builds it for Whisper."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]  # equal area per filter
    return torch.from_numpy(weights.astype(np.float32))


def log_mel_spectrogram(audio: np.ndarray | torch.Tensor, n_mels: int = 80, padding: int = 0) -> torch.Tensor:
    """(n_samples,) float32 at 16 kHz -> (n_mels, (n_samples + padding) // HOP_LENGTH) Whisper log-mel.

    `padding` zeros are appended first, as Whisper does with a 30 s pad; the clamp to max-8 is taken over the
    whole result, which padding cannot change (silence sits at the floor)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    if padding:
        x = torch.nn.functional.pad(x, (0, padding))
    window = torch.hann_window(N_FFT, device=x.device)
    spec = torch.stft(x, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = spec[..., :-1].abs() ** 2  # drop the frame centred past the end, as Whisper does
    mel = mel_filters(n_mels).to(x.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def n_frames(n_samples: int) -> int:
    """Mel frames that carry the audio of `n_samples` samples (the rest of a window is padding)."""
    return n_samples // HOP_LENGTH
