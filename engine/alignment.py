"""Word timings from the decoder's cross-attention, as openai/whisper and faster-whisper find them.

After a segment is decoded, one teacher-forced decoder forward over [start sequence, its tokens, end of text]
reads the cross-attention of the model's alignment heads (those whose attention follows the speech; a model
without a list uses every head of the upper half of its decoder). Per head the attention over the segment's real
audio frames is normalised across tokens and median-filtered in time; their mean, negated, is the cost of a
dynamic time warping from tokens to frames. A word starts where the path first reaches the row that predicts its
first token and ends where it reaches the row after its last. Words are tokens grouped at spaces (characters for
languages written without them), punctuation joins its word, and the known fix-ups cap implausibly long words.
The same forward gives each token's probability (a word's: their mean).
"""
from __future__ import annotations

import string

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.messages import UNSPACED_LANGUAGES, WordTiming
from engine.model import TextDecoder, attention
from engine.tokenizer import Tokenizer

FRAMES_PER_S = 50  # encoder positions per second of audio (20 ms each)
MEDIAN_WIDTH = 7  # encoder positions of the median filter over each head's attention
PREPENDED = "\"'“¿([{-"  # punctuation that joins the word after it
APPENDED = "\"'.。,，!！?？:：”)]}、"  # and the word before it
SENTENCE_END = ".。!！?？"


def default_heads(n_layer: int, n_head: int) -> tuple[tuple[int, int], ...]:
    """openai/whisper's rule for a model without a known set: every head of the upper half of the decoder."""
    return tuple((layer, head) for layer in range(n_layer // 2, n_layer) for head in range(n_head))


@torch.inference_mode()
def attend(decoder: TextDecoder, tokens: list[int], keys: list[Tensor], values: list[Tensor],
           heads: tuple[tuple[int, int], ...]) -> tuple[Tensor, Tensor]:
    """One decoder forward of `tokens` (a single row) over its audio keys/values ((H, T, d) per layer) ->
    (the alignment heads' scaled attention logits (len(heads), n, T), float32; the log-probabilities of each next
    token (n - 1,))."""
    device = decoder.positional_embedding.device
    ids = torch.tensor(tokens, device=device)
    n = len(tokens)
    x = (decoder.token_embedding(ids) + decoder.positional_embedding[:n])[None]
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]
    picked: list[Tensor] = []
    for i, block in enumerate(decoder.blocks):
        q, k, v = block.qkv(block.attn_ln(x)).chunk(3, dim=-1)
        x = x + block.attn_out(attention(q, k, v, block.n_head, causal, block.attn_dtype))
        K, V = keys[i], values[i]
        H, T, d = K.shape
        q = block.cross_q(block.cross_ln(x))[0].view(n, H, d).transpose(0, 1).to(K.dtype)  # (H, n, d)
        logits = (q @ K.transpose(1, 2)) * d ** -0.5  # (H, n, T)
        mixed = (logits.softmax(-1) @ V).transpose(0, 1).reshape(1, n, H * d).to(x.dtype)
        x = block._mlp(x + block.cross_out(mixed))
        picked += [logits[h].float() for layer, h in heads if layer == i]
    logp = decoder.logits(decoder.ln(x[0, :-1])).log_softmax(-1)
    return torch.stack(picked), logp.gather(-1, ids[1:, None])[:, 0]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotonic path through `cost` (N, M) from (0, 0) to (N-1, M-1) of least total cost, moving down, right
    or diagonally -> (row, column) indices along it. Rows are filled as a min-plus scan (vectorised); ties go to
    the diagonal, then down, as whisper's loop breaks them."""
    N, M = cost.shape
    acc = np.full((N + 1, M + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, N + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])  # from (i-1, j-1) or (i-1, j), for j = 1..M
        x = cost[i - 1]
        total = np.concatenate([[0.0], np.cumsum(x)])  # total[j] = x[0] + ... + x[j-1]
        acc[i, 1:] = total[1:] + np.minimum.accumulate(above - total[:-1])  # c_j = x_j + min(above_j, c_{j-1})
    i, j, rows, cols = N, M, [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        if i == 0:
            j -= 1
            continue
        if j == 0:
            i -= 1
            continue
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if c0 < c1 and c0 < c2:
            i, j = i - 1, j - 1
        elif c1 < c0 and c1 < c2:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a window of `width` along the last axis, edges reflected (as whisper filters)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    return F.pad(x, (pad, pad), mode="reflect").unfold(-1, width, 1).median(-1).values  # x: (heads, tokens, frames)


def split_words(tokenizer: Tokenizer, tokens: list[int], language: str) -> list[tuple[str, list[int]]]:
    """Tokens -> (word, its tokens): pieces that decode to whole characters, grouped at spaces and punctuation, or
    each a word of its own for languages written without spaces."""
    pieces: list[tuple[str, list[int]]] = []
    current: list[int] = []
    for t in tokens:
        current.append(t)
        text = tokenizer.decode(current)
        if "\ufffd" not in text:  # whole characters (a multi-byte character spans tokens)
            pieces.append((text, current))
            current = []
    if current:
        pieces.append((tokenizer.decode(current), current))
    if language in UNSPACED_LANGUAGES:  # words are characters
        return pieces
    words: list[tuple[str, list[int]]] = []
    for text, ids in pieces:
        if not words or text.startswith(" ") or text.strip() in string.punctuation:
            words.append((text, list(ids)))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1] + ids)
    return words


def align(logits: Tensor, token_logp: Tensor, tokenizer: Tokenizer, text_tokens: list[int], first_row: int,
          frames: tuple[int, int], language: str, skip: int = 0) -> list[WordTiming]:
    """Word timings of `text_tokens[skip:]` -> seconds from the start of `frames`. `logits` (heads, n, T) and
    `token_logp` (n - 1,) come from `attend` over a sequence whose row `first_row` predicts text_tokens[0];
    `frames` is the [first, end) range of encoder positions that hold the audio to time (not the padding). The
    first `skip` tokens (a forced prefix, said in the audio before) are aligned but not returned."""
    if not text_tokens:
        return []
    rows = slice(first_row, first_row + len(text_tokens) + 1)  # the last predicts end of text
    weights = logits[:, rows, frames[0]:frames[1]].softmax(-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / std.clamp(min=1e-12), MEDIAN_WIDTH)
    text_idx, time_idx = dtw(-weights.mean(0).double().cpu().numpy())
    jumps = np.diff(text_idx, prepend=-1).astype(bool)
    times = time_idx[jumps] / FRAMES_PER_S  # when the path reaches each row
    probs = token_logp[first_row:first_row + len(text_tokens)].exp().tolist()
    words = split_words(tokenizer, text_tokens[:skip], language) + split_words(tokenizer, text_tokens[skip:], language)
    timings, at = [], 0
    for text, ids in words:
        if at >= skip:
            timings.append(WordTiming(text, float(times[at]), float(times[at + len(ids)]),
                                      float(np.mean(probs[at:at + len(ids)])), tuple(ids)))
        at += len(ids)
    return timings


def tidy(words: list[WordTiming]) -> list[WordTiming]:
    """whisper's fix-ups on one segment's words: long words at sentence marks capped at twice the median word
    length, punctuation joined to its word, and a first word after a pause (the segment's start) kept from
    reaching back into it."""
    durations = [w.end - w.start for w in words if w.end > w.start]
    median = min(0.7, float(np.median(durations))) if durations else 0.0
    longest = 2 * median
    if durations:
        for prev, w in zip(words, words[1:]):
            if w.end - w.start > longest:
                if w.word in SENTENCE_END:
                    w.end = w.start + longest
                elif prev.word in SENTENCE_END:
                    w.start = w.end - longest
    words = _merge_punctuation(words)
    if words and words[0].end > 4 * median and (
            words[0].end - words[0].start > longest or (len(words) > 1 and words[1].end - words[0].start > 2 * longest)):
        if len(words) > 1 and words[1].end - words[1].start > longest:
            boundary = max(words[1].end / 2, words[1].end - longest)
            words[0].end = words[1].start = boundary
        words[0].start = max(0.0, words[0].end - longest)
    return words


def _merge_punctuation(words: list[WordTiming]) -> list[WordTiming]:
    """Opening marks join the word after them, closing marks the word before; the word keeps its own times."""
    out: list[WordTiming] = []
    pending: list[WordTiming] = []
    for w in words:
        if w.word.startswith(" ") and w.word.strip() in PREPENDED:
            pending.append(w)
            continue
        for p in reversed(pending):
            w.word, w.tokens = p.word + w.word, p.tokens + w.tokens
        pending = []
        if out and not out[-1].word.endswith(" ") and w.word in APPENDED:
            out[-1].word, out[-1].tokens = out[-1].word + w.word, out[-1].tokens + w.tokens
        else:
            out.append(w)
    return out + pending
