"""Multi-token prediction: small heads that draft the next K tokens, and the draft sources decoding verifies.

Head k refines a running state from the decoder's final hidden state h_t and the token just chosen, looks at the
audio once, then the model's own (tied) unembedding turns it into a guess at token t+1+k:

    s = s_{k-1} + SiLU(W_k [s_{k-1}; e(y_{t+k})] + b_k)        (Hydra: condition on the previous token)
    s_k = s + Out_k(Attn(Q_k LN_k(s), K_L, V_L))               (look at the audio: the last decoder layer's
    draft_k = argmax U(s_k)                                      cross-attention keys/values, already computed)

y_{t+1} is the base model's verified choice, later y's are the heads' own drafts (teacher-forced in training).
Medusa's independent heads see only h_t, which attended to the audio of the current word; a speech recogniser's
next words are in the audio further on, so each head gets one cross-attention read (README has the measurements).

The audio head (CTCHead) drafts from the other end: one pass over the encoder output spells out the whole segment
(CTC, greedy), and each decoder step verifies the next tokens of that guess, realigned (`follow`) where greedy
decoding diverged from it. The decoder heads above see the audio only through the state of the current word; the
audio head reads every frame of it, so its guesses run on for many tokens (README has the measurements).

A heads file holds one kind of head, bound to the base model's sha256; verification (engine/decoding.py) keeps
the output token-for-token greedy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model import CrossKV, LayerNorm, attention

HEADS_DIR = Path(__file__).parent / "heads"  # heads shipped with the package, one file per bundled model


class MTPHeads(nn.Module):
    def __init__(self, d_model: int, n_heads: int = 4, vocab: Tensor | None = None, n_attn_heads: int = 8):
        super().__init__()
        self.n_heads, self.n_attn_heads = n_heads, n_attn_heads
        self.blocks = nn.ModuleList([nn.Linear(2 * d_model, d_model) for _ in range(n_heads)])
        self.attn_ln = nn.ModuleList([LayerNorm(d_model) for _ in range(n_heads)])
        self.attn_q = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(n_heads)])
        self.attn_out = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(n_heads)])
        # The head vocabulary: tokens the model emitted in training. Projecting onto these few thousand rows of the
        # unembedding instead of all 51865 is what keeps K heads cheaper than the decoder pass they save (README).
        self.register_buffer("vocab", vocab if vocab is not None else torch.zeros(0, dtype=torch.long))
        for lin in [*self.blocks, *self.attn_out]:  # start as the identity: s_k = s_{k-1}
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def step(self, k: int, state: Tensor, token_emb: Tensor, audio: AudioKV) -> Tensor:
        """(B, n, D) states and embeddings of their last tokens -> the states that predict the tokens after them.
        The n positions of a row share its audio (B, T, D)."""
        s = state + F.silu(self.blocks[k](torch.cat([state, token_emb], dim=-1)))
        q = self.attn_q[k](self.attn_ln[k](s))
        return s + self.attn_out[k](attention(q, audio.keys, audio.values, self.n_attn_heads, audio.mask))

    def states(self, hidden: Tensor, token_embs: Tensor, audio: AudioKV) -> Tensor:
        """Teacher-forced states for training: hidden (B, n, D), token_embs (B, n, K, D) of y_{t+1..t+K}
        -> (B, n, K, D)."""
        out, s = [], hidden
        for k in range(self.n_heads):
            s = self.step(k, s, token_embs[:, :, k], audio)
            out.append(s)
        return torch.stack(out, dim=2)


class CTCHead(nn.Module):
    """Encoder output -> a guess at the whole transcript. Pairs of 20 ms frames are merged (40 ms still leaves room
    for the fastest speech's tokens), two residual MLP blocks adapt the encoder's features, and the output rows
    start as the model's token embeddings (tied-unembedding geometry) over the head vocabulary; row 0 is CTC's blank."""

    def __init__(self, d_model: int, vocab: Tensor, blocks: int = 2):
        super().__init__()
        self.down = nn.Linear(2 * d_model, d_model)
        self.norms = nn.ModuleList([LayerNorm(d_model) for _ in range(blocks)])
        self.mlps = nn.ModuleList([nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))
                                   for _ in range(blocks)])
        self.out_norm = LayerNorm(d_model)
        self.out = nn.Linear(d_model, len(vocab) + 1)
        self.register_buffer("vocab", vocab)

    def forward(self, enc: Tensor) -> Tensor:
        """(B, T, D) -> CTC logits (B, T // 2, 1 + len(vocab))."""
        B, T, D = enc.shape
        x = self.down(enc[:, : T // 2 * 2].reshape(B, T // 2, 2 * D))
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + mlp(norm(x))
        return self.out(self.out_norm(x))

    @torch.inference_mode()
    def guess(self, enc: Tensor, mask: Tensor | None) -> list[tuple[int, ...]]:
        """Each row's transcript guess: the best label per frame, repeats merged, blanks dropped (real frames only)."""
        frames = mask.sum(-1).tolist() if mask is not None else [enc.shape[1]] * len(enc)
        vocab = self.vocab.cpu()
        return [tuple(vocab[ctc_collapse(row[: n // 2]) - 1].tolist()) for row, n in zip(self(enc).argmax(-1).cpu(), frames)]


def ctc_collapse(best: Tensor) -> Tensor:
    """CTC's greedy rule on one row's best labels per frame: merge repeats, then drop blanks (0)."""
    first = torch.ones_like(best, dtype=torch.bool)
    first[1:] = best[1:] != best[:-1]
    return best[first & (best != 0)]


@dataclass
class AudioKV:
    """What the heads read of the audio: the last decoder layer's cross-attention keys/values (B, T, D) and the
    attention mask (B, 1, 1, T) or None."""

    keys: Tensor
    values: Tensor
    mask: Tensor | None

    @classmethod
    def of(cls, cross: CrossKV, rows: list[int], dtype: torch.dtype) -> AudioKV:
        """`rows` of a batch's cross keys/values in `dtype` (the heads were trained on float32), padded to their
        longest audio (a copy: the heads batch their rows)."""
        flat = lambda t: t.transpose(0, 1).flatten(1).to(dtype)  # noqa: E731  (H, T, D/H) -> (T, D)
        keys, values = [flat(cross.keys[-1][r]) for r in rows], [flat(cross.values[-1][r]) for r in rows]
        lengths = torch.tensor([k.shape[0] for k in keys], device=keys[0].device)
        mask = torch.arange(int(lengths.max()), device=keys[0].device)[None, :] < lengths[:, None]
        pad = lambda ts: torch.nn.utils.rnn.pad_sequence(ts, batch_first=True)  # noqa: E731
        return cls(pad(keys), pad(values), mask[:, None, None, :])


class MTPDrafter:
    """Drafts from the heads: run them one after another, each reading the previous head's pick."""

    def __init__(self, heads: MTPHeads, embed: nn.Embedding, suppress: Tensor, n_drafts: int, int8: bool,
                 min_prob: float = 0.0):
        vocab = heads.vocab if len(heads.vocab) else torch.arange(embed.num_embeddings, device=suppress.device)
        self.vocab = vocab[~suppress[vocab]]  # a token greedy never picks is never worth drafting
        rows = embed.weight.detach()[self.vocab]
        proj = nn.Linear(rows.shape[1], rows.shape[0], bias=False).to(rows.device, rows.dtype)
        proj.weight.data.copy_(rows)
        if int8:
            from engine.quant import Int8Linear

            proj = Int8Linear(proj)
        self.heads, self.embed, self.proj, self.n_drafts = heads, embed, proj, n_drafts
        # A row stops drafting at the first head less sure than this: an unlikely draft is rarely accepted and
        # costs a head pass and a verified position (EAGLE-2's confidence cut, on a chain instead of a tree).
        self.min_prob = min_prob

    @torch.inference_mode()
    def propose(self, last: list[int], hidden: Tensor, audio: AudioKV) -> list[list[int]]:
        """last: each row's newest token (not yet fed); hidden (B, D): the state that predicted it; audio: the rows'
        last-layer cross-attention keys/values."""
        dtype = hidden.dtype  # the heads run in the model's activation dtype (their linears may be int8)
        s = hidden[:, None]  # (B, 1, D)
        tok = torch.tensor(last, device=hidden.device)[:, None]
        drafts = []
        sure = torch.ones(len(last), dtype=torch.bool, device=hidden.device)  # rows whose drafts so far all pass
        keep = torch.zeros(len(last), dtype=torch.long, device=hidden.device)  # leading drafts above min_prob
        for k in range(self.n_drafts):
            s = self.heads.step(k, s, self.embed(tok).to(dtype), audio)
            p, best = self.proj(s).float().softmax(-1).max(-1)
            tok = self.vocab[best]
            drafts.append(tok[:, 0])
            sure &= p[:, 0] >= self.min_prob
            keep += sure
            if not sure.any():  # every row has stopped
                break
        return [d[:n] for d, n in zip(torch.stack(drafts, dim=1).tolist(), keep.tolist())]


def hypothesis_drafts(out: list[int], previous: tuple[int, ...], n: int, ngram: int = 3, min_size: int = 1) -> list[int]:
    """Continue `out` from a hypothesis of the same audio (the previous partial's tokens, or the audio head's
    guess): find where out's tail last occurs in it and propose what followed it there (up to n tokens)."""
    if not previous:
        return []
    if len(out) <= len(previous) and tuple(out) == previous[: len(out)]:
        return list(previous[len(out) : len(out) + n])
    for size in range(min(ngram, len(out)), min_size - 1, -1):
        tail = tuple(out[-size:])
        for i in range(len(previous) - size, -1, -1):
            if previous[i : i + size] == tail:
                return list(previous[i + size : i + size + n])
    return []


def follow(out: list[int], hypothesis: tuple[int, ...], lookahead: list[int], n: int) -> list[int]:
    """Up to n drafts that continue `out` from a hypothesis of its transcript (a previous partial's tokens, or
    the audio head's guess): what followed out's tail where two or more of its tokens are found in it; else, after
    a rejected draft, greedy's own picks at the positions after it (`lookahead`: read on from a substituted token,
    the model mostly writes what comes next, as in Jacobi decoding), continued from the hypothesis; else what
    followed out's last token. On ../shared/speech with the audio head: 1.56 -> 1.64 tokens per forward (README)."""
    drafts = hypothesis_drafts(out, hypothesis, n, min_size=2)
    if not drafts and lookahead:
        drafts = lookahead[:n]
        drafts += hypothesis_drafts(out + drafts, hypothesis, n - len(drafts))
    return drafts or hypothesis_drafts(out, hypothesis, n)


def save_heads(path: Path, heads: MTPHeads | CTCHead, model_sha256: str, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: (v.int() if k == "vocab" else v.half()).detach().contiguous() for k, v in heads.state_dict().items()}
    info = {"model_sha256": model_sha256, "meta": json.dumps(meta)}
    if isinstance(heads, CTCHead):
        info |= {"kind": "audio", "blocks": str(len(heads.mlps))}
    else:
        info |= {"kind": "decoder", "n_heads": str(heads.n_heads), "n_attn_heads": str(heads.n_attn_heads)}
    save_file(tensors, str(path), metadata=info)


def load_heads(path: Path, model_sha256: str | None) -> tuple[MTPHeads | CTCHead, dict]:
    """Heads from `path` (decoder heads or the audio head, as the file says); a file trained for other base weights
    is refused (its drafts would be wasted work)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        info = f.metadata() or {}
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    if model_sha256 and info.get("model_sha256") not in (None, model_sha256):
        raise ValueError(f"{path}: MTP heads for another model (sha256 {info.get('model_sha256', '?')[:12]}...)")
    vocab = tensors.pop("vocab").long() if "vocab" in tensors else None
    if info.get("kind") == "audio":
        heads = CTCHead(tensors["down.weight"].shape[0], vocab, int(info["blocks"]))
    else:
        heads = MTPHeads(tensors["blocks.0.weight"].shape[0], int(info["n_heads"]), vocab, int(info.get("n_attn_heads", 8)))
    heads.load_state_dict(tensors, strict=False)
    return heads.eval(), json.loads(info.get("meta", "{}"))


def find_heads(model_folder: Path, model_sha256: str | None) -> Path | None:
    """The heads for a model: `mtp.safetensors` beside its weights, else the shipped file for its sha256."""
    beside = Path(model_folder) / "mtp.safetensors"
    if beside.exists():
        return beside
    if model_sha256:
        for p in HEADS_DIR.glob("*.safetensors"):
            if p.name.startswith(model_sha256[:12]):
                return p
    return None
