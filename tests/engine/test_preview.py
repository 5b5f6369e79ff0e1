"""Decodes of a growing segment encode only the audio that is new since the stream's last decode, read nearly what
the full encode reads, start afresh on other audio, and are kept across a final for the segment it leads."""
from __future__ import annotations

import asyncio

import numpy as np

from support.speech import error_rate
from engine.audio import HOP_LENGTH, SAMPLE_RATE
from engine.messages import DecodeOptions
from engine.preview import MARGIN_S, Preview
from engine.service import Engine
from tests.conftest import load_clip


def _decode(runner, audio: np.ndarray, opts: DecodeOptions, preview: Preview | None = None) -> str:
    batch = runner.start([audio], [opts], [0], previews=[preview])
    done = []
    while batch.rows:
        done += runner.step(batch)
    return done[0][1].text


def test_previews_of_a_growing_segment_read_what_the_full_encode_reads(runners, speech):
    """Text read from prefixes cut every 0.5 s is chaotic: a rounding difference flips a word now and then, and
    which words flip depends on the CPU's kernels. So the bound is measured in the same run on the same CPU: the
    full encode with attention over the audio in bfloat16 vs float32 (both are used, by CPU) reads the prefixes
    this differently; a preview, in either dtype, may differ from the full encode by that much plus one point
    (about four of the ~400 words). Previews padded 0.5 s less than the full encode failed it here (AMD EPYC)."""
    opts = DecodeOptions(language="en", drafts=None)
    clips = [load_clip(c)[: 12 * SAMPLE_RATE] for c in speech if c.language == "en" and c.duration_s > 8][:2]
    full, previews = {}, {}
    for dtype in ("float32", "bfloat16"):
        runner = runners("base", "int8", dtype)
        full[dtype], previews[dtype] = [], []
        for audio in clips:
            state = Preview()
            for end in np.arange(1.0, len(audio) / SAMPLE_RATE, 0.5):
                seg = audio[: int(end * SAMPLE_RATE)]
                full[dtype].append(_decode(runner, seg, opts))
                previews[dtype].append(_decode(runner, seg, opts, state))
                # positions kept: all but the last MARGIN_S, whose samples the state holds to check the next call
                kept = max(0, len(seg) // HOP_LENGTH - int(MARGIN_S * SAMPLE_RATE) // HOP_LENGTH) // 2
                assert state.encoder.length == kept and len(state.audio) == kept * 2 * HOP_LENGTH
                assert all(k.shape[1] == kept for k, _ in state.cross)  # (H, T, D/H)
    rounding = error_rate(list(zip(full["float32"], full["bfloat16"])), "en")
    drift = {dtype: error_rate(list(zip(full[dtype], previews[dtype])), "en") for dtype in full}
    assert len(full["float32"]) > 20 and max(drift.values()) <= rounding + 1.0, (drift, rounding)


def test_a_preview_of_other_audio_starts_afresh(runners, speech):
    runner = runners("base", "int8")
    opts = DecodeOptions(language="en", drafts=None)
    clips = [load_clip(c) for c in speech if c.language == "en" and c.duration_s > 8][:2]
    a, b = clips[0][: 6 * SAMPLE_RATE], clips[1][: 5 * SAMPLE_RATE]
    state = Preview()
    _decode(runner, a[: 4 * SAMPLE_RATE], opts, state)
    assert state.extends(a) and not state.extends(b)
    assert _decode(runner, b, opts, state) == _decode(runner, b, opts, Preview())  # nothing of `a` is used


def test_engine_keeps_a_stream_s_encoding_across_its_final(runners, speech, monkeypatch):
    """Partials and pauses start a stream's kept encoding, its final extends it and keeps it (the next segment, led by this
    one's audio, extends it again); a final with nothing kept is encoded in full and keeps nothing; the least
    recently used goes beyond MAX_KEPT_S of audio; cancelling a stream drops its own."""
    runner = runners("base", "int8")
    audio = load_clip(next(c for c in speech if c.path.name == "jfk.wav"))
    engine = Engine(runner)
    opts = DecodeOptions(language="en")
    monkeypatch.setattr("engine.service.MAX_KEPT_S", 10.0)

    async def main():
        for end in (3, 4, 5):
            await engine.transcribe(audio[: end * SAMPLE_RATE], opts, stream="a", final=False)
        await engine.transcribe(audio[: 3 * SAMPLE_RATE], opts, stream="b", final=False, pause=True)  # starts one too
        kept = {k: v.encoder.length for k, v in engine._previews.items()}
        await engine.transcribe(audio[: 6 * SAMPLE_RATE], opts, stream="a", final=True)  # extends a's
        await engine.transcribe(audio[: 4 * SAMPLE_RATE], opts, stream="c", final=True)  # nothing kept: in full
        after_final = {k: v.encoder.length for k, v in engine._previews.items()}
        await engine.transcribe(audio[: 9 * SAMPLE_RATE], opts, stream="a", final=False)  # 8.5 + 2.5 s kept
        await engine.transcribe(audio[: 4 * SAMPLE_RATE], opts, stream="b", final=False)  # > 10 s: a's goes
        evicted = set(engine._previews)
        engine.cancel_stream("b")
        return kept, after_final, evicted

    try:
        kept, after_final, evicted = asyncio.run(main())
    finally:
        engine.close()
    per_s = SAMPLE_RATE // HOP_LENGTH // 2  # encoder positions per second
    assert kept == {"a": int((5 - MARGIN_S) * per_s), "b": int((3 - MARGIN_S) * per_s)}
    assert after_final == {"b": kept["b"], "a": int((6 - MARGIN_S) * per_s)}
    assert evicted == {"b"} and engine._previews == {}
