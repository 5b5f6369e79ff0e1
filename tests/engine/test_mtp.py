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
from engine.mtp import MTPHeads, load_heads, previous_drafts, save_heads
from engine.quant import quantize_int8
from gateway.media import decode_file
from tests.conftest import load_clip


@pytest.fixture(scope="module", params=["float32", "int8"])
def mtp_runner(runners, tmp_path_factory, request):
    """base with heads: the shipped ones when present, else random heads (drafts mostly wrong: the hardest case
    for losslessness, since almost every step rolls the cache back). int8 is exact too: the decoder's attention
    runs in float64, so verifying several positions at once rounds like one-token steps (engine/model.py)."""
    runner = runners("base", request.param)
    if runner.decoder.mtp is None:
        torch.manual_seed(0)
        heads = MTPHeads(runner.model.dims.n_text_state, 4, torch.arange(2000))
        for p in heads.parameters():
            torch.nn.init.normal_(p, std=0.02)
        path = tmp_path_factory.mktemp("heads") / "mtp.safetensors"
        save_heads(path, heads, runner.sha256 or "", {"note": "random, for tests"})
        loaded, _ = load_heads(path, runner.sha256)
        ids = lambda mask: tuple(mask.nonzero().flatten().tolist())  # noqa: E731
        d = runner.decoder
        runner = copy.copy(runner)  # the session's shared runner keeps its own decoder
        if request.param == "int8":
            loaded = quantize_int8(loaded)  # as the runner loads them for int8
        runner.decoder = GreedyDecoder(runner.model, runner.tokenizer, ids(d.suppress), ids(d.suppress_begin), loaded)
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
        assert sum(r.forwards for r in batched) < sum(g.forwards for g in greedy), drafts


def test_previous_hypothesis_drafts_on_growing_partials(mtp_runner, speech):
    """Partials of one utterance every 0.5 s: the previous partial's tokens make the next decode cheap."""
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


def test_previous_drafts_realign():
    assert previous_drafts([1, 2], (1, 2, 3, 4, 5), 2) == [3, 4]
    assert previous_drafts([9, 2, 3], (1, 2, 3, 4, 5), 3) == [4, 5]  # diverged, the tail 2 3 is found again
    assert previous_drafts([7, 8], (1, 2, 3), 3) == []
    assert previous_drafts([], (), 3) == []


def test_heads_refuse_another_model(tmp_path):
    heads = MTPHeads(64, 2)
    save_heads(tmp_path / "h.safetensors", heads, "a" * 64, {})
    with pytest.raises(ValueError, match="another model"):
        load_heads(tmp_path / "h.safetensors", "b" * 64)
    loaded, meta = load_heads(tmp_path / "h.safetensors", "a" * 64)
    assert loaded.n_heads == 2 and meta == {}
