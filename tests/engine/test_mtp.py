"""MTP decoding is lossless: every draft source, batched or not, yields exactly the tokens of plain greedy decoding
(CPU, float32 and int8), on real speech and on synthesised speech; counters report what each decode cost."""
from __future__ import annotations

import copy
import subprocess

import numpy as np
import pytest
import torch

from engine.decoding import GreedyDecoder
from engine.messages import DecodeOptions
from engine.mtp import CTCHead, MTPHeads, ctc_collapse, hypothesis_drafts, load_heads, save_heads
from engine.quant import quantize_int8
from gateway.media import decode_file
from tests.conftest import load_clip


@pytest.fixture(scope="module", params=[("float32", "audio"), ("float32", "decoder"), ("int8", "decoder")],
                ids=lambda p: "-".join(p))
def mtp_runner(runners, request):
    """base with random heads of each kind (no heads ship: README). Their drafts are mostly wrong: the hardest
    case for losslessness, since almost every step rolls the cache back. int8 is exact too: the decoder's attention
    runs in float64, so verifying several positions at once rounds like one-token steps (engine/model.py)."""
    compute_type, kind = request.param
    base = runners("base", compute_type)
    torch.manual_seed(0)
    d_model = base.model.dims.n_text_state
    heads = CTCHead(d_model, torch.arange(2000)) if kind == "audio" else MTPHeads(d_model, 4, torch.arange(2000))
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.02)
    if compute_type == "int8":
        heads = quantize_int8(heads)  # as the runner loads them for int8
    ids = lambda mask: tuple(mask.nonzero().flatten().tolist())  # noqa: E731
    runner = copy.copy(base)  # the session's shared runner keeps its own decoder and audio head
    runner.audio_head = heads if kind == "audio" else None
    runner.decoder = GreedyDecoder(runner.model, runner.tokenizer, ids(base.decoder.suppress), ids(base.decoder.suppress_begin),
                                   heads if kind == "decoder" else None)
    return runner


def synthesised() -> list[np.ndarray]:
    out = []
    for text in ("The quick brown fox jumps over the lazy dog near the river bank.",
                 "Please transcribe this sentence with numbers like 42 and 1999 in it."):
        wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text], capture_output=True, check=True).stdout
        out.append(decode_file(wav))
    return out


def test_every_draft_source_gives_greedy_tokens(mtp_runner, speech):
    audios = [load_clip(c)[: 16000 * 30] for c in speech] + synthesised()
    langs = [c.language for c in speech] + ["en", "en"]
    greedy = [t.result for t in mtp_runner.transcribe(audios, [DecodeOptions(language=l, drafts=None) for l in langs])]
    for drafts in ("mtp", "previous", "both"):
        opts = [DecodeOptions(language=l, drafts=drafts, previous=g.tokens[: len(g.tokens) // 2] + (11, 22, 33))
                for l, g in zip(langs, greedy)]
        batched = [t.result for t in mtp_runner.transcribe(audios, opts)]
        alone = [mtp_runner.transcribe([a], o)[0].result for a, o in zip(audios, opts)]
        for g, b, a in zip(greedy, batched, alone):
            assert b.tokens == g.tokens == a.tokens, drafts
            assert b.emitted == g.emitted and b.forwards <= g.forwards
        if drafts != "mtp" or mtp_runner.audio_head is None:  # a random audio head's guesses never match
            assert sum(r.forwards for r in batched) < sum(g.forwards for g in greedy), drafts


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_guesses_with_errors_give_greedy_tokens(runners, speech, compute_type):
    """An audio head's guess goes wrong as a recogniser does: words swapped, dropped, inserted. Verification keeps
    greedy's tokens, realigns after each error (n-gram, or greedy's own lookahead after a substitution), and still
    saves most forwards."""
    runner = runners("base", compute_type)
    audios = [load_clip(c)[: 16000 * 30] for c in speech]
    opts = [DecodeOptions(language=c.language) for c in speech]
    greedy = [t.result for t in runner.transcribe(audios, [DecodeOptions(language=c.language, drafts=None) for c in speech])]
    rng = np.random.default_rng(0)
    guesses = []
    for g in greedy:
        guess = []
        for t in g.tokens:
            r = rng.random()
            guess += [] if r < 0.05 else [t + 1] if r < 0.10 else [t, 220] if r < 0.15 else [t]  # drop, swap, insert
        guesses.append(tuple(guess))
    cross, _ = runner.cross(audios, runner.config.encoder, opts)
    drafted = runner.decoder.decode(cross, opts, guesses)
    assert [d.tokens for d in drafted] == [g.tokens for g in greedy]
    tokens, forwards = sum(d.emitted for d in drafted), sum(d.forwards for d in drafted)
    assert tokens / forwards > 2.0, (tokens, forwards)  # 2.4 measured in float32


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_previous_hypothesis_drafts_on_growing_partials(runners, speech, compute_type):
    """Partials of one utterance every 0.5 s: the previous partial's tokens make the next decode cheap."""
    mtp_runner = runners("base", compute_type)
    audio = load_clip(speech[0])
    previous: tuple[int, ...] = ()
    fwd = tok = 0
    for end in np.arange(1.0, len(audio) / 16000, 0.5):
        piece = audio[: int(end * 16000)]
        plain = mtp_runner.transcribe([piece], DecodeOptions(language="en", drafts=None))[0].result
        drafted = mtp_runner.transcribe([piece], DecodeOptions(language="en", drafts="previous", previous=previous))[0].result
        assert drafted.tokens == plain.tokens
        previous = drafted.tokens
        fwd, tok = fwd + drafted.forwards, tok + drafted.emitted
    assert tok / fwd > 2.0


def test_a_newer_hypothesis_given_mid_decode_keeps_the_greedy_tokens(runners, speech):
    """A row handed a newer hypothesis while it decodes (Batch.redraft: its stream's latest partial, which came
    back meanwhile) verifies it from then on: the same tokens as greedy, in fewer forwards."""
    runner = runners("base", "int8")
    audio = load_clip(speech[0])[: 8 * 16000]
    plain = runner.transcribe([audio], DecodeOptions(language="en", drafts=None))[0].result
    batch = runner.start([audio], [DecodeOptions(language="en", drafts="previous")], ["row"])
    finished = [r for _ in range(3) for r in runner.step(batch)]
    batch.redraft({"other"}, plain.tokens)  # another row's: not this one's
    assert batch.rows[0].opts.previous == ()
    batch.redraft({"row"}, plain.tokens)
    while batch.rows:
        finished += runner.step(batch)
    (key, result), = finished
    assert key == "row" and result.tokens == plain.tokens and result.forwards < plain.forwards - 5


def test_hypothesis_drafts_realign():
    assert hypothesis_drafts([1, 2], (1, 2, 3, 4, 5), 2) == [3, 4]
    assert hypothesis_drafts([9, 2, 3], (1, 2, 3, 4, 5), 3) == [4, 5]  # diverged, the tail 2 3 is found again
    assert hypothesis_drafts([7, 8], (1, 2, 3), 3) == []
    assert hypothesis_drafts([], (), 3) == []


def test_ctc_collapse_merges_repeats_and_drops_blanks():
    assert ctc_collapse(torch.tensor([0, 1, 1, 0, 1, 3, 3, 2, 0, 0])).tolist() == [1, 1, 3, 2]
    assert ctc_collapse(torch.tensor([0, 0])).tolist() == [] and ctc_collapse(torch.tensor([4])).tolist() == [4]


def test_heads_refuse_another_model(tmp_path):
    heads = MTPHeads(64, 2)
    save_heads(tmp_path / "h.safetensors", heads, "a" * 64, {})
    with pytest.raises(ValueError, match="another model"):
        load_heads(tmp_path / "h.safetensors", "b" * 64)
    loaded, meta = load_heads(tmp_path / "h.safetensors", "a" * 64)
    assert loaded.n_heads == 2 and meta == {}
    audio = CTCHead(64, torch.arange(5))
    save_heads(tmp_path / "a.safetensors", audio, "a" * 64, {"x": 1})
    loaded, meta = load_heads(tmp_path / "a.safetensors", "a" * 64)
    assert isinstance(loaded, CTCHead) and loaded.vocab.tolist() == [0, 1, 2, 3, 4] and meta == {"x": 1}
