"""The model runner: loads a Whisper model for a device and compute type, and runs batches of segments.

Arrays in (16 kHz float32 segments of at most 30 s), text and tokens out. It decides nothing about what to run
when: a scheduler (or the CLI) hands it batches."""
from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine import prepared
from engine.alignment import default_heads
from engine.audio import HOP_LENGTH, HOP_PAD, N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, n_frames
from engine.checkpoint import load_checkpoint
from engine.decoding import Batch, GreedyDecoder
from engine.messages import DecodeOptions, DecodeResult, EngineConfig, Transcript
from engine.model import CrossKV, ModelDimensions, Whisper, uninitialised
from engine.models import resolve
from engine.mtp import CTCHead, find_heads, load_heads
from engine.preview import Preview, preview_cross
from engine.quant import quantize_int8
from engine.tokenizer import Tokenizer

MIN_SAMPLES = SAMPLE_RATE // 10  # 100 ms: shorter input holds no word
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: a segment whose loudest sample stays below holds no speech


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (is the CUDA build of torch installed?)")
    return torch.device(device)


def audio_attention(device: torch.device, compute_type: str, choice: str = "auto") -> torch.dtype | None:
    """The dtype of attention over the audio (the encoder's, and the decoder's cross-attention with the keys/values
    it keeps); None: the activations' dtype. "auto": bfloat16 for int8 on a CPU with AMX, whose tiles make it
    faster; elsewhere float32, as on AVX512-BF16 without AMX, where bfloat16 attention is no faster for the
    encoder and several times slower for a decoder step (docs/performance.md, "What the fast paths need")."""
    if device.type != "cpu" or choice == "float32" or (choice == "auto" and compute_type != "int8"):
        return None
    if choice == "bfloat16" or torch.cpu.get_capabilities().get("amx_bf16", False):
        return torch.bfloat16
    return None


def pick_compute_type(compute_type: str, device: torch.device) -> str:
    if compute_type == "auto":
        return "float16" if device.type == "cuda" else "int8"
    if compute_type == "int8" and device.type != "cpu":
        raise ValueError("compute type int8 runs on the CPU only; use float16 or bfloat16 on CUDA")
    return compute_type


class ModelRunner:
    def __init__(self, config: EngineConfig = EngineConfig()):
        self.config = config
        self.device = pick_device(config.device)
        self.compute_type = pick_compute_type(config.compute_type, self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self._cores = torch.get_num_threads()  # intra-op threads of the thread that loaded the model
        folder = resolve(config.model)
        # float64 self-attention on the CPU: exact, so drafts and batching never change a token (engine/model.py)
        exact = self.device.type == "cpu" and self.compute_type in ("int8", "float32")
        audio_dtype = audio_attention(self.device, self.compute_type, config.audio_attention)

        def build(dims: ModelDimensions) -> Whisper:
            with uninitialised():  # every weight comes from the checkpoint
                return Whisper(dims, attn_dtype=torch.float64 if exact else None, audio_attn_dtype=audio_dtype)

        int8, cache = self.compute_type == "int8", prepared.prepared_path(folder)
        loaded = prepared.load(cache, build) if int8 else None
        if loaded is not None:  # quantised on an earlier start (engine/prepared.py)
            model, ckpt = loaded
        else:
            ckpt = load_checkpoint(folder)
            model = build(ckpt.dims)
            missing = model.load_state_dict(ckpt.state, strict=False).missing_keys  # unembed: tied to the embedding
            if set(missing) - {"decoder.unembed.weight"}:
                raise ValueError(f"checkpoint {folder} lacks weights: {', '.join(missing)}")
            ckpt = replace(ckpt, state={})  # its float32 copy of every weight must not outlive loading (peak RSS)
            if int8:
                prepared.save(cache, quantize_int8(model), ckpt)
            elif self.compute_type != "float32":
                model = model.to(getattr(torch, self.compute_type))
        suppress, suppress_begin = ckpt.suppress_ids, ckpt.suppress_ids_begin
        align_heads = ckpt.alignment_heads or default_heads(ckpt.dims.n_text_layer, ckpt.dims.n_text_head)
        model.eval()
        self.model = model.to(self.device)
        self.dtype = torch.float32 if self.compute_type == "int8" else getattr(torch, self.compute_type)
        self.tokenizer = Tokenizer.from_file(folder / "tokenizer.json", multilingual=model.is_multilingual)
        self.sha256 = (folder / ".verified").read_text().strip() if (folder / ".verified").exists() else None
        self.heads_path = None if config.mtp_heads == "none" else (
            Path(config.mtp_heads) if config.mtp_heads else find_heads(folder, self.sha256))
        heads, self.audio_head = None, None
        if self.heads_path is not None:
            heads, self.heads_meta = load_heads(self.heads_path, self.sha256)
            heads = heads.to(self.device, self.dtype)
            if self.compute_type == "int8":  # drafting reads the heads' weights every step: a quarter of the bytes
                heads = quantize_int8(heads)
            if isinstance(heads, CTCHead):  # the audio head guesses from the encoder output, before decoding
                heads, self.audio_head = None, heads
        self.decoder = GreedyDecoder(self.model, self.tokenizer, suppress, suppress_begin, heads, config.n_drafts,
                                     config.draft_min_prob, align_heads)
        self.model_name = config.model

    @cached_property
    def _opencc(self):
        import opencc

        return opencc.OpenCC("t2s" if self.config.zh_script == "simplified" else "s2t")

    @torch.inference_mode()
    def _features(self, audios: list[np.ndarray], encoder: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments -> mel batch (B, n_mels, F) and each row's real frames (None in full-window mode)."""
        n_mels = self.model.dims.n_mels
        if encoder == "full":
            mels = [log_mel_spectrogram(a, n_mels, padding=N_SAMPLES)[:, :N_FRAMES] for a in audios]
            return torch.stack(mels).to(self.device, self.dtype), None
        frames = [self._frames(a) for a in audios]
        width = max(map(_bucket, frames))
        batch = torch.zeros(len(audios), n_mels, width)
        pad = int(self.config.trim_pad_s * SAMPLE_RATE)
        for i, (a, f) in enumerate(zip(audios, frames)):
            batch[i, :, :f] = log_mel_spectrogram(a, n_mels, padding=pad + HOP_PAD)[:, :f]
        return batch.to(self.device, self.dtype), torch.tensor(frames, device=self.device)

    @torch.inference_mode()
    def transcribe(self, audios: list[np.ndarray], options: DecodeOptions | list[DecodeOptions] = DecodeOptions(),
                   encoder: str | None = None) -> list[Transcript]:
        """16 kHz mono float32 segments (each 0.1-30 s) -> one Transcript each, in order, batched by max_batch.
        `encoder` overrides the configured encoder mode for this call."""
        opts = options if isinstance(options, list) else [options] * len(audios)
        encoder = encoder or self.config.encoder
        for a in audios:
            check_segment(a)
        out: list[Transcript] = []
        for i in range(0, len(audios), self.config.max_batch):
            chunk, chunk_opts = audios[i : i + self.config.max_batch], opts[i : i + self.config.max_batch]
            results = self._run(chunk, chunk_opts, encoder)
            # Whisper falls back to sampling when a decode loops; we fall back to the 30 s window it was trained on.
            retry = [j for j, r in enumerate(results) if r.looped and encoder == "trim"]
            if retry:
                again = self._run([chunk[j] for j in retry], [chunk_opts[j] for j in retry], "full")
                for j, r in zip(retry, again):
                    results[j] = r
            out += [self.finish(r, o, a) for r, o, a in zip(results, chunk_opts, chunk)]
        return out

    @property
    def has_mtp(self) -> bool:
        """Whether `drafts="mtp"` has heads to draft with (else it decodes one token per step)."""
        return self.audio_head is not None or self.decoder.mtp is not None

    def _run(self, audios: list[np.ndarray], opts: list[DecodeOptions], encoder: str) -> list[DecodeResult]:
        cross, guesses = self.cross(audios, encoder, opts)
        return self.decoder.decode(cross, opts, guesses, [audio_positions(a) for a in audios])

    def _frames(self, audio: np.ndarray) -> int:
        """Mel frames a trimmed segment encodes: its audio plus trim_pad_s of silence."""
        return min(N_FRAMES, max(2, n_frames(len(audio) + int(self.config.trim_pad_s * SAMPLE_RATE))))

    @torch.inference_mode()
    def encode(self, audios: list[np.ndarray], encoder: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments -> encoder output (B, T, D) and its validity mask (B, T) (None in full-window mode).

        Trimmed rows are encoded in groups of one bucketed width, never padded to a longer neighbour: float32
        kernels round differently at other shapes (and int8 amplifies it), so this keeps a segment's features,
        and so its tokens, the same whatever else is in its batch."""
        if encoder == "full":
            return self.model.encoder(*self._features(audios, encoder))
        groups: dict[int, list[int]] = {}
        for i, a in enumerate(audios):
            groups.setdefault(_bucket(self._frames(a)), []).append(i)
        parts = {}
        for idx in groups.values():
            enc, mask = self.model.encoder(*self._features([audios[i] for i in idx], encoder))
            parts |= {i: (e, m) for i, e, m in zip(idx, enc, mask)}
        T = max(e.shape[0] for e, _ in parts.values())
        enc = torch.stack([F.pad(parts[i][0], (0, 0, 0, T - parts[i][0].shape[0])) for i in range(len(audios))])
        mask = torch.stack([F.pad(parts[i][1], (0, T - parts[i][1].shape[0])) for i in range(len(audios))])
        return enc, mask

    @torch.inference_mode()
    def cross(self, audios: list[np.ndarray], encoder: str, opts: list[DecodeOptions],
               previews: list[Preview | None] | None = None) -> tuple[CrossKV, list[tuple[int, ...]]]:
        """-> the rows' cross-attention keys/values and the audio head's guess of each row whose
        options draft from the heads (else ()). Rows with a Preview state encode only what is new since their
        last preview (engine/preview.py); they have no guess (their drafts are the previous partial's tokens)."""
        previews = previews if previews and encoder == "trim" else [None] * len(audios)
        full = [i for i, p in enumerate(previews) if p is None]
        guesses: list[tuple[int, ...]] = [()] * len(audios)
        cross = None
        if full:
            enc, mask = self.encode([audios[i] for i in full], encoder)
            cross = self.model.decoder.cross_kv(enc, mask)
            wants = [n for n, i in enumerate(full) if opts[i].drafts in ("mtp", "both")]
            if self.audio_head is not None and wants:
                at = torch.tensor(wants, device=enc.device)
                for n, g in zip(wants, self.audio_head.guess(enc[at], None if mask is None else mask[at])):
                    guesses[full[n]] = g
        for i, p in enumerate(previews):
            if p is not None:
                row = preview_cross(self.model, audios[i], p, self.dtype, self.config.trim_pad_s)
                if cross is None:
                    cross = row
                else:
                    cross.extend(row)
        assert cross is not None
        if len(full) < len(audios):  # back into the callers' order: full rows came first, then previews
            at = {i: n for n, i in enumerate(full + [i for i, p in enumerate(previews) if p is not None])}
            cross.select([at[i] for i in range(len(audios))])
        return cross, guesses

    @torch.inference_mode()
    def start(self, audios: list[np.ndarray], options: list[DecodeOptions], keys: list[object],
              encoder: str | None = None, previews: list[Preview | None] | None = None) -> Batch:
        """Encode segments and prefill their decoding -> a Batch to `step` (or to `extend` a running one with).
        `previews`: per row, None, or the Preview state of a partial of a growing segment (updated in place)."""
        for a in audios:
            check_segment(a)
        cross, guesses = self.cross(audios, encoder or self.config.encoder, options, previews)
        return self.decoder.prefill(cross, options, keys, guesses, [audio_positions(a) for a in audios])

    def share_cores(self, workers: int) -> None:
        """Called by each of `workers` threads that run this model at the same time: the calling thread's torch
        threads become the configured count, or else an equal share of the cores. Each thread that runs torch ops
        has its own OpenMP team, and a full-size team per worker keeps its threads spinning on the cores the other
        worker computes on (docs/performance.md, "Kernel choices")."""
        # A thread's first parallel op sets its team to the count some thread set last (torch's lazy per-thread
        # init): asking first runs that init now, so the count set next is the one this thread keeps.
        torch.get_num_threads()
        torch.set_num_threads(self.config.threads or max(1, self._cores // workers))

    def step(self, batch: Batch) -> list[tuple[object, DecodeResult]]:
        """One decoder step of a running batch -> the rows that finished, by key (they leave the batch)."""
        return self.decoder.step(batch)

    def finish(self, r: DecodeResult, opts: DecodeOptions, audio: np.ndarray) -> Transcript:
        """A decode result as returned: empty text when it is silence, post-processed otherwise. Whisper's rule
        (DecodeResult.silent) lets near-digital silence through as " you" now and then, so audio that never
        reaches SILENCE_PEAK is silence whatever the decoder made of it."""
        silent = r.silent(opts) or np.abs(audio).max() < SILENCE_PEAK
        if silent:
            return Transcript("", replace(r, words=()))
        words = tuple(replace(w, word=self._script(w.word, r.language)) for w in r.words)
        return Transcript(self.postprocess(r.text, r.language), replace(r, words=words))

    def postprocess(self, text: str, language: str) -> str:
        """The model's text as we return it: stripped, Chinese in the configured script."""
        return self._script(text.strip(), language)

    def _script(self, text: str, language: str) -> str:
        return self._opencc.convert(text) if language == "zh" and self.config.zh_script != "as-is" else text

    def warm_up(self) -> None:
        """One short decode so the first real request does not pay for lazy initialisation."""
        self.transcribe([np.zeros(SAMPLE_RATE, dtype=np.float32)], replace(DecodeOptions(), language="en", max_new_tokens=4))


BUCKET = 50  # mel frames (0.5 s): trimmed rows are encoded at their frames rounded up to this (the rest masked)


def _bucket(frames: int) -> int:
    return min(N_FRAMES, -(-frames // BUCKET) * BUCKET)


def audio_positions(audio: np.ndarray) -> int:
    """Encoder positions (20 ms each) that hold `audio` itself, not the silence padding after it."""
    return -(-len(audio) // (2 * HOP_LENGTH))


def check_segment(audio: np.ndarray) -> None:
    """The runner's input contract; callers split long audio and decode containers before this."""
    if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype != np.float32:
        raise ValueError("a segment is a 1-D float32 numpy array of 16 kHz mono samples")
    if len(audio) < MIN_SAMPLES:
        raise ValueError(f"segment of {len(audio)} samples: at least {MIN_SAMPLES} (0.1 s) are needed")
    if len(audio) > N_SAMPLES:
        raise ValueError(f"segment of {len(audio) / SAMPLE_RATE:.1f} s: at most 30 s; split longer audio first")
    if not np.isfinite(audio).all():
        raise ValueError("segment contains NaN or infinite samples")
