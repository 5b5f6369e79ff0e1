"""Token-for-token parity with CTranslate2 on the same weights (the peer), and WER no worse than it."""
from __future__ import annotations

import numpy as np
import pytest

from support.speech import error_rate
from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
from engine.messages import DecodeOptions
from engine.models import resolve
from tests.conftest import load_clip

ctranslate2 = pytest.importorskip("ctranslate2")


def ct2_tokens(model: str, compute_type: str, mels: list, prompts: list[list[int]]) -> list[list[int]]:
    peer = ctranslate2.models.Whisper(str(resolve(model)), device="cpu", compute_type=compute_type)
    out = []
    for mel, prompt in zip(mels, prompts):  # one at a time: CTranslate2 batches pad differently per batch
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy()))
        out.append(peer.generate(feats, [prompt], beam_size=1, suppress_blank=True, max_length=448)[0].sequences_ids[0])
    return out


def wer_by_language(speech, texts) -> float:
    """Mean of the per-language error rates (WER for English, CER for Chinese)."""
    langs = sorted({c.language for c in speech})
    return float(np.mean([error_rate([(c.reference, t) for c, t in zip(speech, texts) if c.language == lang], lang) for lang in langs]))


@pytest.mark.parametrize("model", ["base", "tiny.en"])
def test_float32_tokens_match_ctranslate2(model, speech, runners):
    runner = runners(model, "float32")
    clips = [c for c in speech if model == "base" or c.language == "en"]
    audios = [load_clip(c)[:N_SAMPLES] for c in clips]
    mels = [log_mel_spectrogram(a, runner.model.dims.n_mels, N_SAMPLES)[:, :N_FRAMES] for a in audios]
    tok = runner.tokenizer
    prompts = [[tok.sot, *tok.sot_sequence(c.language)] for c in clips]
    theirs = ct2_tokens(model, "float32", mels, prompts)
    ours = [runner.transcribe([a], DecodeOptions(language=c.language), encoder="full")[0] for a, c in zip(audios, clips)]
    same = sum(list(o.result.tokens) == t for o, t in zip(ours, theirs))
    assert same >= 0.95 * len(clips), [(o.result.text, tok.decode(t)) for o, t in zip(ours, theirs) if list(o.result.tokens) != t]
    peer = [runner.postprocess(tok.decode(t), c.language) for t, c in zip(theirs, clips)]
    assert wer_by_language(clips, [o.text for o in ours]) <= wer_by_language(clips, peer) + 0.5


def test_int8_wer_matches_ctranslate2_int8(speech, runners):
    runner = runners("base", "int8")
    audios = [load_clip(c)[:N_SAMPLES] for c in speech]
    mels = [log_mel_spectrogram(a, 80, N_SAMPLES)[:, :N_FRAMES] for a in audios]
    tok = runner.tokenizer
    theirs = ct2_tokens("base", "int8", mels, [[tok.sot, *tok.sot_sequence(c.language)] for c in speech])
    ours = [runner.transcribe([a], DecodeOptions(language=c.language), encoder="full")[0].text for a, c in zip(audios, speech)]
    # the peer's text in the same script as ours (simplified Chinese), so only recognition differences count
    peer = [runner.postprocess(tok.decode(t), c.language) for t, c in zip(theirs, speech)]
    assert wer_by_language(speech, ours) <= wer_by_language(speech, peer) + 0.5
