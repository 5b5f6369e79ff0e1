"""engine/alignment.py: the DTW against whisper's own loop, the median filter, word splitting and the punctuation
and long-word fix-ups; then word timings of real speech, batched and led decodes included."""
from __future__ import annotations

import numpy as np
import torch

from engine.alignment import align, dtw, median_filter, split_words, tidy
from engine.messages import DecodeOptions, WordTiming
from tests.conftest import load_clip


def loop_dtw(x: np.ndarray) -> tuple[list[int], list[int]]:
    """whisper's cell-by-cell DTW, the reference for the vectorised one."""
    N, M = x.shape
    cost, trace = np.full((N + 1, M + 1), np.inf), -np.ones((N + 1, M + 1), dtype=int)
    cost[0, 0] = 0
    for j in range(1, M + 1):
        for i in range(1, N + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            c, t = (c0, 0) if c0 < c1 and c0 < c2 else (c1, 1) if c1 < c0 and c1 < c2 else (c2, 2)
            cost[i, j], trace[i, j] = x[i - 1, j - 1] + c, t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, rows, cols = N, M, [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    return rows[::-1], cols[::-1]


def test_dtw_takes_whispers_path():
    rng = np.random.default_rng(0)
    for n, m in ((1, 1), (1, 7), (5, 1), (6, 40), (30, 200)):
        x = rng.normal(size=(n, m))
        rows, cols = dtw(x)
        assert (list(rows), list(cols)) == loop_dtw(x)


def test_median_filter_reflects_at_the_edges():
    x = torch.tensor([[[5.0, 1.0, 9.0, 2.0, 7.0, 3.0]]])
    assert median_filter(x, 3).tolist() == [[[1.0, 5.0, 2.0, 7.0, 3.0, 7.0]]]
    assert torch.equal(median_filter(x[..., :1], 7), x[..., :1])  # too short to filter


def test_words_split_at_spaces_and_per_character_without_them(runners):
    tok = runners().tokenizer
    words = split_words(tok, tok.encode(" Hello, world! It's fine."), "en")
    assert [w for w, _ in words] == [" Hello", ",", " world", "!", " It's", " fine", "."]
    chars = split_words(tok, tok.encode("今天天气很好"), "zh")
    assert "".join(w for w, _ in chars) == "今天天气很好" and all("\ufffd" not in w for w, _ in chars)


def test_punctuation_joins_its_word_and_long_words_are_capped():
    w = lambda word, s, e: WordTiming(word, s, e, 1.0)  # noqa: E731
    words = tidy([w(" Hello", 0.0, 0.3), w(",", 0.3, 0.3), w(" (", 0.4, 0.4), w("world", 0.4, 0.7),
                  w(".", 0.7, 0.7), w(" Then", 0.7, 3.0)])
    assert [x.word for x in words] == [" Hello,", " (world.", " Then"]
    # after a sentence mark, a word over twice the median word (0.3 s) is cut to that, from its end
    assert (words[-1].start, words[-1].end) == (2.4, 3.0)
    kept = tidy([w(" One", 0.0, 0.3), w(" two", 0.3, 0.6), w(" three", 0.6, 3.0)])
    assert (kept[-1].start, kept[-1].end) == (0.6, 3.0)  # no sentence mark beside it: left as it is


def test_real_speech_is_timed_alike_alone_in_a_batch_and_led(runners, speech):
    """JFK's words: inside the audio, in order; the same times whatever the batch; and a decode led by the
    audio before it (a live stream's previous piece) times its own words as the unled decode of that audio."""
    runner = runners()
    jfk = load_clip(next(c for c in speech if c.path.name == "jfk.wav"))
    timed = DecodeOptions(language="en", word_timestamps=True)
    alone = runner.transcribe([jfk], timed)[0].result.words
    assert " ".join(w.word.strip() for w in alone) == runner.transcribe([jfk], timed)[0].text
    assert all(0 <= w.start <= w.end <= 11.0 for w in alone) and all(a.end <= b.start for a, b in zip(alone, alone[1:]))
    batched = runner.transcribe([jfk, jfk[: 16000 * 5]], timed)[0].result.words
    assert [(w.word, w.start, w.end) for w in batched] == [(w.word, w.start, w.end) for w in alone]
    lead = runner.transcribe([jfk[: int(16000 * 3.6)]], DecodeOptions(language="en"))[0].result.tokens
    led = runner.transcribe([jfk], DecodeOptions(language="en", word_timestamps=True, prefix=lead))[0].result.words
    assert led and led[0].start >= 3.0  # the lead's words are aligned, not returned: the first is after it
    same = alone[-len(led):]  # the transcript's last words, said in the audio after the lead
    assert [w.word.strip().lower() for w in led] == [w.word.strip().lower() for w in same]
    gaps = [abs(x - y) for a, b in zip(led, same) for x, y in ((a.start, b.start), (a.end, b.end))]
    assert np.median(gaps) <= 0.05, (led, same)
    assert align(torch.zeros(1, 1, 5), torch.zeros(0), runner.tokenizer, [], 0, (0, 5), "en") == []
