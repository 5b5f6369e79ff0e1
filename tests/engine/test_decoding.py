"""Batched greedy decoding: batching never changes tokens; language detection; prompts; silence; loop guard."""
from __future__ import annotations

import numpy as np
import pytest

from support.speech import error_rate
from engine.decoding import REREAD_MIN, GreedyDecoder, _cut_loop, _reread, _rereads, _words
from engine.messages import DecodeOptions
from tests.conftest import load_clip


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_batch_of_different_lengths_decodes_like_each_alone(runners, speech, compute_type):
    """Exactly the same tokens, int8 included: the encoder never pads a row to a neighbour's length and the
    decoder's attention runs in float64 (engine/model.py), so a segment's result does not depend on its batch."""
    runner = runners("base", compute_type)
    audios = [load_clip(c)[: 16000 * 30] for c in speech]
    opts = [DecodeOptions(language=c.language) for c in speech]
    alone = [runner.transcribe([a], o)[0].result.tokens for a, o in zip(audios, opts)]
    together = [t.result.tokens for t in runner.transcribe(audios, opts)]
    assert together == alone



@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_cross_attention_keys_of_a_batch_are_each_rows_own(runners, speech, compute_type):
    """Packed projection of the real frames (TextDecoder.cross_kv): a row's keys/values in a batch are bit for bit
    the ones it gets alone, heads first, in the dtype attention over the audio runs in (bfloat16 for int8 on a CPU
    that has it, engine/runner.py: audio_attention)."""
    import torch

    runner = runners("base", compute_type)
    audios = [load_clip(c)[: 16000 * 30] for c in speech]
    opts = [DecodeOptions(language=c.language) for c in speech]
    together, _ = runner.cross(audios, "trim", opts)
    dtype = runner.model.decoder.audio_dtype or torch.float32
    for r, (a, o) in enumerate(zip(audios, opts)):
        alone, _ = runner.cross([a], "trim", [o])
        for layer in range(len(alone.keys)):
            k, v = together.keys[layer][r], together.values[layer][r]
            assert k.dtype == dtype and k.shape[0] == runner.model.dims.n_text_head
            assert torch.equal(k, alone.keys[layer][0]) and torch.equal(v, alone.values[layer][0])

def test_language_is_detected(runners, speech):
    runner = runners("base", "int8")
    for clip in speech:
        t = runner.transcribe([load_clip(clip)[: 16000 * 30]], DecodeOptions(language=None))[0]
        assert t.result.language == clip.language, clip.path.name
        assert 0.5 < t.result.language_prob <= 1.0


def test_a_guessed_language_is_checked_by_detection_and_saves_a_forward(runners, speech):
    """DecodeOptions.previous_language: the prompt is fed in the guessed language and detection checks it. Right,
    wrong or absent, the tokens and language are detection's own; a right guess takes one forward fewer. Rows with
    and without a guess, right and wrong, in one batch decode as each alone."""
    runner = runners("base", "int8")
    clips = [c for c in speech if c.language in ("en", "zh")][:4]
    audios = [load_clip(c)[: 16000 * 30] for c in clips]
    other = {"en": "zh", "zh": "en"}
    for guess in (None, "right", "wrong"):
        opts = [DecodeOptions(language=None, previous_language={None: None, "right": c.language,
                                                                 "wrong": other[c.language]}[guess]) for c in clips]
        alone = [runner.transcribe([a], o)[0].result for a, o in zip(audios, opts)]
        if guess is None:
            detected = alone
        assert [(r.tokens, r.language) for r in alone] == [(r.tokens, r.language) for r in detected]
        assert [r.forwards for r in alone] == [r.forwards - (guess == "right") for r in detected]
    mixed = [DecodeOptions(language=None, previous_language=g) for g in (None, clips[1].language,
                                                                          other[clips[2].language], None)][:len(clips)]
    together = [t.result for t in runner.transcribe(audios, mixed)]
    assert [(r.tokens, r.language) for r in together] == [(r.tokens, r.language) for r in detected]


def test_chinese_comes_out_simplified(runners, speech):
    runner = runners("base", "int8")
    zh = [c for c in speech if c.language == "zh"]
    texts = [t.text for t in runner.transcribe([load_clip(c) for c in zh], DecodeOptions(language="zh"))]
    converted = [runner.postprocess(t, "zh") for t in texts]
    assert texts == converted and all(texts)
    assert "广州" in texts[0]  # 廣州 in traditional script


def test_prompt_biases_spelling(runners):
    """An initial prompt with a rare spelling makes the model use it."""
    runner = runners("base", "int8")
    import subprocess
    import tempfile

    from gateway.media import decode_file

    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", f"{d}/a.wav", "Please send the report to Kowalczyk today."], check=True)
        audio = decode_file(f"{d}/a.wav")
    plain = runner.transcribe([audio], DecodeOptions(language="en"))[0].text
    prompted = runner.transcribe([audio], DecodeOptions(language="en", prompt="Kowalczyk"))[0].text
    assert "Kowalczyk" in prompted, (plain, prompted)


def test_silence_and_noise_yield_no_text(runners):
    runner = runners("base", "int8")
    rng = np.random.default_rng(0)
    quiet = [np.zeros(16000 * 3, np.float32) + 1e-5 * rng.standard_normal(16000 * 3).astype(np.float32),
             (0.003 * rng.standard_normal(16000 * 5)).astype(np.float32)]
    for t in runner.transcribe(quiet, DecodeOptions(language="en")):
        assert t.text == "", t
        assert t.result.no_speech_prob > 0.5


def test_token_cap_and_counters(runners, speech):
    runner = runners("base", "int8")
    t = runner.transcribe([load_clip(speech[0])], DecodeOptions(language="en", max_new_tokens=5))[0]
    assert len(t.result.tokens) == 5
    assert t.result.emitted == 5 and t.result.forwards == 5  # one prefill forward, then one per token


def test_loop_guard_cuts_a_repeated_phrase():
    loop = [1, 2] + [7, 8, 9] * 10
    assert GreedyDecoder._loops(loop, 24)
    assert _cut_loop(loop, 24) == [1, 2, 7, 8, 9]
    assert not GreedyDecoder._loops(list(range(40)), 24)


def test_a_short_segment_read_twice_over_is_one_clean_read(runners, speech):
    """Trimmed to 2.5 s, "And so my fellow Americans." comes out, then again from its start: that is the transcript,
    kept once and not a loop (a loop is decoded again over the 30 s window, at an encode of 30 s of audio). The
    decode stops once a third reading begins, not after repeat_tokens or more."""
    t = runners("base", "int8").transcribe([load_clip(speech[0])[: 40000]], DecodeOptions(language="en"))[0]
    assert t.text == "And so my fellow Americans." and not t.result.looped
    assert t.result.forwards <= 2 * len(t.result.tokens) + REREAD_MIN + 2  # two readings, a third begun, the prompt
    assert _reread([5, 6, 7, 5, 6, 7, 5, 6]) == 3 and _reread([5, 5, 5, 5]) is None and _reread([1, 2, 3, 4]) is None
    assert _rereads([5, 6, 7, 5, 6, 7, 5, 6, 7]) and not _rereads([5, 6, 7, 5, 6, 7, 5, 6])
    assert not _rereads([5, 5, 5, 5, 5, 5, 5]) and not _rereads([1, 2, 3, 4, 1, 2, 3, 4])  # "no, no, no"; said twice


def test_a_reading_said_twice_and_ended_is_kept_once(runners):
    """The same hallucination, ended by the model after the second reading: it keeps one reading of 3+ words
    (seen in the browser check, 2.2 s of JFK); a shorter phrase said twice stays."""
    decoder, tok = runners("base", "int8").decoder, runners("base", "int8").tokenizer
    cut = lambda text: tok.decode(tok.encode(text)[: decoder._said_twice(tok.encode(text)) or None])  # noqa: E731
    assert cut(" and so my fellow Americans. And so my fellow Americans.") == " and so my fellow Americans."
    assert cut(" Thank you. Thank you.") == " Thank you. Thank you."
    assert cut(" Ask not what your country can do for you.") == " Ask not what your country can do for you."


def test_a_lead_read_again_after_the_new_words_is_dropped(runners):
    """A piece led by the one before it (its audio first, its text as the forced prefix) read its own words, the
    lead's again, then its own again, and ended (a Deepgram live test under load): it keeps its own words. New
    words that merely end like the lead stay, and so does a lead of fewer than 3 words said again."""
    decoder, tok = runners("base", "int8").decoder, runners("base", "int8").tokenizer
    def cut(text: str, lead: str = " And so my fellow Americans.") -> str:
        out = tok.encode(text)
        return tok.decode(out[: decoder._reread_after(_words(lead), out) or None])

    assert cut(" Ask not. And so my fellow Americans. Ask not.") == " Ask not."
    assert cut(" Ask not. And so my fellow Americans. Ask") == " Ask not."
    assert cut(" We hear you, and so my fellow Americans.") == " We hear you, and so my fellow Americans."
    assert cut(" Thank you. Thank you.", " Thank you.") == " Thank you. Thank you."


def test_bad_segments_are_rejected_clearly(runners):
    runner = runners("base", "int8")
    for bad, msg in [(np.zeros(10, np.float32), "at least"), (np.zeros(16000 * 31, np.float32), "at most 30 s"),
                     (np.zeros((2, 16000), np.float32), "1-D"), (np.full(16000, np.nan, np.float32), "NaN")]:
        with pytest.raises(ValueError, match=msg):
            runner.transcribe([bad])
    with pytest.raises(ValueError, match="unknown language"):
        runner.transcribe([np.zeros(16000, np.float32)], DecodeOptions(language="xx"))


def test_segments_join_and_leave_one_batch_many_times(runners, speech):
    """Continuous batching at the runner: segments leave a running batch and others join it (outside inference
    mode, as the engine's worker does) into the cache rows the leavers freed, and each still gets the tokens it
    gets alone."""
    runner = runners("base", "int8")
    lengths = [2, 8, 3, 8, 6]  # seconds: the short ones finish while the long ones decode
    audios = [load_clip(speech[0])[: 16000 * s] for s in lengths]
    opts = DecodeOptions(language=speech[0].language)
    alone = [runner.transcribe([a], opts)[0].result.tokens for a in audios]
    batch = runner.start(audios[:2], [opts] * 2, [0, 1])
    done: dict = {}
    for i in range(2, len(audios)):
        while len(done) < i - 1:  # until one more row has left
            done.update(runner.step(batch))
        batch.extend(runner.start(audios[i : i + 1], [opts], [i]))
    while batch.rows:
        done.update(runner.step(batch))
    assert [done[i].tokens for i in range(len(audios))] == alone


def test_a_forced_prefix_is_continued_not_returned(runners, speech):
    """DecodeOptions.prefix: the tokens of audio the segment starts with are forced after the task tokens and not
    returned, so the decode reads on from there (a live stream's previous piece, gateway/session.py)."""
    runner = runners("base", "int8")
    jfk = load_clip(next(c for c in speech if c.path.name == "jfk.wav"))
    head = runner.transcribe([jfk[: 3 * 16000]], DecodeOptions(language="en"))[0]  # "And so my fellow Americans," (a pause)
    whole = runner.transcribe([jfk], DecodeOptions(language="en"))[0]
    for language in ("en", None):  # given, or detected before the prefix is fed
        rest = runner.transcribe([jfk], DecodeOptions(language=language, prefix=head.result.tokens))[0]
        assert "fellow" in head.text.lower() and "fellow" not in rest.text.lower(), rest.text
        assert rest.result.language == "en" and "your country" in rest.text
        assert error_rate([(whole.text, f"{head.text} {rest.text}")], "en") < 10


def test_audio_read_again_after_its_forced_text_is_not_returned_twice(runners, speech):
    """A live piece is decoded led by the piece before it, whose tokens are forced: the model sometimes reads that
    audio again anyway ("And so my fellow Americans. And so my fellow Americans. Ask not..."). Audio that is the
    head twice over makes it do so every time: the second reading of the forced text is dropped."""
    runner = runners("base", "int8")
    jfk = load_clip(next(c for c in speech if c.path.name == "jfk.wav"))
    head = runner.transcribe([jfk[: 3 * 16000]], DecodeOptions(language="en"))[0]
    for prefix in (head.result.tokens, tuple(runner.tokenizer.encode(" and so, my fellow americans"))):
        twice = runner.transcribe([np.concatenate([jfk[: 3 * 16000]] * 2)], DecodeOptions(language="en", prefix=prefix))[0]
        assert "fellow" not in twice.text.lower(), (prefix, twice.text)  # also when case or punctuation differ
    rest = runner.transcribe([jfk], DecodeOptions(language="en", prefix=head.result.tokens))[0]
    assert rest.text.lower().startswith("ask not"), rest.text  # what follows the forced words stays
