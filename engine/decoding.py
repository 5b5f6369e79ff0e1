"""Batched greedy decoding with draft-and-verify, one loop for every draft source.

Each step feeds every row [last token + its drafts] in one decoder forward; the row keeps the longest prefix
of drafts on which the model's own greedy choice agrees, plus the model's next token, and the cache rolls back
past the rest. With no drafts this is plain greedy decoding; with any drafts the output is the same tokens.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from engine.alignment import align, attend, tidy
from engine.model import CrossKV, KVCache, Whisper, compaction
from engine.quant import Int8Linear
from engine.messages import DecodeOptions, DecodeResult, WordTiming
from engine.mtp import AudioKV, MTPDrafter, MTPHeads, follow
from engine.tokenizer import Tokenizer

PREVIOUS_DRAFT_LEN = 24  # tokens of a previous hypothesis verified per forward: they are usually all right (README: MTP)
GUESS_DRAFT_LEN = 8  # tokens of the audio head's guess verified per forward (README: MTP)
# after a rejected draft a row verifies one past what it accepted, at least this many, doubling back while all hold:
# under load a previous hypothesis is often stale, and each draft position costs about what a token does (docs/mtp.md)
MIN_DRAFT_LEN = 2
REREAD_MIN = 3  # tokens: a shorter transcript said twice may be what was said ("no, no")
SAID_MIN = 3  # words: a shorter reading said again may be what was said ("Thank you. Thank you.")


@dataclass
class _Row:
    key: object  # the caller's name for this segment
    opts: DecodeOptions
    prefix: list[int]  # prompt tokens up to and including <|startoftranscript|>
    language: str | None
    language_prob: float = 1.0
    no_speech_prob: float = 0.0
    out: list[int] = field(default_factory=list)
    logprob: float = 0.0
    forwards: int = 0
    done: bool = False
    looped: bool = False
    ended: bool = False  # emitted <|endoftext|>
    guess: tuple[int, ...] = ()  # the audio head's guess at the whole transcript (engine/mtp.py: CTCHead)
    lookahead: list[int] = field(default_factory=list)  # greedy's picks after the last rejected draft
    positions: int = 0  # encoder positions of its audio itself, not padding (0: all): word timing reads those
    draft_len: int = PREVIOUS_DRAFT_LEN  # at most this many drafts next step (MIN_DRAFT_LEN)

    @property
    def cap(self) -> int:
        return self.opts.max_new_tokens


@dataclass
class Batch:
    """Segments decoding together, in cache order: the rows, their self- and cross-attention caches, and the
    final hidden state of each row's last accepted token (what the MTP heads draft from)."""

    rows: list[_Row]
    cache: KVCache
    cross: CrossKV
    last_hidden: Tensor  # (B, D)

    @torch.inference_mode()
    def select(self, keep: list[int]) -> None:
        """Only rows `keep` (ascending) stay; their order may change (engine/model.py: compaction)."""
        order, moves = compaction(keep)
        self.rows = [self.rows[i] for i in order]
        self.cache.compact(moves, len(keep))
        self.cross.select(order)
        self.last_hidden = self.last_hidden[torch.tensor(order, dtype=torch.long, device=self.last_hidden.device)]

    def redraft(self, keys: set[object], hypothesis: tuple[int, ...]) -> None:
        """Rows `keys` verify `hypothesis` as their drafts from now on, where it is longer than their previous one (a
        newer reading of audio theirs begins with). Their output stays the greedy one; only its speed changes."""
        for r in self.rows:
            if r.key in keys and len(hypothesis) > len(r.opts.previous):
                r.opts = replace(r.opts, previous=hypothesis)

    @torch.inference_mode()  # the caches are inference tensors, written in place
    def extend(self, other: Batch) -> None:
        """`other`'s rows join this batch (after ours)."""
        self.rows += other.rows
        self.cache.extend(other.cache)
        self.cross.extend(other.cross)
        self.last_hidden = torch.cat([self.last_hidden, other.last_hidden])


class GreedyDecoder:
    """Decodes segments whose cross-attention keys/values are computed: `decode` a fixed batch, or `prefill`
    segments into a Batch and `step` it, letting new segments join between steps."""

    def __init__(self, model: Whisper, tokenizer: Tokenizer, suppress: tuple[int, ...], suppress_begin: tuple[int, ...],
                 heads: MTPHeads | None = None, n_drafts: int | None = None, draft_min_prob: float = 0.0,
                 alignment_heads: tuple[tuple[int, int], ...] = ()):
        self.model, self.tok, self.alignment_heads = model, tokenizer, alignment_heads
        dev = model.decoder.positional_embedding.device
        n_vocab = model.dims.n_vocab
        self.suppress = torch.zeros(n_vocab, dtype=torch.bool, device=dev)
        self.suppress[[i for i in suppress if 0 <= i < n_vocab]] = True
        self.suppress_begin = self.suppress.clone()
        self.suppress_begin[[i for i in suppress_begin if 0 <= i < n_vocab]] = True
        self.lang_ids = torch.tensor(list(tokenizer.languages.values()), device=dev)
        self.device = dev
        self.mtp = None
        if heads is not None:
            k = min(n_drafts or heads.n_heads, heads.n_heads)
            int8 = isinstance(model.decoder.unembed, Int8Linear)
            self.mtp = MTPDrafter(heads, model.decoder.token_embedding, self.suppress, k, int8, draft_min_prob)

    @torch.inference_mode()
    def decode(self, cross: CrossKV, options: list[DecodeOptions], guesses: list[tuple[int, ...]] | None = None,
               positions: list[int] | None = None) -> list[DecodeResult]:
        """cross: the batch's encoder keys/values (B rows, consumed); options: one per row; guesses: per row, the
        audio head's guess at its transcript (drafts for "mtp"/"both"), if any; positions: see prefill."""
        batch = self.prefill(cross, options, list(range(len(options))), guesses, positions)
        done = dict(self.step(batch, draft=False))  # rows that ended at their first token
        while batch.rows:
            done.update(self.step(batch))
        return [done[i] for i in range(len(options))]

    @torch.inference_mode()
    def prefill(self, cross: CrossKV, options: list[DecodeOptions], keys: list[object],
                guesses: list[tuple[int, ...]] | None = None, positions: list[int] | None = None) -> Batch:
        """Start decoding segments (cross: their encoder keys/values, consumed) -> a Batch whose rows carry `keys`
        and hold their first token; `positions`: per row, the encoder positions of its audio itself (word timing
        reads those). Prefill runs the prompt, [prompt, sot, lang, task, notimestamps], in one forward for a row
        whose language is known or guessed (`DecodeOptions.previous_language`: detection reads the logits at sot,
        which the tokens after it cannot change, so a right guess costs nothing); a row that detects without a
        guess, or guessed wrong, then feeds [lang, task, notimestamps] in a second forward."""
        tok, dec = self.tok, self.model.decoder
        rows = [self._row(k, o) for k, o in zip(keys, options)]
        for r, g in zip(rows, guesses or []):
            r.guess = g
        for r, n in zip(rows, positions or []):
            r.positions = n
        # Room for the prompt, the start sequence, the row's token cap and one step's padding (a row's feed is
        # padded to the longest in its batch: 1 + drafts), not for the whole text context: most segments allow
        # far fewer tokens than 448, and on the CPU the cache holds float64.
        cache = self.model.new_cache(len(rows), max(len(r.prefix) + len(tok.sot_sequence(r.language, r.opts.task))
                                                    + len(r.opts.prefix) + r.cap for r in rows) + 1 + PREVIOUS_DRAFT_LEN)
        tried = [r.language or r.opts.previous_language for r in rows]  # None: detect before feeding the rest
        first = [r.prefix + (self._start(r, t) if t else []) for r, t in zip(rows, tried)]
        hidden, starts = self._forward(cache, cross, first, rows)
        last = [hidden[s + len(f) - 1] for s, f in zip(starts, first)]
        at_sot = dec.logits(hidden[[s + len(r.prefix) - 1 for s, r in zip(starts, rows)]]).float()
        probs = at_sot.softmax(-1)
        for r, p in zip(rows, probs[:, tok.no_speech].tolist()):
            r.no_speech_prob = p
        if any(r.language is None for r in rows):
            lang_probs = at_sot[:, self.lang_ids].softmax(-1)
            best = lang_probs.argmax(-1).tolist()
            for r, b, lp in zip(rows, best, lang_probs.tolist()):
                if r.language is None:
                    r.language, r.language_prob = tok.language_of(int(self.lang_ids[b])), lp[b]
            again = [r.language != t for r, t in zip(rows, tried)]  # no guess, or a wrong one: back to sot
            if any(again):
                cache.truncate(torch.tensor([len(r.prefix) if a else n for r, a, n in
                                             zip(rows, again, cache.lengths.tolist())], device=self.device))
                rest = [self._start(r) if a else [] for r, a in zip(rows, again)]
                hidden, starts = self._forward(cache, cross, rest, rows)
                last = [hidden[s + len(f) - 1] if f else h for s, f, h in zip(starts, rest, last)]
        last_hidden = torch.stack(last)
        picks, logits = self._greedy(last_hidden, list(range(len(rows))), [[] for _ in rows], rows)
        for r, p, lp in zip(rows, picks, self._logprobs(logits, list(range(len(rows))), [p[0] for p in picks])):
            self._accept(r, [(p[0], lp)])
        return Batch(rows, cache, cross, last_hidden)

    @torch.inference_mode()
    def step(self, batch: Batch, draft: bool = True) -> list[tuple[object, DecodeResult]]:
        """Finished rows leave the batch (-> their (key, result)); then, if any row is left and `draft`, one
        forward feeds each its last token plus drafts and keeps what greedy agrees with (the cache rolls back
        past the rest). Rows may join between steps (Batch.extend): this is the continuous-batching step."""
        finished = [(r.key, self._result(r, batch.cross, i)) for i, r in enumerate(batch.rows) if r.done]
        if finished:
            keep = [i for i, r in enumerate(batch.rows) if not r.done]
            batch.select(keep)
        if not batch.rows or not draft:
            return finished
        rows, cache = batch.rows, batch.cache
        drafts = [d[: min(r.draft_len, max(0, r.cap - len(r.out)))]
                  for r, d in zip(rows, self._drafts(rows, batch.last_hidden, batch.cross))]
        start = cache.lengths.clone()
        hidden, starts = self._forward(cache, batch.cross, [[r.out[-1]] + d for r, d in zip(rows, drafts)], rows)
        picks, logits = self._greedy(hidden, starts, drafts, rows)
        accepted = []
        for d, c in zip(drafts, picks):
            m = 0
            while m < len(d) and d[m] == c[m]:
                m += 1
            accepted.append(m)
        at = [s + j for s, m in zip(starts, accepted) for j in range(m + 1)]  # the picks kept: log-probs of those only
        lps = iter(self._logprobs(logits, at, [c[j] for c, m in zip(picks, accepted) for j in range(m + 1)]))
        for r, d, c, m in zip(rows, drafts, picks, accepted):
            if d:
                r.draft_len = min(PREVIOUS_DRAFT_LEN, 2 * len(d)) if m == len(d) else max(MIN_DRAFT_LEN, m + 1)
            self._accept(r, [(t, next(lps)) for t in c[: m + 1]])
            r.lookahead = c[m + 1 :] if m < len(d) else []
        acc = torch.tensor(accepted, device=self.device)
        cache.truncate(start + 1 + acc)  # the fed last token and the accepted drafts stay cached
        batch.last_hidden = hidden[torch.tensor(starts, device=self.device) + acc]
        return finished

    def _drafts(self, rows: list[_Row], hidden: Tensor, cross: CrossKV) -> list[list[int]]:
        """Each row's drafts: its previous hypothesis where one is given and still matches, else the audio head's
        guess, else the decoder heads'."""
        drafts = [follow(r.out, r.opts.previous, r.lookahead, PREVIOUS_DRAFT_LEN) if r.opts.drafts in ("previous", "both") else []
                  for r in rows]
        for r, d in zip(rows, drafts):
            if not d and r.guess and r.opts.drafts in ("mtp", "both"):
                d += follow(r.out, r.guess, r.lookahead, GUESS_DRAFT_LEN)
        need = [i for i, (r, d) in enumerate(zip(rows, drafts)) if not d and r.opts.drafts in ("mtp", "both")]
        if need and self.mtp is not None:
            idx = torch.tensor(need, device=self.device)
            audio = AudioKV.of(cross, need, hidden.dtype)
            for i, d in zip(need, self.mtp.propose([rows[i].out[-1] for i in need], hidden[idx], audio)):
                drafts[i] = d
        return drafts

    def _start(self, row: _Row, language: str | None = None) -> list[int]:
        """What follows <|startoftranscript|>: language (the row's unless given), task, no timestamps, then the
        forced text prefix."""
        return self.tok.sot_sequence(language or row.language, row.opts.task) + list(row.opts.prefix)

    def _row(self, key: object, opts: DecodeOptions) -> _Row:
        tok = self.tok
        prefix = [tok.sot]
        if opts.prompt:
            prompt = tok.encode(" " + opts.prompt.strip())[-(self.model.dims.n_text_ctx // 2 - 1):]
            prefix = [tok.sot_prev, *prompt, tok.sot]
        tok.check_language(opts.language)
        tok.check_language(opts.previous_language)
        language = opts.language if tok.multilingual else "en"
        row = _Row(key, opts, prefix, language)
        room = self.model.dims.n_text_ctx - len(prefix) - len(tok.sot_sequence(language, opts.task)) - len(opts.prefix)
        if room < opts.max_new_tokens:
            row.opts = replace(opts, max_new_tokens=max(1, room))
        return row

    def _forward(self, cache, cross: CrossKV, feeds: list[list[int]], rows: list[_Row]) -> tuple[Tensor, list[int]]:
        """Append each row's feed (variable lengths) -> hidden states (N, D) packed row after row, and where each
        row's start in that packing."""
        tokens = torch.tensor([t for f in feeds for t in f], device=self.device)
        counts = [len(f) for f in feeds]
        for r, n in zip(rows, counts):
            r.forwards += n > 0
        return self.model.decoder(tokens, counts, cache, cross), [sum(counts[:i]) for i in range(len(counts))]

    def _greedy(self, hidden: Tensor, starts: list[int], drafts: list[list[int]], rows: list[_Row]) -> tuple[list[list[int]], Tensor]:
        """The greedy choice at each row's positions, hidden (N, D) packed from `starts` (position j of a row predicts
        the token after its j-th draft), and the logits (N, V) it was read from. Suppressed tokens are masked; a
        segment's first token also masks blank and end of text."""
        logits = self.model.decoder.logits(hidden).masked_fill_(self.suppress, float("-inf"))  # (N, V), a new tensor
        first = [s for s, r in zip(starts, rows) if not r.out]
        if first:
            logits[first] = logits[first].masked_fill(self.suppress_begin, float("-inf"))
        best = logits.argmax(-1).tolist()
        return [best[s : s + len(d) + 1] for s, d in zip(starts, drafts)], logits

    def _logprobs(self, logits: Tensor, at: list[int], tokens: list[int]) -> list[float]:
        """Log-probabilities of `tokens` at positions `at` of `logits` (N, V): only the picks a row keeps, as the
        normaliser is a pass over the whole vocabulary."""
        chosen = logits[at]
        picked = chosen.gather(-1, torch.tensor(tokens, device=self.device)[:, None])[:, 0]
        return (picked - chosen.logsumexp(-1)).tolist()

    def _accept(self, row: _Row, picks: list[tuple[int, float]]) -> None:
        for t, lp in picks:
            if row.done:
                return
            if t == self.tok.eot:
                row.done = row.ended = True
                row.logprob += lp
                return
            row.out.append(t)
            row.logprob += lp
            if len(row.out) >= row.cap:
                row.done = True
            elif self._loops(row.out, row.opts.repeat_tokens) or (row.opts.repeat_tokens and _rereads(row.out)):
                row.done = row.looped = True
            elif row.opts.repeat_tokens and len(row.out) >= 2 * row.opts.repeat_tokens and len(row.out) % 16 == 0:
                row.looped = row.done = compression_ratio(self.tok.decode(row.out)) > row.opts.compression_ratio_threshold

    def _reread_after(self, said: list[str], out: list[int]) -> int:
        """How many of `out`'s first tokens come before it says the words `said` (its forced prefix's, 3+) again
        and then begins its own again ("Ask not. And so my fellow Americans. Ask not." after "And so my fellow
        Americans.", seen under load in a Deepgram live test), or 0."""
        words = _words(self.tok.decode(out))
        p = len(said)
        if p < SAID_MIN:
            return 0
        for i in range(1, len(words) - p):
            rest = words[i + p:]
            if words[i:i + p] == said and len(rest) <= i and words[:len(rest)] == rest:
                return self._saying(words[:i], out)
        return 0

    def _said_twice(self, out: list[int]) -> int:
        """How many of `out`'s first tokens are a reading of 3+ words that the rest says again (case and punctuation
        aside: "and so my fellow Americans. And so my fellow Americans." from 2.2 s of audio), or 0."""
        words = _words(self.tok.decode(out))
        half = len(words) // 2
        if half < SAID_MIN or len(words) % 2 or words[:half] != words[half:]:
            return 0
        return self._saying(words[:half], out)

    def _saying(self, said: list[str], out: list[int]) -> int:
        """How many of `out`'s first tokens say the words `said` (the longest such start: trailing punctuation
        goes with it), or 0."""
        cut = 0
        if not said or _words(self.tok.decode(out))[:len(said)] != said:  # the usual case: one decode, no search
            return 0
        for k in range(1, len(out) + 1):
            words = _words(self.tok.decode(out[:k]))
            if words == said:
                cut = k
            elif len(words) > len(said) or words[:-1] != said[:len(words) - 1] or \
                    (words and not said[len(words) - 1].startswith(words[-1])):  # a word may still be growing
                break
        return cut

    @staticmethod
    def _loops(out: list[int], span: int) -> bool:
        """True when the tail repeats one phrase (period <= span/3) back to back over `span` tokens."""
        if not span or len(out) < span:
            return False
        tail = out[-span:]
        return any(tail[:-p] == tail[p:] for p in range(1, span // 3 + 1))

    def _result(self, r: _Row, cross: CrossKV, row: int) -> DecodeResult:
        if r.opts.prefix:  # it may read the leading audio again after being given its text: drop that reading
            lead = _words(self.tok.decode(list(r.opts.prefix)))
            r.out = r.out[self._saying(lead, r.out):]
            r.out = r.out[: self._reread_after(lead, r.out) or None]
        if r.looped and (p := _reread(r.out)) is not None:  # it read the audio again from the start: a clean read
            r.out, r.looped = r.out[:p], False
        elif r.ended and (p := self._said_twice(r.out)):  # the same, ended after the second reading
            r.out = r.out[:p]
        elif r.looped and self._loops(r.out, r.opts.repeat_tokens):  # keep one copy of the looping phrase
            r.out = _cut_loop(r.out, r.opts.repeat_tokens)
        text = self.tok.decode(r.out)
        n = len(r.out) + r.ended
        words = self._timed_words(r, [k[row] for k in cross.keys], [v[row] for v in cross.values]) \
            if r.opts.word_timestamps and r.out else ()
        return DecodeResult(tuple(r.out), text, r.language or "en", r.language_prob, r.no_speech_prob, r.logprob / max(n, 1),
                            compression_ratio(text), r.looped, r.forwards, n, tuple(words))

    def _timed_words(self, r: _Row, keys: list[Tensor], values: list[Tensor]) -> list[WordTiming]:
        """The row's output words, timed from the alignment heads' attention over its audio (the forced prefix
        is aligned too, over the audio it was said in, and left out)."""
        start = [self.tok.sot] + self.tok.sot_sequence(r.language, r.opts.task)
        text = list(r.opts.prefix) + r.out
        logits, logp = attend(self.model.decoder, start + text + [self.tok.eot], keys, values, self.alignment_heads)
        words = align(logits, logp, self.tok, text, len(start) - 1, (0, r.positions or keys[0].shape[1]),
                      r.language or "en", skip=len(r.opts.prefix))
        return tidy(words)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _reread(out: list[int]) -> int | None:
    """The length of a transcript that `out` repeats from its first token on (a trimmed short segment read twice
    over, "And so my fellow Americans. And so my fellow..."), or None. At least REREAD_MIN tokens long, and the copy
    after it at least that long too."""
    for p in range(REREAD_MIN, len(out) - REREAD_MIN + 1):
        if out[p:] == out[: len(out) - p]:
            return p
    return None


def _rereads(out: list[int]) -> bool:
    """Whether `out` has read a transcript of at least REREAD_MIN tokens twice over and begun it a third time: the
    loop of a trimmed short segment, stopped here instead of after repeat_tokens or more (_reread keeps one)."""
    n = len(out)
    return any(out[p:] == out[: n - p] for p in range(REREAD_MIN, (n - REREAD_MIN) // 2 + 1) if out[p] == out[0])


def _cut_loop(out: list[int], span: int) -> list[int]:
    tail = out[-span:]
    period = next(p for p in range(1, span // 3 + 1) if tail[:-p] == tail[p:])
    end = len(out)
    while end - 2 * period >= 0 and out[end - period : end] == out[end - 2 * period : end - period]:
        end -= period
    return out[:end]


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(gzip.compress(raw)) if raw else 0.0
