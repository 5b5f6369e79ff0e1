"""`livecaptions train-mtp`: synthesise speech, label it with the frozen base model, train heads, write them
beside their provenance. Two kinds of head (engine/mtp.py):

- `--head audio` (default): the audio head, CTC from the encoder output. Label: the model's greedy transcript of
  each utterance (batched decode); cached: encoder outputs and transcripts.
- `--head decoder`: the decoder heads. Label: one teacher-forced pass over the spoken text (the model's greedy
  choice at each position; utterances the model hears differently are dropped); cached: the decoder states.

Resumable: labels are cached in shards under --work (a rerun continues after the last shard), and training
checkpoints every epoch. Deterministic for a seed."""
from __future__ import annotations

import json
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

SHARD = 64  # utterances per cached shard
WINDOW = 8  # tokens cached after each anchor: enough for up to 8 heads, so shards serve any --heads <= 8
# Keep an utterance when the model's greedy choice is the spoken text's token at >= this share of positions. On 96
# utterances, mean agreement: Piper 0.88, flite 0.84, espeak-ng English 0.80, espeak-ng Mandarin 0.50 (garbled:
# the model writes other characters). Windows are cut at disagreements anyway (training/distill.windows_of), so
# the filter only keeps prefixes close to what greedy decoding itself would have written.
MIN_AGREEMENT = 0.75
# Utterances per labelling pass. Their features do not depend on it (ModelRunner.encode never pads a row to a
# neighbour: before it did, at int8 batched states differed from those alone and heads trained on them drafted
# 0.42 per step on batched states but 0.08 alone); one at a time measured 5.1 utt/s against 2.6 in batches of 16.
LABEL_BATCH = 1
ZH_SHARE = 0.1  # of utterances made, multilingual models: espeak-ng Mandarin is mostly garbled (agreement ~0.5, dropped)
AUDIO_ZH_SHARE = 0.3  # the audio head learns what the model hears, garbled or not: Mandarin is worth speaking
AUDIO_LABEL_BATCH = 8  # utterances per greedy-labelling decode


def save_shard(path: Path, utts: list, made: list[tuple[str, float]], d_model: int) -> None:
    """Kept utterances as flat arrays plus lengths (no pickles), and the language and agreement of every
    utterance made (kept or not) so a resumed run still reports what was dropped."""
    def flat(arrays: list[np.ndarray], shape: tuple, dtype) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.zeros(shape, dtype)

    np.savez(path, hidden=flat([u.hidden for u in utts], (0, d_model), np.float16),
             windows=flat([u.windows for u in utts], (0, WINDOW + 1), np.int64),
             audio=flat([u.audio for u in utts], (0, d_model), np.float16),
             n=np.array([len(u.hidden) for u in utts], np.int64), t=np.array([len(u.audio) for u in utts], np.int64),
             made_zh=np.array([lang == "zh" for lang, _ in made]), agreement=np.array([a for _, a in made], np.float32))


def unflat(d, key: str, lengths: str) -> list[np.ndarray]:
    """The per-utterance arrays a shard stores as d[key] concatenated, with their lengths in d[lengths]."""
    return np.split(d[key], np.cumsum(d[lengths])[:-1])


def load_shard(path: Path) -> tuple[list, np.ndarray, np.ndarray]:
    """-> kept utterances, and per utterance made: is it Mandarin, its agreement."""
    from training.distill import Utterance

    d = np.load(path)
    parts = zip(unflat(d, "hidden", "n"), unflat(d, "windows", "n"), unflat(d, "audio", "t"))
    utts = [Utterance(h, w, a) for h, w, a in parts] if len(d["n"]) else []
    return utts, d["made_zh"], d["agreement"]


def save_audio_shard(path: Path, utts: list, zh: list[bool]) -> None:
    """The audio head's labelled utterances (Transcribed) as flat arrays plus lengths, and which are Mandarin."""
    np.savez(path, audio=np.concatenate([u.audio for u in utts]), t=np.array([len(u.audio) for u in utts]),
             tokens=np.concatenate([u.tokens for u in utts]), n=np.array([len(u.tokens) for u in utts]), zh=np.array(zh))


def load_audio_shard(path: Path) -> tuple[list, list[bool]]:
    from training.distill import Transcribed

    d = np.load(path)
    return [Transcribed(a, t) for a, t in zip(unflat(d, "audio", "t"), unflat(d, "tokens", "n"))], d["zh"].tolist()


def text_tokens(tokenizer, text: str, language: str) -> list[int]:
    """The tokens Whisper would write for `text`: English words after a space, Mandarin without one."""
    return tokenizer.encode(text if language == "zh" else " " + text)


def label(runner, batch: list, min_agreement: float) -> tuple[list, list[tuple[str, float]]]:
    """Synthetic utterances -> the kept training Utterances and (language, agreement) of each, in order."""
    from training.distill import self_distilled

    order = sorted(range(len(batch)), key=lambda i: len(batch[i].audio))
    kept, made = [], [("", 0.0)] * len(batch)
    for i in range(0, len(order), LABEL_BATCH):
        part = [batch[j] for j in order[i : i + LABEL_BATCH]]
        texts = [text_tokens(runner.tokenizer, u.text, u.language)[:400] for u in part]
        out = self_distilled(runner, [u.audio for u in part], [u.language for u in part], texts, WINDOW)
        for j, u, (utt, agreement) in zip(order[i : i + LABEL_BATCH], part, out):
            made[j] = (u.language, agreement)
            if agreement >= min_agreement:
                kept.append((j, utt))
    return [u for _, u in sorted(kept, key=lambda x: x[0])], made


def make_data(args, runner, work: Path, prefix: str, zh_share: float, label_shard) -> None:
    """Synthesise and label the shards `prefix`-NNNNN.npz that are not in `work` yet; label_shard(batch, path)
    labels one shard's utterances, writes it, and returns a progress note."""
    from training.synth import utterances

    done = len(sorted(work.glob(f"{prefix}-*.npz"))) * SHARD
    if done >= args.utterances:
        return
    bar = tqdm(total=args.utterances, initial=done, desc="synthesise + label", unit="utt", file=sys.stderr)
    zh_share = zh_share if runner.tokenizer.multilingual else 0.0  # English-only models get English speech only
    source = utterances(Path(args.corpus), args.seed, start=done, zh_share=zh_share)
    for first in range(done, args.utterances, SHARD):
        batch = [next(source) for _ in range(min(SHARD, args.utterances - first))]
        note = label_shard(batch, work / f"{prefix}-{first // SHARD:05d}.npz")
        bar.update(len(batch))
        bar.set_postfix_str(note)
    bar.close()


def run(args, runner) -> int:
    return (run_audio if args.head == "audio" else run_decoder)(args, runner)


def save(args, runner, heads, meta: dict) -> int:
    from engine.mtp import save_heads

    meta = {"command": "livecaptions " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "model": args.model,
            "seed": args.seed, **meta}
    out = Path(args.output or Path(__file__).resolve().parents[1] / "engine" / "heads" / f"{(runner.sha256 or 'local')[:12]}-{args.model}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_heads(out, heads, runner.sha256 or "", meta)
    print(json.dumps({"output": str(out), **meta}, indent=1))
    return 0


@contextmanager
def train_bar(epochs: int):
    """A progress bar over epochs, closed full at the end -> the progress(epoch, step, steps, loss) callback."""
    bar = tqdm(total=epochs, desc="train heads", unit="epoch", file=sys.stderr)

    def progress(epoch: int, step: int, steps: int, loss: float) -> None:
        bar.n = epoch
        bar.set_postfix_str(f"step {step}/{steps} loss {loss:.3f}")

    yield progress
    bar.n = epochs
    bar.close()


def run_audio(args, runner) -> int:
    from training.distill import AudioTrainConfig, greedy_labelled, train_audio_for

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def label_shard(batch: list, path: Path) -> str:
        order = sorted(range(len(batch)), key=lambda i: len(batch[i].audio))  # similar lengths decode together
        utts: list = [None] * len(batch)
        for i in range(0, len(order), AUDIO_LABEL_BATCH):
            part = order[i : i + AUDIO_LABEL_BATCH]
            for j, u in zip(part, greedy_labelled(runner, [batch[j].audio for j in part], [batch[j].language for j in part])):
                utts[j] = u
        save_audio_shard(path, utts, [u.language == "zh" for u in batch])
        return f"{sum(len(u.tokens) for u in utts)} tokens"

    make_data(args, runner, work, "audio", AUDIO_ZH_SHARE, label_shard)
    label_s = time.time() - t0
    utts, zh = [], []
    for p in sorted(work.glob("audio-*.npz"))[: (args.utterances + SHARD - 1) // SHARD]:
        u, z = load_audio_shard(p)
        utts, zh = utts + u, zh + z
    cfg = AudioTrainConfig(epochs=args.epochs or AudioTrainConfig.epochs, seed=args.seed)
    with train_bar(cfg.epochs) as progress:
        head, report, device = train_audio_for(runner, utts, cfg, work / "audio-train-state.pt", progress)
    data = {"utterances": len(utts), "zh_share": round(float(np.mean(zh)), 3), "tokens": int(sum(len(u.tokens) for u in utts)),
            "encoded_s": round(sum(len(u.audio) for u in utts) * 0.02, 1)}  # 20 ms encoder frames, trim padding included
    return save(args, runner, head, {"head": "audio", **data, "train": asdict(cfg), "heldout": report,
                                     "seconds": round(time.time() - t0, 1), "label_seconds": round(label_s, 1), "device": device})


def run_decoder(args, runner) -> int:
    from training.distill import TrainConfig, train_for

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    min_agreement = getattr(args, "min_agreement", MIN_AGREEMENT)
    made = {"kept": 0, "made": 0}

    def label_shard(batch: list, path: Path) -> str:
        utts, stats = label(runner, batch, min_agreement)
        save_shard(path, utts, stats, runner.model.dims.n_text_state)
        made["kept"], made["made"] = made["kept"] + len(utts), made["made"] + len(batch)
        return f"kept {made['kept'] / made['made']:.0%}"

    make_data(args, runner, work, "shard", ZH_SHARE, label_shard)
    label_s = time.time() - t0
    utts, zh, agreement = [], [], []
    for p in sorted(work.glob("shard-*.npz"))[: (args.utterances + SHARD - 1) // SHARD]:
        u, z, a = load_shard(p)
        utts, zh, agreement = utts + u, zh + z.tolist(), agreement + a.tolist()
    positions = sum(len(u.hidden) for u in utts)
    agreement_arr, zh_arr = np.array(agreement), np.array(zh, dtype=bool)
    keep = agreement_arr >= min_agreement
    data = {"utterances_made": len(agreement), "utterances": len(utts), "kept_share": round(float(keep.mean()), 3),
            "zh_share_made": round(float(zh_arr.mean()), 3), "zh_share_kept": round(float(zh_arr[keep].mean()), 3) if keep.any() else 0.0,
            "kept_share_en": round(float(keep[~zh_arr].mean()), 3) if (~zh_arr).any() else None,
            "kept_share_zh": round(float(keep[zh_arr].mean()), 3) if zh_arr.any() else None,
            "positions": positions, "min_agreement": min_agreement}
    print(f"{len(utts)} of {len(agreement)} utterances kept ({data['kept_share']:.0%}: the model's greedy choice is the "
          f"spoken text's token at >= {data['min_agreement']:.0%} of positions), {positions} token positions", file=sys.stderr)
    if not utts:
        raise RuntimeError("no utterance passed the agreement filter")

    cfg = TrainConfig(n_heads=args.heads, epochs=args.epochs or TrainConfig.epochs, seed=args.seed)
    with train_bar(cfg.epochs) as progress:
        heads, report, device = train_for(runner, utts, cfg, work / "train-state.pt", progress)
    return save(args, runner, heads, {"head": "decoder", **data, "train": asdict(cfg), "heldout": report,
                                      "seconds": round(time.time() - t0, 1), "label_seconds": round(label_s, 1), "device": device})
