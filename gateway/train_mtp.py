"""`livecaptions train-mtp`: synthesise speech, label it with the frozen base model's own greedy transcripts,
cache the teacher-forced decoder states, train the heads, write them beside their provenance.

Resumable: states are cached in shards under --work (a rerun continues after the last shard), and training
checkpoints every epoch. Deterministic for a seed."""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

SHARD = 64  # utterances per cached shard
WINDOW = 8  # tokens cached after each anchor: enough for up to 8 heads, so shards serve any --heads <= 8


def run(args, runner) -> int:
    import torch  # noqa: F401  (engine modules use it; keeps the import cost visible here)

    from engine.decoding import DecodeOptions
    from engine.mtp import save_heads
    from engine.mtp_train import TrainConfig, fit, teacher_forced
    from gateway.synth import utterances

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shards = sorted(work.glob("shard-*.npz"))
    done = len(shards) * SHARD
    t0 = time.time()
    corpus = Path(args.corpus)
    if done < args.utterances:
        bar = tqdm(total=args.utterances, initial=done, desc="synthesise + label", unit="utt", file=sys.stderr)
        zh_share = 0.4 if runner.tokenizer.multilingual else 0.0  # English-only models get English speech only
        source = utterances(corpus, args.seed, start=done, zh_share=zh_share)
        for first in range(done, args.utterances, SHARD):
            batch = [next(source) for _ in range(min(SHARD, args.utterances - first))]
            hidden, windows, groups = [], [], []
            for i in range(0, len(batch), runner.config.max_batch):
                part = batch[i : i + runner.config.max_batch]
                opts = [DecodeOptions(language=u.language, drafts=None) for u in part]
                out = runner.transcribe([u.audio for u in part], opts)
                keep = [(u, t) for u, t in zip(part, out) if t.result.tokens]
                if keep:
                    h, w = teacher_forced(runner, [u.audio for u, _ in keep], [t.result.language for _, t in keep],
                                          [list(t.result.tokens) for _, t in keep], WINDOW)
                    hidden.append(h)
                    windows.append(w)
                    lengths = [len(t.result.tokens) + 1 for _, t in keep]
                    groups.append(np.repeat(np.arange(first + i, first + i + len(keep)), lengths))
                bar.update(len(part))
            np.savez(work / f"shard-{first // SHARD:05d}.npz", hidden=np.concatenate(hidden), windows=np.concatenate(windows),
                     groups=np.concatenate(groups))
        bar.close()
    shards = sorted(work.glob("shard-*.npz"))[: (args.utterances + SHARD - 1) // SHARD]
    data = [np.load(p) for p in shards]
    hidden = np.concatenate([d["hidden"] for d in data])
    windows = np.concatenate([d["windows"] for d in data])[:, : args.heads + 1]
    groups = np.concatenate([d["groups"] for d in data])
    print(f"{len(shards)} shards: {len(np.unique(groups))} utterances, {len(hidden)} token positions", file=sys.stderr)

    import torch

    cfg = TrainConfig(n_heads=args.heads, epochs=args.epochs, seed=args.seed)
    ckpt = work / "train-state.pt"
    tag = json.dumps(asdict(cfg) | {"positions": len(hidden)}, sort_keys=True)
    state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if state and state.get("tag") != tag:
        state = None  # different data or settings: start over
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bar = tqdm(total=cfg.epochs, desc="train heads", unit="epoch", file=sys.stderr, initial=state["epoch"] if state else 0)

    def on_epoch(s: dict) -> None:
        torch.save(s | {"tag": tag}, ckpt)
        bar.update(1)

    def progress(epoch: int, step: int, steps: int, loss: float) -> None:
        bar.set_postfix_str(f"step {step}/{steps} loss {loss:.3f}")

    embed = runner.model.decoder.token_embedding.weight.detach()
    heads, report = fit(hidden, windows, groups, embed, cfg, device, state, on_epoch, progress)
    bar.close()
    meta = {"command": "livecaptions " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "model": args.model,
            "utterances": int(len(np.unique(groups))), "positions": int(len(hidden)), "seed": args.seed,
            "train": asdict(replace(cfg)), "heldout": report, "seconds": round(time.time() - t0, 1),
            "device": str(device)}
    out = Path(args.output or Path(__file__).resolve().parents[1] / "engine" / "heads" / f"{(runner.sha256 or 'local')[:12]}-{args.model}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_heads(out, heads, runner.sha256 or "", meta)
    print(json.dumps({"output": str(out), **meta}, indent=1))
    return 0
