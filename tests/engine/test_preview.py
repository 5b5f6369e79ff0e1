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


def test_a_busy_engine_extends_kept_encodings_an_idle_one_encodes_finals_in_full(runners, speech, monkeypatch):
    """Idle, a stream's final is encoded in full (the same tokens as offline) and what its partials kept goes. While
    other streams decode, pauses start or extend a stream's kept encoding, its final extends it and keeps it (the
    next segment, led by this one's audio, extends it again), and the least recently used goes beyond MAX_KEPT_S."""
    runner = runners("base", "int8")
    audio = load_clip(next(c for c in speech if c.path.name == "jfk.wav"))
    load = load_clip(next(c for c in speech if c.duration_s > 25))[: 30 * SAMPLE_RATE]
    engine = Engine(runner)
    opts = DecodeOptions(language="en")
    monkeypatch.setattr("engine.service.MAX_KEPT_S", 6.0)
    per_s = SAMPLE_RATE // HOP_LENGTH // 2  # encoder positions per second
    kept = lambda: {k: v.encoder.length for k, v in engine._previews.items()}  # noqa: E731

    async def main():
        for end in (3, 4):
            await engine.transcribe(audio[: end * SAMPLE_RATE], opts, stream="a", final=False)
        started = kept()
        idle = await engine.transcribe(audio[: 6 * SAMPLE_RATE], opts, stream="a", final=True)
        after_idle = kept()
        busy = [asyncio.ensure_future(engine.transcribe(load, opts, stream=f"load{i}")) for i in range(4)]
        while engine.stats.steps < 2:  # the other streams decode
            await asyncio.sleep(0.005)
        await engine.transcribe(audio[: 3 * SAMPLE_RATE], opts, stream="a", final=False, pause=True)
        await engine.transcribe(audio[: 5 * SAMPLE_RATE], opts, stream="a", final=False, pause=True)
        paused = kept()
        await engine.transcribe(audio[: 6 * SAMPLE_RATE], opts, stream="a", final=True)
        after_busy = kept()
        for end in (4, 5):  # a's 5 s and b's 3 s kept: over 6 s, so a's goes
            await engine.transcribe(audio[: end * SAMPLE_RATE], opts, stream="b", final=False, pause=True)
        evicted = kept()
        assert engine.stats.steps > 0 and not all(f.done() for f in busy)  # it was busy throughout
        await asyncio.gather(*busy)
        engine.cancel_stream("b")
        return started, idle, after_idle, paused, after_busy, evicted

    try:
        started, idle, after_idle, paused, after_busy, evicted = asyncio.run(main())
    finally:
        engine.close()
    assert started == {"a": int((4 - MARGIN_S) * per_s)} and after_idle == {}
    assert idle.result.tokens == runner.transcribe([audio[: 6 * SAMPLE_RATE]], opts)[0].result.tokens
    assert paused == {"a": int((5 - MARGIN_S) * per_s)} and after_busy == {"a": int((6 - MARGIN_S) * per_s)}
    assert evicted == {"b": int((5 - MARGIN_S) * per_s)} and engine._previews == {}
