"""The Whisper encoder-decoder, read top to bottom: layers -> attention -> block -> encoder/decoder -> model.

Shapes: B batch, T audio positions, n new tokens, L cached tokens, D model width, H heads; N new tokens of a
decoder step packed row after row (each row feeds its own number: its last token plus its drafts).
The KV cache lives outside the modules (KVCache, CrossKV): the caller owns it, one row per segment, and every
row has its own length, so segments of a batch can advance (or roll back) by different numbers of tokens.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.quant import Int8Linear, int8_linear


@dataclass(frozen=True)
class ModelDimensions:
    n_mels: int  # mel bins of the input features (80, or 128 for large-v3)
    n_audio_ctx: int  # encoder positions of a 30 s window (1500)
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int
    n_text_head: int
    n_text_layer: int


@torch.jit.script  # compiled: the decoder step calls it from compiled code (decoder_layers)
def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Over the last dimension, in float32 whatever the weights' dtype: fp16/bf16 statistics drift."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:  # the int8 path
        return F.layer_norm(x, [x.shape[-1]], weight, bias, eps)
    return F.layer_norm(x.float(), [x.shape[-1]], weight.float(), bias.float(), eps).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> Tensor:
    """Whisper's fixed encoder positions (length, channels); checkpoints carry the same table."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def compaction(keep: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows `keep` (ascending) of a batch stay -> (their new order, the (dst, src) row moves that make it).

    Each leaving row's place inside the first len(keep) rows is filled by a staying row from past them, so only
    those few rows are copied, instead of the whole batch's caches on every finished segment."""
    n, stay = len(keep), set(keep)
    moves = list(zip([i for i in range(n) if i not in stay], [i for i in keep if i >= n]))
    order = list(range(n))
    for dst, src in moves:
        order[dst] = src
    return order, moves


def _compact(tensors: list[Tensor], moves: list[tuple[int, int]], n: int) -> list[Tensor]:
    if moves:
        dst, src = [d for d, _ in moves], [s for _, s in moves]
        for t in tensors:
            t[dst] = t[src]
    return [t[:n] for t in tensors]


def _append(a: Tensor, b: Tensor, used_a: int, used_b: int) -> Tensor:
    """Rows of a (n, L, D), then those of b (k, L_b, D) -> (n + k, max(L, L_b), D); only the first used_a / used_b
    positions of each row are copied (the rest is masked: stale but finite, or zeros). b's rows go into a's own
    storage when it has room past a's rows (left by compactions and earlier appends), so a joining segment costs
    a copy of itself, not of the whole batch; otherwise into a new tensor with room for more rows."""
    (n, L, D), k = a.shape, b.shape[0]
    if b.shape[1] <= L:
        last = a.storage_offset() + (n + k - 1) * a.stride(0) + (L - 1) * a.stride(1) + (D - 1) * a.stride(2)
        if last < a.untyped_storage().nbytes() // a.element_size():
            out = a.as_strided((n + k, L, D), a.stride(), a.storage_offset())
            out[n:, :used_b] = b[:, :used_b]
            return out
    out = a.new_zeros(n + k + max(4, (n + k) // 2), max(L, b.shape[1]), D)[: n + k]
    out[:n, :used_a] = a[:, :used_a]
    out[n:, :used_b] = b[:, :used_b]
    return out


@dataclass
class KVCache:
    """Self-attention keys and values of every decoder layer: keys[i], values[i] are (B, capacity, D).

    lengths (B,) counts the valid positions of each row; entries past it are stale and masked, so rolling back
    rejected draft tokens is just `truncate`."""

    keys: list[Tensor]
    values: list[Tensor]
    lengths: Tensor

    @classmethod
    def empty(cls, n_layer: int, batch: int, capacity: int, dim: int, dtype: torch.dtype, device: torch.device) -> KVCache:
        z = lambda: torch.zeros(batch, capacity, dim, dtype=dtype, device=device)  # noqa: E731
        return cls([z() for _ in range(n_layer)], [z() for _ in range(n_layer)], torch.zeros(batch, dtype=torch.long, device=device))

    def truncate(self, lengths: Tensor) -> None:
        """Roll every row back to `lengths` (B,) positions."""
        self.lengths = torch.minimum(self.lengths, lengths)

    def compact(self, moves: list[tuple[int, int]], n: int) -> None:
        """Finished segments leave the batch: row `src` moves into row `dst` for each move, then the first n rows
        stay (see `compaction`)."""
        self.keys, self.values = _compact(self.keys, moves, n), _compact(self.values, moves, n)
        self.lengths = _compact([self.lengths], moves, n)[0]

    def extend(self, other: KVCache) -> None:
        """Append `other`'s rows after ours: segments join a running batch. Only the valid prefixes are copied;
        masked entries past them are zeros or stale values, never uninitialised memory (0 * NaN is NaN)."""
        used = [int(c.lengths.max()) if len(c.lengths) else 0 for c in (self, other)]
        self.keys = [_append(a, b, *used) for a, b in zip(self.keys, other.keys)]
        self.values = [_append(a, b, *used) for a, b in zip(self.values, other.values)]
        self.lengths = torch.cat([self.lengths, other.lengths])


@dataclass
class CrossKV:
    """Cross-attention keys/values of every decoder layer, computed once per segment and kept per row:
    keys[i][r] is row r's (H, T_r, D/H) for layer i (heads first: attention reads one head's keys as one block),
    its real audio positions only. Rows of any audio lengths batch without padding, and joining or leaving a batch
    moves list entries, never tensor data. Rows that started together share one packed tensor per layer
    (TextDecoder.cross_kv), freed when the last of them leaves."""

    keys: list[list[Tensor]]
    values: list[list[Tensor]]

    @property
    def lengths(self) -> list[int]:
        return [k.shape[1] for k in self.keys[0]]

    def select(self, order: list[int]) -> None:
        """Keep rows `order`, in that order."""
        self.keys = [[layer[i] for i in order] for layer in self.keys]
        self.values = [[layer[i] for i in order] for layer in self.values]

    def extend(self, other: CrossKV) -> None:
        """Append `other`'s rows after ours."""
        self.keys = [a + b for a, b in zip(self.keys, other.keys)]
        self.values = [a + b for a, b in zip(self.values, other.values)]


@dataclass
class EncoderCache:
    """A growing segment's encoder self-attention keys/values, (1, T, D) per layer, of the positions its earlier
    previews committed (engine/preview.py). Each call encodes only the positions after them and keeps the
    first `commit` positions of the result for the next call."""

    keys: list[Tensor] = field(default_factory=list)  # filled by the first call
    values: list[Tensor] = field(default_factory=list)
    length: int = 0  # positions cached
    commit: int = 0  # positions to keep after this call (>= length)

    def attach(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """This call's keys/values of `layer` (1, n, D) -> the cached ones followed by them; keeps the committed."""
        if layer < len(self.keys):
            k, v = torch.cat([self.keys[layer], k], 1), torch.cat([self.values[layer], v], 1)
            self.keys[layer], self.values[layer] = k[:, : self.commit], v[:, : self.commit]
        else:
            self.keys.append(k[:, : self.commit])
            self.values.append(v[:, : self.commit])
        return k, v


@torch.jit.script  # compiled: the decoder step calls it from compiled code (decoder_layers)
def attention(q: Tensor, k: Tensor, v: Tensor, n_head: int, mask: Tensor | None, dtype: torch.dtype | None = None) -> Tensor:
    """(B, n, D) queries over (B, L, D) keys/values -> (B, n, D) in q's dtype; mask broadcasts to (B, 1, n, L),
    True = attend. Runs in `dtype` (default: the keys'); see Whisper for when float64."""
    B, n, D, L = q.shape[0], q.shape[1], q.shape[2], k.shape[1]
    at = k.dtype if dtype is None else dtype
    out = F.scaled_dot_product_attention(q.to(at).view(B, n, n_head, D // n_head).transpose(1, 2),
                                         k.to(at).view(B, L, n_head, D // n_head).transpose(1, 2),
                                         v.to(at).view(B, L, n_head, D // n_head).transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).reshape(B, n, D).to(q.dtype)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block. Self-attention q/k/v are one fused projection, cross-attention k/v another
    (Whisper's key projections have no bias; checkpoints store zeros there)."""

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False, attn_dtype: torch.dtype | None = None):
        super().__init__()
        self.n_head, self.attn_dtype = n_head, attn_dtype
        self.attn_ln = LayerNorm(n_state)
        self.qkv = nn.Linear(n_state, 3 * n_state)
        self.attn_out = nn.Linear(n_state, n_state)
        if cross_attention:
            self.cross_ln = LayerNorm(n_state)
            self.cross_q = nn.Linear(n_state, n_state)
            self.cross_kv = nn.Linear(n_state, 2 * n_state)
            self.cross_out = nn.Linear(n_state, n_state)
        self.mlp_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))

    def forward(self, x: Tensor, mask: Tensor | None, layer: int = 0, past: EncoderCache | None = None) -> Tensor:
        """The encoder's: x (B, T, D) under `mask`, after the positions of `past` if given. (A decoder step runs the
        same block compiled: decoder_layers.)"""
        q, k, v = self.qkv(self.attn_ln(x)).chunk(3, dim=-1)
        if past is not None:  # kept in the dtype attention runs in: it casts them to it anyway
            dtype = self.attn_dtype or k.dtype
            k, v = past.attach(layer, k.to(dtype), v.to(dtype))
        return self._mlp(x + self.attn_out(attention(q, k, v, self.n_head, mask, self.attn_dtype)))

    def _mlp(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.mlp_ln(x))

    def tensors(self) -> list[list[Tensor]]:
        """The decoder block's weights as decoder_layers reads them, in this order."""
        norm = lambda m: [m.weight, m.bias]  # noqa: E731
        linear = lambda m: m.tensors() if isinstance(m, Int8Linear) else [m.weight, m.bias]  # noqa: E731
        return [norm(self.attn_ln), linear(self.qkv), linear(self.attn_out), norm(self.cross_ln), linear(self.cross_q),
                linear(self.cross_out), norm(self.mlp_ln), linear(self.mlp[0]), linear(self.mlp[2])]


class DecoderStep:
    """One decoder forward over packed tokens: row r feeds counts[r] tokens (its last one, maybe drafts), which go
    into its cache after its `lengths[r]` cached positions. Linears see only these N = sum(counts) tokens, never
    padding. Attention: every row's first m tokens (m: the fewest any row feeds) in one batched call, the rest of
    a longer feed (drafts to verify) in a call of its own over views of that row's keys; so with equal feeds, as in
    plain greedy, it is one call, and a row's drafts cost the other rows nothing. Cross-attention goes row by row,
    each over its own audio (CrossKV keeps no padding). This is the plan (which row feeds what where);
    decoder_layers runs it."""

    def __init__(self, cache: KVCache, counts: list[int], device: torch.device):
        self.counts = counts
        self.lengths = cache.lengths.tolist()
        self.starts = [sum(counts[:r]) for r in range(len(counts))]
        B, self.m = len(counts), min(counts)
        self.uniform = all(n == self.m for n in counts)  # packed row after row, m each: the batched call is all
        self.rows = torch.repeat_interleave(torch.arange(B, device=device), torch.tensor(counts, device=device))
        self.positions = torch.tensor([p for n, l in zip(counts, self.lengths) for p in range(l, l + n)], device=device)
        head = torch.tensor(self.starts, device=device)[:, None] + torch.arange(self.m, device=device)  # (B, m)
        self.head = head.flatten()
        self.key_len = max(self.lengths) + self.m
        self.head_mask = (torch.arange(self.key_len, device=device)[None, None, :]
                          <= cache.lengths[:, None, None] + torch.arange(self.m, device=device)[None, :, None])[:, None]


# A decoder step is about a thousand small ops. Run from Python, each one hands the GIL over and takes it back, and
# beside the event loop and the encoder worker those handoffs made a step 40-50 % slower; compiled (TorchScript),
# the whole forward is one call that runs without the GIL (docs/performance.md, "The decoder step without the GIL").


@torch.jit.script
def _linear(x: Tensor, p: list[Tensor]) -> Tensor:
    """An int8 linear's tensors (Int8Linear.tensors) or a float one's [weight, bias]."""
    if len(p) == 4:
        return int8_linear(x, p[0], p[1], p[2], p[3])
    return F.linear(x, p[0], p[1])


@torch.jit.script
def attend(q: Tensor, k: Tensor, v: Tensor, n_head: int, dtype: torch.dtype | None, counts: list[int],
           starts: list[int], lengths: list[int], m: int, uniform: bool, head: Tensor, head_mask: Tensor,
           key_len: int) -> Tensor:
    """Packed queries (N, D) over each row's cached keys/values (B, L, D) -> (N, D) (DecoderStep)."""
    B, D = len(counts), q.shape[-1]
    out = torch.empty_like(q)
    if m > 0:  # else some row feeds nothing this forward (a prefill's second one): every row goes alone
        first = attention(q[head].view(B, m, D), k[:, :key_len], v[:, :key_len], n_head, head_mask, dtype).view(-1, D)
        if uniform:
            return first
        out[head] = first
    for r in range(B):
        n, start, length = counts[r], starts[r], lengths[r]
        if n > m:  # this row's remaining tokens, causal among themselves
            end = length + n
            ahead = torch.arange(length + m, end, device=q.device)  # this row's remaining positions
            causal = torch.arange(end, device=q.device)[None, :] <= ahead[:, None]
            out[start + m : start + n] = attention(q[start + m : start + n].unsqueeze(0), k[r : r + 1, :end],
                                                   v[r : r + 1, :end], n_head, causal, dtype)[0]
    return out


@torch.jit.script
def attend_audio(q: Tensor, keys: list[Tensor], values: list[Tensor], counts: list[int], starts: list[int]) -> Tensor:
    """Packed queries (N, D) over each row's own audio keys/values (H, T_r, D/H) -> (N, D): one call per row,
    no padding (segments of a batch range from a second to 30 s). Each (head, query) pair is a problem of its
    own over that head's (expanded, not copied) keys, so a query is computed exactly as if its row fed it alone:
    exact in the keys' own dtype, with no float64 needed. Heads go first, so a head's keys stay in cache for all
    of a row's queries (docs/performance.md, "Kernel choices")."""
    out = torch.empty_like(q)
    for r in range(len(counts)):
        n, start, k, v = counts[r], starts[r], keys[r], values[r]
        if n == 0:
            continue
        H, T, d = k.shape[0], k.shape[1], k.shape[2]
        qh = q[start : start + n].view(n, H, d).transpose(0, 1).unsqueeze(2).to(k.dtype)  # (H, n, 1, d)
        o = F.scaled_dot_product_attention(qh, k.unsqueeze(1).expand(H, n, T, d), v.unsqueeze(1).expand(H, n, T, d))
        out[start : start + n] = o.select(2, 0).transpose(0, 1).reshape(n, H * d).to(q.dtype)
    return out


@torch.jit.script
def decoder_layers(x: Tensor, weights: list[list[list[Tensor]]], eps: float, n_head: int, dtype: torch.dtype | None,
                   counts: list[int], starts: list[int], lengths: list[int], m: int, uniform: bool, rows: Tensor,
                   positions: Tensor, head: Tensor, head_mask: Tensor, key_len: int, keys: list[Tensor],
                   values: list[Tensor], cross_keys: list[list[Tensor]], cross_values: list[list[Tensor]]) -> Tensor:
    """The decoder blocks over a step's packed new tokens x (N, D) (DecoderStep): each appends its keys/values to
    the cache (keys[i], values[i]: (B, capacity, D)), attends over it, then over each row's audio. `eps`: the
    blocks' layer norms'."""
    for i in range(len(weights)):
        w = weights[i]  # attn_ln, qkv, attn_out, cross_ln, cross_q, cross_out, mlp_ln, mlp[0], mlp[2] (tensors())
        q, k, v = _linear(layer_norm(x, w[0][0], w[0][1], eps), w[1]).chunk(3, -1)
        cached_k, cached_v = keys[i], values[i]
        cached_k[rows, positions] = k.to(cached_k.dtype)
        cached_v[rows, positions] = v.to(cached_v.dtype)
        x = x + _linear(attend(q, cached_k, cached_v, n_head, dtype, counts, starts, lengths, m, uniform, head,
                               head_mask, key_len), w[2])
        q = _linear(layer_norm(x, w[3][0], w[3][1], eps), w[4])
        x = x + _linear(attend_audio(q, cross_keys[i], cross_values[i], counts, starts), w[5])
        x = x + _linear(F.gelu(_linear(layer_norm(x, w[6][0], w[6][1], eps), w[7])), w[8])
    return x


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int,
                 attn_dtype: torch.dtype | None = None):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head, False, attn_dtype) for _ in range(n_layer)])
        self.ln_post = LayerNorm(n_state)

    def forward(self, mel: Tensor, frames: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """mel (B, n_mels, F) -> audio features (B, T = ceil(F/2), D) and their validity mask (B, T).

        `frames` (B,) gives each row's real mel frames when rows were padded to a common F (true-length
        encoding); padding is then kept out of every computation, so a row encodes exactly as it would alone."""
        x = F.gelu(self.conv1(mel))
        mask = None
        if frames is not None:
            x = x * (torch.arange(x.shape[-1], device=x.device) < frames[:, None])[:, None, :].to(x.dtype)
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        if frames is not None:
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < (frames[:, None] + 1) // 2
        attn_mask = None if mask is None else mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln_post(x), mask

    def extend(self, mel: Tensor, cache: EncoderCache, commit: int) -> Tensor:
        """Streaming: mel (1, n_mels, F) of a segment whose first cache.length positions are cached -> features of
        the positions after them (1, T - cache.length, D), attending over the cached ones as well; then positions
        up to `commit` are cached. Cached positions never saw the audio after them, so this approximates
        `forward` (for previews: engine/preview.py)."""
        t0 = cache.length
        s = max(0, 2 * t0 - 4)  # frames from here give the new positions their exact convolution inputs
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel[:, :, s:])))).transpose(1, 2)[:, t0 - s // 2 :]
        x = x + self.positional_embedding[t0 : t0 + x.shape[1]].to(x.dtype)
        cache.commit = max(t0, min(commit, t0 + x.shape[1]))
        for i, block in enumerate(self.blocks):
            x = block(x, None, past=cache, layer=i)
        cache.length = cache.commit
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int, attn_dtype: torch.dtype | None = None,
                 audio_dtype: torch.dtype | None = None):
        super().__init__()
        self.n_head, self.attn_dtype = n_head, attn_dtype  # the caches are kept in attn_dtype: no cast per step
        self.audio_dtype = audio_dtype  # cross-attention keys/values are kept, and attended, in it (None: as computed)
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head, True, attn_dtype) for _ in range(n_layer)])
        self.ln = LayerNorm(n_state)
        self.unembed = nn.Linear(n_state, n_vocab, bias=False)  # tied to token_embedding (int8 makes its own copy)
        self.unembed.weight = self.token_embedding.weight

    def cross_kv(self, audio: Tensor, mask: Tensor | None) -> CrossKV:
        """Project the encoder output (B, T, D), mask (B, T) of real positions or None, once into every layer's
        cross-attention keys/values. Only real positions are projected: the rows' frames are packed into one
        (N, D) input (a batch of short rows beside a 30 s one is mostly padding), and each row's keys/values are
        views of one packed tensor per layer."""
        T = audio.shape[1]
        lengths = [T] * audio.shape[0] if mask is None else mask.sum(1).tolist()
        packed = torch.cat([row[:t] for row, t in zip(audio, lengths)])
        dtype = self.audio_dtype or packed.dtype

        def heads(t: Tensor) -> tuple[Tensor, ...]:  # (N, D) -> per row (H, T_r, D/H)
            return t.reshape(len(packed), self.n_head, -1).transpose(0, 1).to(dtype).contiguous().split(lengths, 1)

        keys, values = [], []
        for block in self.blocks:
            k, v = block.cross_kv(packed).chunk(2, dim=-1)  # activations' dtype: no float64 needed (attend_audio)
            keys.append(list(heads(k)))
            values.append(list(heads(v)))
        return CrossKV(keys, values)

    def forward(self, tokens: Tensor, counts: list[int], cache: KVCache, cross: CrossKV) -> Tensor:
        """tokens (N,) packed row after row, counts[r] of them for row r, appended after each row's cached prefix
        -> their final hidden states (N, D), packed the same way; the cache advances by counts."""
        step = DecoderStep(cache, counts, tokens.device)
        ctx = self.positional_embedding.shape[0]
        x = self.token_embedding(tokens) + self.positional_embedding[step.positions.clamp(max=ctx - 1)]
        x = decoder_layers(x, [block.tensors() for block in self.blocks], self.ln.eps, self.n_head, self.attn_dtype,
                           counts, step.starts, step.lengths, step.m, step.uniform, step.rows, step.positions,
                           step.head, step.head_mask, step.key_len, cache.keys, cache.values, cross.keys, cross.values)
        cache.lengths = cache.lengths + torch.tensor(counts, device=tokens.device)
        return self.ln(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., D) -> (..., n_vocab) in float32."""
        return self.unembed(hidden).float()


@contextmanager
def uninitialised() -> Iterator[None]:
    """Build modules without their random initialisation, for weights a checkpoint then overwrites all of (base on a
    2-core EPYC: 0.31 s of the 1.23 s a model takes to load)."""
    kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.LayerNorm)
    saved = [k.reset_parameters for k in kinds]
    for k in kinds:
        k.reset_parameters = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        for k, f in zip(kinds, saved):
            k.reset_parameters = f  # type: ignore[method-assign]


class Whisper(nn.Module):
    """`attn_dtype` (None: the weights' dtype) is what the decoder's self-attention runs in and its cache holds.
    float32 kernels choose their reduction order by shape, so a row's attention output changes in the last bits
    with the number of tokens fed at once and the cache lengths of the other rows, and int8 activation
    quantisation turns such bits into other tokens now and then. In float64 the differences vanish when the
    output is rounded back to float32: draft verification and continuous batching then give every segment exactly
    its greedy tokens alone. Cross-attention needs none of it: each query is computed alone over its own row's
    audio (DecoderStep.attend_audio). The encoder needs none either (the runner never pads a row there).
    `audio_attn_dtype` (None: the activations' dtype) is what attention over the audio runs in, the encoder's and
    the decoder's cross-attention (whose keys/values are kept in it), e.g. bfloat16 where the CPU computes it
    natively (ModelRunner)."""

    def __init__(self, dims: ModelDimensions, attn_dtype: torch.dtype | None = None,
                 audio_attn_dtype: torch.dtype | None = None):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer,
                                    audio_attn_dtype)
        self.decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer,
                                   attn_dtype, audio_attn_dtype)

    def new_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        d = self.dims
        ref = self.decoder.positional_embedding
        dtype = self.decoder.attn_dtype or ref.dtype
        return KVCache.empty(d.n_text_layer, batch, capacity or d.n_text_ctx + 16, d.n_text_state, dtype, ref.device)

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865
