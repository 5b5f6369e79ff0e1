"""`livecaptions train-mtp`: synthesise speech, label it with the frozen base model's own greedy transcripts,
cache the teacher-forced decoder states, train the heads, write them beside their provenance.

Resumable: states are cached in shards under --work (a rerun continues after the last shard), and training
checkpoints every epoch. Deterministic for a seed."""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

SHARD = 64  # utterances per cached shard
WINDOW = 8  # tokens cached after each anchor: enough for up to 8 heads, so shards serve any --heads <= 8


def save_shard(path: Path, utts: list) -> None:
    """Utterances as flat arrays plus lengths (no pickles)."""
    np.savez(path, hidden=np.concatenate([u.hidden for u in utts]), windows=np.concatenate([u.windows for u in utts]),
             audio=np.concatenate([u.audio for u in utts]), n=np.array([len(u.hidden) for u in utts]),
             t=np.array([len(u.audio) for u in utts]))


def load_shard(path: Path) -> list:
    from engine.mtp_train import Utterance

    d = np.load(path)
    hs, ws = np.split(d["hidden"], np.cumsum(d["n"])[:-1]), np.split(d["windows"], np.cumsum(d["n"])[:-1])
    return [Utterance(h, w, a) for h, w, a in zip(hs, ws, np.split(d["audio"], np.cumsum(d["t"])[:-1]))]


def run(args, runner) -> int:
    from engine.messages import DecodeOptions
    from engine.mtp import save_heads
    from engine.mtp_train import TrainConfig, teacher_forced, train_for
    from gateway.synth import utterances

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    done = len(sorted(work.glob("shard-*.npz"))) * SHARD
    t0 = time.time()
    if done < args.utterances:
        bar = tqdm(total=args.utterances, initial=done, desc="synthesise + label", unit="utt", file=sys.stderr)
        zh_share = 0.4 if runner.tokenizer.multilingual else 0.0  # English-only models get English speech only
        source = utterances(Path(args.corpus), args.seed, start=done, zh_share=zh_share)
        for first in range(done, args.utterances, SHARD):
            batch = [next(source) for _ in range(min(SHARD, args.utterances - first))]
            kept: list = []
            for i in range(0, len(batch), runner.config.max_batch):
                part = batch[i : i + runner.config.max_batch]
                out = runner.transcribe([u.audio for u in part], [DecodeOptions(language=u.language, drafts=None) for u in part])
                keep = [(u, t) for u, t in zip(part, out) if t.result.tokens]
                if keep:
                    kept += teacher_forced(runner, [u.audio for u, _ in keep], [t.result.language for _, t in keep],
                                           [list(t.result.tokens) for _, t in keep], WINDOW)
                bar.update(len(part))
            save_shard(work / f"shard-{first // SHARD:05d}.npz", kept)
        bar.close()
    utts = [u for p in sorted(work.glob("shard-*.npz"))[: (args.utterances + SHARD - 1) // SHARD] for u in load_shard(p)]
    positions = sum(len(u.hidden) for u in utts)
    print(f"{len(utts)} utterances, {positions} token positions", file=sys.stderr)

    cfg = TrainConfig(n_heads=args.heads, epochs=args.epochs, seed=args.seed)
    bar = tqdm(total=cfg.epochs, desc="train heads", unit="epoch", file=sys.stderr)

    def progress(epoch: int, step: int, steps: int, loss: float) -> None:
        bar.n = epoch
        bar.set_postfix_str(f"step {step}/{steps} loss {loss:.3f}")

    heads, report, device = train_for(runner, utts, cfg, work / "train-state.pt", progress)
    bar.n = cfg.epochs
    bar.close()
    meta = {"command": "livecaptions " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "model": args.model,
            "utterances": len(utts), "positions": positions, "seed": args.seed,
            "train": asdict(cfg), "heldout": report, "seconds": round(time.time() - t0, 1),
            "device": device}
    out = Path(args.output or Path(__file__).resolve().parents[1] / "engine" / "heads" / f"{(runner.sha256 or 'local')[:12]}-{args.model}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_heads(out, heads, runner.sha256 or "", meta)
    print(json.dumps({"output": str(out), **meta}, indent=1))
    return 0
