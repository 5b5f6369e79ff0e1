"""Training MTP heads by self-distillation: the base model stays frozen, its own greedy choices are the labels, and
the heads learn, from the teacher-forced decoder states and the audio, to guess the tokens the model is about to
emit. The labels come from one teacher-forced pass over the text that was synthesised (`self_distilled`): at
each position the model's argmax is what greedy decoding would emit after that prefix.

Data per utterance: the encoder output (T, D), and per anchor position j of its transcript
Y = (y_0 .. y_{n-1}, <|endoftext|>) the hidden state H_j that predicts Y[j] and the window Y[j .. j+W]
(head k reads Y[j+k-1], predicts Y[j+k]). Arrays in, arrays out: no files here."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.mtp import AudioKV, MTPHeads

PAD = -1  # window positions past the end of a transcript


@dataclass(frozen=True)
class TrainConfig:
    n_heads: int = 4
    epochs: int = 20
    utterances_per_step: int = 8
    lr: float = 2e-3
    seed: int = 0
    holdout: float = 0.1  # share of utterances held back to report accuracy
    # head vocabulary: the most frequent tokens of the labels. Its projection is most of a head pass on the CPU; the
    # top 2048 tokens of 455 utterances covered 96 % of label positions, so 4096 rows lose next to nothing
    max_vocab: int = 4096
    feature_weight: float = 1.0  # weight of the state regression (EAGLE): head k's state vs the model's own H_{j+k+1}


@dataclass
class Utterance:
    hidden: np.ndarray  # (n, D) float16: states of the transcript's positions
    windows: np.ndarray  # (n, W+1) int64
    audio: np.ndarray  # (T, D) float16: encoder output of its real frames


@torch.inference_mode()
def _forced_pass(runner, audios: list[np.ndarray], languages: list[str], feeds: list[list[int]]):
    """The frozen model over [sot, sot_sequence(language), *feed] per audio (batched, trimmed encoder) -> per row
    the final hidden states from the last prefix token on (row i: len(feed_i) + 1 states, float32), the encoder
    output of its real frames, and the greedy logits of those positions (suppressed tokens masked as decoding does)."""
    tok, model = runner.tokenizer, runner.model
    enc, mask = runner.encode(audios, runner.config.encoder)  # each row as inference encodes it alone
    cross = model.decoder.cross_kv(enc, mask)
    prefixes = [[tok.sot, *tok.sot_sequence(lang)] for lang in languages]
    rows = [p + f for p, f in zip(prefixes, feeds)]
    counts = [len(r) for r in rows]
    tokens = torch.tensor([t for r in rows for t in r], device=runner.device)
    hidden = model.decoder(tokens, counts, model.new_cache(len(rows), max(counts) + 1), cross).split(counts)
    valid = mask.sum(-1).tolist() if mask is not None else [enc.shape[1]] * len(audios)
    out = []
    for h, e, t, p, f in zip(hidden, enc.float().cpu(), valid, prefixes, feeds):
        states = h[len(p) - 1 : len(p) + len(f)]
        logits = model.decoder.logits(states[None])[0].float().masked_fill(runner.decoder.suppress, float("-inf"))
        logits[0] = logits[0].masked_fill(runner.decoder.suppress_begin, float("-inf"))
        out.append((states.float().cpu(), e[:t], logits.cpu()))
    return out


def windows_of(labels: list[int], fed: list[int], window: int) -> np.ndarray:
    """(n, W+1): row j = labels[j .. j+W], cut (PAD) after the first position where the fed token was not the label:
    from there on the labels answer a prefix that greedy decoding would not have produced."""
    ok = [a == f for a, f in zip(labels, fed)]
    rows = []
    for j in range(len(labels)):
        row = [labels[j]]
        for i in range(j, min(j + window, len(labels) - 1)):
            if not ok[i]:
                break
            row.append(labels[i + 1])
        rows.append(row + [PAD] * (window + 1 - len(row)))
    return np.array(rows, dtype=np.int64).reshape(-1, window + 1)


@torch.inference_mode()
def self_distilled(runner, audios: list[np.ndarray], languages: list[str], texts: list[list[int]],
                   window: int) -> list[tuple[Utterance, float]]:
    """One teacher-forced pass over the tokens of the text that was spoken: the model's own greedy choice at every
    position is the label (no greedy decode needed). Returns each Utterance with its agreement, the share of
    positions (end of text included) where that choice is the spoken text's token: low agreement means the model
    hears something else (garbled synthesis), and the caller drops it."""
    eot = runner.tokenizer.eot
    out = []
    for (h, e, logits), y in zip(_forced_pass(runner, audios, languages, texts), texts):
        fed, picks = y + [eot], logits.argmax(-1).tolist()
        agreement = sum(a == f for a, f in zip(picks, fed)) / len(fed)
        out.append((Utterance(h.half().numpy(), windows_of(picks, fed, window), e.half().numpy()), agreement))
    return out


def head_vocab(utts: list[Utterance], size: int) -> Tensor:
    """The `size` most frequent tokens of the transcripts."""
    tokens, counts = np.unique(np.concatenate([u.windows[:, 0] for u in utts]), return_counts=True)
    return torch.from_numpy(tokens[np.argsort(-counts, kind="stable")][:size].copy()).long()


class Batcher:
    """Pads a few utterances into (U, n, D) states, (U, n, K+1) windows and their audio keys/values."""

    def __init__(self, utts: list[Utterance], n_heads: int, cross_kv, device: torch.device):
        self.utts, self.k, self.cross_kv, self.device = utts, n_heads, cross_kv, device
        self._kv: dict[int, tuple[Tensor, Tensor]] = {}  # keys/values per utterance, projected once (float16)

    def kv(self, i: int) -> tuple[Tensor, Tensor]:
        if i not in self._kv:
            with torch.no_grad():
                k, v = self.cross_kv(torch.from_numpy(self.utts[i].audio).float()[None])
            self._kv[i] = (k[0].half().cpu(), v[0].half().cpu())
        return self._kv[i]

    def __call__(self, ids: list[int]) -> tuple[Tensor, Tensor, AudioKV]:
        us = [self.utts[i] for i in ids]
        n, t = max(len(u.hidden) for u in us), max(len(u.audio) for u in us)
        d = us[0].hidden.shape[1]
        h = torch.zeros(len(us), n, d)
        w = torch.full((len(us), n, self.k + 1), PAD, dtype=torch.long)
        keys, values = torch.zeros(len(us), t, d), torch.zeros(len(us), t, d)
        mask = torch.zeros(len(us), t, dtype=torch.bool)
        for j, (i, u) in enumerate(zip(ids, us)):
            h[j, : len(u.hidden)] = torch.from_numpy(u.hidden).float()
            w[j, : len(u.windows)] = torch.from_numpy(u.windows[:, : self.k + 1])
            keys[j, : len(u.audio)], values[j, : len(u.audio)] = self.kv(i)
            mask[j, : len(u.audio)] = True
        dev = self.device
        return h.to(dev), w.to(dev), AudioKV(keys.to(dev), values.to(dev), mask[:, None, None, :].to(dev))


def _losses(heads: MTPHeads, embed: Tensor, lookup: Tensor, h: Tensor, w: Tensor, audio: AudioKV,
            feature_weight: float = 0.0) -> tuple[Tensor, Tensor]:
    """Teacher-forced loss of every head (K,) and its top-1 [hits; counts] (2, K), over the head vocabulary;
    lookup (V,) maps a token to its row in heads.vocab (PAD when outside). The loss is the cross-entropy of the
    head's guess plus, weighted, a smooth-L1 pull of its state towards the model's own state at that position
    (EAGLE's feature loss: the states carry more than the argmax, and the next head starts from them)."""
    K = heads.n_heads
    inputs = embed[w[..., :-1].clamp(min=0)]  # (U, n, K, D): head k reads Y[j+k]
    states = heads.states(h, inputs, audio)  # (U, n, K, D)
    logits = states @ embed[heads.vocab].T  # tied unembedding, head-vocabulary rows
    targets = torch.where(w[..., 1:] == PAD, PAD, lookup[w[..., 1:].clamp(min=0)])
    loss = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=PAD, reduction="none").view(targets.shape)
    valid = targets != PAD
    if feature_weight:
        n = h.shape[1]
        ahead = F.pad(h, (0, 0, 0, K))  # H_{j+k+1}; past the transcript the window is PAD anyway
        want = torch.stack([ahead[:, k + 1 : k + 1 + n] for k in range(K)], dim=2)
        loss = loss + feature_weight * F.smooth_l1_loss(states, want, reduction="none").mean(-1)
    per_head = (loss * valid).sum((0, 1)) / valid.sum((0, 1)).clamp(min=1)
    hits = ((logits.argmax(-1) == targets) & valid).sum((0, 1))
    return per_head, torch.stack([hits, valid.sum((0, 1))])


@torch.inference_mode()
def evaluate(heads: MTPHeads, embed: Tensor, lookup: Tensor, batcher: Batcher, ids: list[int]) -> dict:
    """Per-head top-1 accuracy, teacher-forced and chained (each head fed the previous head's own guess, as at
    inference), and the mean drafts accepted per step when chained."""
    K = heads.n_heads
    tf, chain, anchors = torch.zeros(2, K), torch.zeros(K), 0
    for i in range(0, len(ids), 16):
        h, w, audio = batcher(ids[i : i + 16])
        tf += _losses(heads, embed, lookup, h, w, audio)[1].cpu()
        real = w[..., 0] != PAD
        s, tok, alive = h, w[..., 0].clamp(min=0), real.clone()
        for k in range(K):
            s = heads.step(k, s, embed[tok], audio)
            tok = heads.vocab[(s @ embed[heads.vocab].T).argmax(-1)]
            alive &= tok == w[..., k + 1]
            chain[k] += alive.sum().item()
        anchors += int(real.sum())
    chained = (chain / max(anchors, 1)).tolist()
    return {"top1": [round(a, 4) for a in (tf[0] / tf[1].clamp(min=1)).tolist()], "chained": [round(a, 4) for a in chained],
            "drafts_accepted_per_step": round(sum(chained), 3), "anchors": anchors}


def _optimiser(module: torch.nn.Module, lr: float, total_steps: int, state: dict | None):
    """AdamW under a one-cycle schedule for `module`, resumed from a `_state` checkpoint when one is given
    -> (optimiser, schedule, first epoch to run)."""
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(1, total_steps), pct_start=0.1)
    if not state:
        return opt, sched, 0
    module.load_state_dict(state["module"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return opt, sched, state["epoch"]


def _state(module: torch.nn.Module, opt, sched, epoch: int) -> dict:
    """What a resumed run needs after `epoch` epochs (read back by `_optimiser`)."""
    return {"module": module.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch}


def fit(utts: list[Utterance], embed: Tensor, cross_kv, cfg: TrainConfig, device: torch.device,
        state: dict | None = None, on_epoch=None, progress=None) -> tuple[MTPHeads, dict]:
    """Train heads on utterances; `cross_kv` maps encoder output (U, T, D) to the last decoder layer's cross keys and
    values. `state` resumes from an earlier `on_epoch(state)` checkpoint. Returns the heads and the held-out report."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(utts))
    n_test = max(1, int(len(utts) * cfg.holdout))
    test, train = sorted(order[:n_test].tolist()), order[n_test:]
    embed = embed.float().to(device)
    vocab = head_vocab([utts[i] for i in train], cfg.max_vocab)
    lookup = torch.full((embed.shape[0],), PAD, dtype=torch.long)
    lookup[vocab] = torch.arange(len(vocab))
    lookup = lookup.to(device)
    heads = MTPHeads(embed.shape[1], cfg.n_heads, vocab).to(device)
    batcher = Batcher(utts, cfg.n_heads, cross_kv, device)
    steps = (len(train) + cfg.utterances_per_step - 1) // cfg.utterances_per_step
    opt, sched, start = _optimiser(heads, cfg.lr, steps * cfg.epochs, state)
    for epoch in range(start, cfg.epochs):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(train)  # the same batches when resumed
        heads.train()
        for i in range(0, len(perm), cfg.utterances_per_step):
            h, w, audio = batcher(perm[i : i + cfg.utterances_per_step].tolist())
            loss = _losses(heads, embed, lookup, h, w, audio, cfg.feature_weight)[0].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(epoch, i // cfg.utterances_per_step + 1, steps, loss.item())
        heads.eval()
        if on_epoch:
            on_epoch(_state(heads, opt, sched, epoch + 1))
    report = evaluate(heads, embed, lookup, batcher, test)
    report |= {"train_utterances": len(train), "heldout_utterances": len(test), "head_vocab": len(vocab)}
    return heads.cpu(), report


def _checkpoint(path, cfg, positions: int) -> tuple[dict | None, object]:
    """(state to resume from, or None; the on_epoch that saves one): a checkpoint is reused only for the same
    settings and data."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    path = Path(path)
    tag = json.dumps(asdict(cfg) | {"positions": positions, "format": "module"}, sort_keys=True)  # _state's layout
    state = torch.load(path, weights_only=False) if path.exists() else None

    def on_epoch(s: dict) -> None:
        torch.save(s | {"tag": tag}, path)

    return (state if state and state.get("tag") == tag else None), on_epoch


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_for(runner, utts: list[Utterance], cfg: TrainConfig, checkpoint, progress=None) -> tuple[MTPHeads, dict, str]:
    """`fit` for a loaded ModelRunner: its embedding and last-layer cross-attention projection, the GPU when there
    is one, and a checkpoint file each epoch that a rerun with the same data and settings resumes from."""
    state, on_epoch = _checkpoint(checkpoint, cfg, sum(len(u.hidden) for u in utts))
    last = runner.model.decoder.blocks[-1]

    def cross_kv(enc: Tensor) -> tuple[Tensor, Tensor]:
        return last.cross_kv(enc.to(runner.device, runner.dtype)).chunk(2, dim=-1)

    embed = runner.model.decoder.token_embedding.weight.detach()
    heads, report = fit(utts, embed, cross_kv, cfg, _device(), state, on_epoch, progress)
    return heads, report, str(_device())


# --- the audio head (engine/mtp.py: CTCHead): CTC from the encoder output to the model's own greedy transcript ---


@dataclass(frozen=True)
class AudioTrainConfig:
    epochs: int = 8
    utterances_per_step: int = 8
    lr: float = 2e-3
    seed: int = 0
    holdout: float = 0.05  # share of utterances held back to report how far the guesses carry
    max_vocab: int = 8192  # the most frequent tokens of the labels: the output rows, the head's main cost
    blocks: int = 2


@dataclass
class Transcribed:
    audio: np.ndarray  # (T, D) float16: encoder output of the real frames
    tokens: np.ndarray  # (n,) int64: the model's greedy transcript of it


@torch.inference_mode()
def greedy_labelled(runner, audios: list[np.ndarray], languages: list[str]) -> list[Transcribed]:
    """The frozen model's encoder output and greedy transcript of each audio (batched, as inference runs it)."""
    from engine.messages import DecodeOptions

    enc, mask = runner.encode(audios, runner.config.encoder)
    results = runner.decoder.decode(runner.model.decoder.cross_kv(enc, mask),
                                    [DecodeOptions(language=lang, drafts=None) for lang in languages])
    frames = mask.sum(-1).tolist() if mask is not None else [enc.shape[1]] * len(audios)
    return [Transcribed(e[:t].half().cpu().numpy(), np.array(r.tokens, np.int64))
            for e, t, r in zip(enc, frames, results)]


def drafted_forwards(target: list[int], guess: tuple[int, ...], n: int) -> int:
    """Decoder forwards that greedy decoding of `target` (+ end of text) takes with drafts from `guess`: the
    decoding loop's acceptance rule (engine/decoding.py) without the model."""
    from engine.mtp import hypothesis_drafts

    target = list(target) + [-1]  # end of text: never drafted
    out, forwards = target[:1], 1  # prefill picks the first token
    while len(out) < len(target):
        drafts, m = hypothesis_drafts(out, guess, n), 0
        while m < len(drafts) and drafts[m] == target[len(out) + m]:
            m += 1
        out, forwards = target[: len(out) + m + 1], forwards + 1
    return forwards


def fit_audio(utts: list[Transcribed], embed: Tensor, cfg: AudioTrainConfig, device: torch.device, state: dict | None = None,
              on_epoch=None, progress=None) -> tuple["CTCHead", dict]:
    """Train the audio head on utterances (embed: the model's token embedding, which the output rows start from).
    `state` resumes from an earlier `on_epoch(state)` checkpoint. Returns the head and the held-out report."""
    from engine.decoding import GUESS_DRAFT_LEN
    from engine.mtp import CTCHead

    torch.manual_seed(cfg.seed)
    usable = [i for i, u in enumerate(utts) if 0 < len(u.tokens) and 2 * len(u.tokens) < len(u.audio) // 2]  # CTC room
    order = np.random.default_rng(cfg.seed).permutation(usable)
    n_test = max(1, int(len(order) * cfg.holdout))
    test, train = sorted(order[:n_test].tolist()), order[n_test:]
    tokens, counts = np.unique(np.concatenate([utts[i].tokens for i in train]), return_counts=True)
    vocab = torch.from_numpy(tokens[np.argsort(-counts, kind="stable")][: cfg.max_vocab].copy()).long()
    lookup = torch.zeros(embed.shape[0], dtype=torch.long)  # token -> output row; 0 (blank) when outside the vocab
    lookup[vocab] = torch.arange(1, len(vocab) + 1)
    head = CTCHead(embed.shape[1], vocab, cfg.blocks)
    with torch.no_grad():  # output rows start as the tied unembedding, scaled to unit-variance logits
        rows = embed.float()[vocab]
        head.out.weight.zero_()
        head.out.weight[1:] = rows / (rows.std() * embed.shape[1] ** 0.5)
        head.out.bias.zero_()
    head = head.to(device)
    steps = len(train) // cfg.utterances_per_step
    opt, sched, start = _optimiser(head, cfg.lr, steps * cfg.epochs, state)
    for epoch in range(start, cfg.epochs):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(train)  # the same batches when resumed
        head.train()
        for step in range(steps):
            batch = [utts[i] for i in perm[step * cfg.utterances_per_step : (step + 1) * cfg.utterances_per_step]]
            x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(u.audio).float() for u in batch], batch_first=True)
            targets = [lookup[torch.from_numpy(u.tokens)] for u in batch]
            keep = [bool((t > 0).all()) for t in targets]  # a label outside the head vocabulary: nothing to learn
            if not any(keep):
                continue
            logp = head(x.to(device)).log_softmax(-1).transpose(0, 1)[:, keep]
            loss = F.ctc_loss(logp, torch.cat([t for t, k in zip(targets, keep) if k]).to(device),
                              torch.tensor([len(u.audio) // 2 for u, k in zip(batch, keep) if k]),
                              torch.tensor([len(t) for t, k in zip(targets, keep) if k]), zero_infinity=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(epoch, step + 1, steps, loss.item())
        head.eval()
        if on_epoch:
            on_epoch(_state(head, opt, sched, epoch + 1))
    tokens = forwards = 0
    for i in test:
        u = utts[i]
        guess = head.guess(torch.from_numpy(u.audio).float()[None].to(device), None)[0]
        tokens, forwards = tokens + len(u.tokens) + 1, forwards + drafted_forwards(u.tokens.tolist(), guess, GUESS_DRAFT_LEN)
    report = {"tokens_per_forward": round(tokens / max(forwards, 1), 3), "train_utterances": len(train),
              "heldout_utterances": len(test), "head_vocab": len(vocab)}
    return head.cpu(), report


def train_audio_for(runner, utts: list[Transcribed], cfg: AudioTrainConfig, checkpoint, progress=None) -> tuple["CTCHead", dict, str]:
    """`fit_audio` for a loaded ModelRunner, on the GPU when there is one, resumable from its epoch checkpoint."""
    state, on_epoch = _checkpoint(checkpoint, cfg, sum(len(u.tokens) for u in utts))
    embed = runner.model.decoder.token_embedding.weight.detach()
    head, report = fit_audio(utts, embed, cfg, _device(), state, on_epoch, progress)
    return head, report, str(_device())
