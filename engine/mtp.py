"""Multi-token prediction: small heads that draft the next K tokens, and the draft sources decoding verifies.

Head k refines a running state from the decoder's final hidden state h_t and the token just chosen, looks at the
audio once, then the model's own (tied) unembedding turns it into a guess at token t+1+k:

    s = s_{k-1} + SiLU(W_k [s_{k-1}; e(y_{t+k})] + b_k)        (Hydra: condition on the previous token)
    s_k = s + Out_k(Attn(Q_k LN_k(s), K_L, V_L))               (look at the audio: the last decoder layer's
    draft_k = argmax U(s_k)                                      cross-attention keys/values, already computed)

y_{t+1} is the base model's verified choice, later y's are the heads' own drafts (teacher-forced in training).
Medusa's independent heads see only h_t, which attended to the audio of the current word; a speech recogniser's
next words are in the audio further on, so each head gets one cross-attention read (README has the measurements).
Heads live in a small safetensors file bound to the base model's sha256; verification (engine/decoding.py) keeps
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


@dataclass
class AudioKV:
    """What the heads read of the audio: the last decoder layer's cross-attention keys/values (B, T, D) and the
    attention mask (B, 1, 1, T) or None."""

    keys: Tensor
    values: Tensor
    mask: Tensor | None

    @classmethod
    def of(cls, cross: CrossKV, rows: list[int]) -> AudioKV:
        """`rows` of a batch's cross keys/values, padded to their longest audio (a copy: the heads batch their rows)."""
        keys, values = [cross.keys[-1][r] for r in rows], [cross.values[-1][r] for r in rows]
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


def previous_drafts(out: list[int], previous: tuple[int, ...], n: int, ngram: int = 3) -> list[int]:
    """Continue `out` from the previous hypothesis of the same (shorter) audio: find where out's tail last occurs
    in `previous` and propose what followed it there (up to n tokens)."""
    if not previous:
        return []
    if len(out) <= len(previous) and tuple(out) == previous[: len(out)]:
        return list(previous[len(out) : len(out) + n])
    for size in range(min(ngram, len(out)), 0, -1):
        tail = tuple(out[-size:])
        for i in range(len(previous) - size, -1, -1):
            if previous[i : i + size] == tail:
                return list(previous[i + size : i + size + n])
    return []


def save_heads(path: Path, heads: MTPHeads, model_sha256: str, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: (v.int() if k == "vocab" else v.half()).detach().contiguous() for k, v in heads.state_dict().items()}
    info = {"model_sha256": model_sha256, "n_heads": str(heads.n_heads), "n_attn_heads": str(heads.n_attn_heads),
            "meta": json.dumps(meta)}
    save_file(tensors, str(path), metadata=info)


def load_heads(path: Path, model_sha256: str | None) -> tuple[MTPHeads, dict]:
    """Heads from `path`; a file trained for other base weights is refused (its drafts would be wasted work)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        info = f.metadata() or {}
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    if model_sha256 and info.get("model_sha256") not in (None, model_sha256):
        raise ValueError(f"{path}: MTP heads for another model (sha256 {info.get('model_sha256', '?')[:12]}...)")
    d_model = tensors["blocks.0.weight"].shape[0]
    vocab = tensors.pop("vocab").long() if "vocab" in tensors else None
    heads = MTPHeads(d_model, int(info["n_heads"]), vocab, int(info.get("n_attn_heads", 8)))
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
