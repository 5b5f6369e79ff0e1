"""Training MTP heads by self-distillation: the base model stays frozen, its own greedy transcripts are the labels,
and the heads learn, from the teacher-forced decoder states, to guess the tokens the model is about to emit.

Data per anchor position j of a transcript Y = (y_0 .. y_{n-1}, <|endoftext|>): the hidden state H_j that predicts
Y[j], and the window Y[j .. j+K] (head k reads Y[j+k-1], predicts Y[j+k]). Arrays in, arrays out: no files here."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.mtp import MTPHeads

PAD = -1  # window positions past the end of a transcript


@dataclass(frozen=True)
class TrainConfig:
    n_heads: int = 4
    epochs: int = 4
    batch: int = 256  # anchor positions per step
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    holdout: float = 0.1  # share of utterances held back to report accuracy
    max_vocab: int = 8192  # head vocabulary: the most frequent tokens of the training transcripts


@torch.inference_mode()
def teacher_forced(runner, audios: list[np.ndarray], languages: list[str], labels: list[list[int]], n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoder final states and token windows of every label position -> (N, D) float16, (N, K+1) int64."""
    tok, model = runner.tokenizer, runner.model
    mel, frames = runner.features(audios, runner.config.encoder)
    audio, mask = model.encoder(mel, frames)
    cross = model.decoder.cross_kv(audio, mask)
    prefixes = [[tok.sot, *tok.sot_sequence(lang)] for lang in languages]
    feeds = [p + y for p, y in zip(prefixes, labels)]
    n = max(len(f) for f in feeds)
    tokens = torch.tensor([f + [tok.eot] * (n - len(f)) for f in feeds], device=runner.device)
    cache = model.new_cache(len(feeds), n + 1)
    hidden = model.decoder(tokens, cache, cross).float().cpu()
    states, windows = [], []
    for h, p, y in zip(hidden, prefixes, labels):
        full = y + [tok.eot]
        states.append(h[len(p) - 1 : len(p) - 1 + len(full)])
        padded = full + [PAD] * n_heads
        windows.append(np.array([padded[j : j + n_heads + 1] for j in range(len(full))], dtype=np.int64))
    return torch.cat(states).half().numpy(), np.concatenate(windows)


def head_vocab(windows: np.ndarray, size: int) -> torch.Tensor:
    """The `size` most frequent tokens of the transcripts (each anchor's own token is every token once)."""
    tokens, counts = np.unique(windows[:, 0], return_counts=True)
    return torch.from_numpy(tokens[np.argsort(-counts, kind="stable")][:size].copy()).long()


def _losses(heads: MTPHeads, embed: torch.Tensor, lookup: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced cross-entropy of every head (K,) and its top-1 hits (K,) / counts, over the head vocabulary;
    lookup (V,) maps a token to its row in heads.vocab (PAD when outside)."""
    inputs = embed[w[:, :-1].clamp(min=0)]  # (B, K, D): head k reads Y[j+k-1]
    states = heads.states(h, inputs)  # (B, K, D)
    logits = states @ embed[heads.vocab].T  # tied unembedding, head-vocabulary rows: (B, K, V_head)
    targets = torch.where(w[:, 1:] == PAD, PAD, lookup[w[:, 1:].clamp(min=0)])
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="none").view(targets.shape)
    valid = targets != PAD
    per_head = (loss * valid).sum(0) / valid.sum(0).clamp(min=1)
    hits = ((logits.argmax(-1) == targets) & valid).sum(0)
    return per_head, torch.stack([hits, valid.sum(0)])


@torch.inference_mode()
def evaluate(heads: MTPHeads, embed: torch.Tensor, lookup: torch.Tensor, h: torch.Tensor, w: torch.Tensor, batch: int = 1024) -> dict:
    """Per-head top-1 accuracy, teacher-forced and chained (each head fed the previous head's own guess, as at
    inference), and the mean drafts accepted per step when chained."""
    K = heads.n_heads
    tf = torch.zeros(2, K)
    chain_hits = torch.zeros(K)
    anchors = 0
    for i in range(0, len(h), batch):
        hb, wb = h[i : i + batch], w[i : i + batch]
        tf += _losses(heads, embed, lookup, hb, wb)[1].cpu()
        s, tok, alive = hb, wb[:, 0], torch.ones(len(hb), dtype=torch.bool)
        for k in range(K):
            s = heads.step(k, s, embed[tok.clamp(min=0)])
            tok = heads.vocab[(s @ embed[heads.vocab].T).argmax(-1)]
            alive &= tok == wb[:, k + 1]
            chain_hits[k] += alive.sum().item()
        anchors += len(hb)
    acc_tf = (tf[0] / tf[1].clamp(min=1)).tolist()
    chained = (chain_hits / max(anchors, 1)).tolist()
    return {"top1": [round(a, 4) for a in acc_tf], "chained": [round(a, 4) for a in chained],
            "drafts_accepted_per_step": round(sum(chained), 3), "anchors": anchors}


def fit(hidden: np.ndarray, windows: np.ndarray, groups: np.ndarray, embed: torch.Tensor, cfg: TrainConfig,
        device: torch.device, state: dict | None = None, on_epoch=None, progress=None) -> tuple[MTPHeads, dict]:
    """Train heads on (N, D) states and (N, K+1) windows; `groups` (N,) names each row's utterance for the split.
    `state` resumes from an earlier `on_epoch(state)` checkpoint. Returns the heads and the held-out report."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    utts = np.unique(groups)
    held = set(rng.choice(utts, size=max(1, int(len(utts) * cfg.holdout)), replace=False).tolist())
    test = np.isin(groups, list(held))
    h = torch.from_numpy(hidden).float().to(device)
    w = torch.from_numpy(windows).to(device)
    embed = embed.float().to(device)
    train_idx = torch.from_numpy(np.flatnonzero(~test)).to(device)
    test_idx = torch.from_numpy(np.flatnonzero(test)).to(device)
    vocab = head_vocab(windows[~test], cfg.max_vocab)
    lookup = torch.full((embed.shape[0],), PAD, dtype=torch.long)
    lookup[vocab] = torch.arange(len(vocab))
    lookup = lookup.to(device)
    heads = MTPHeads(h.shape[1], cfg.n_heads, vocab).to(device)
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = (len(train_idx) + cfg.batch - 1) // cfg.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(1, steps_per_epoch * cfg.epochs), pct_start=0.1)
    start = 0
    if state:
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["epoch"]
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=gen).to(device)]
        if epoch < start:
            continue  # replay the permutation so a resumed run sees the same batches
        heads.train()
        for i in range(0, len(order), cfg.batch):
            b = order[i : i + cfg.batch]
            loss = _losses(heads, embed, lookup, h[b], w[b])[0].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(epoch, i // cfg.batch + 1, steps_per_epoch, loss.item())
        heads.eval()
        if on_epoch:
            on_epoch({"heads": heads.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch + 1})
    report = evaluate(heads, embed, lookup, h[test_idx], w[test_idx])
    report |= {"train_anchors": len(train_idx), "heldout_utterances": len(held), "head_vocab": len(vocab)}
    return heads.cpu(), report
