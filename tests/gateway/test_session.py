"""CaptionSession on real speech and the real model: finals that cover each utterance (in pieces at its pauses) as
accurately as each utterance alone,
partials never after their final, finals in segment order, seq strictly increasing, close/flush/abort, errors."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from support.speech import error_rate
from engine.messages import DecodeOptions
from engine.service import Engine
from gateway import events as ev
from gateway.live import play
from gateway.session import CONTEXT_GAP_S, CaptionSession, SessionConfig, stable_prefix
from tests.conftest import load_clip

RATE = 16000
GAP_S = 2.0  # silence between utterances: past the session's endpoint and CONTEXT_GAP_S
EN = SessionConfig(language="en")


@dataclass
class Run:
    events: list = field(default_factory=list)
    lags: dict[int, float] = field(default_factory=dict)  # seq -> lag behind the audio clock when emitted
    wall_s: float = 0.0

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def session(engine: Engine, config: SessionConfig = EN, stream: str = "test") -> tuple[CaptionSession, Run]:
    run = Run()

    async def emit(event: ev.Event) -> None:
        run.events.append(event)
        run.lags[event.seq] = s.lag(event)

    s = CaptionSession(stream, engine, config, emit=emit)
    return s, run


def check_order(events: list) -> None:
    """The invariants every viewer relies on."""
    assert [e.seq for e in events] == list(range(len(events)))
    assert isinstance(events[0], ev.SessionStarted) and isinstance(events[-1], ev.SessionEnded)
    assert sum(isinstance(e, (ev.SessionStarted, ev.SessionEnded)) for e in events) == 2
    started, stopped, finished = set(), set(), set()
    for e in events:
        segment = getattr(e, "segment", None)
        if segment is None:
            continue
        if isinstance(e, ev.TurnEnded):  # after its finals: it refers to its last segment, which is done
            assert segment in stopped and all(f <= segment for f in finished)
            continue
        assert segment not in finished, f"{e} after the final of its segment"
        if isinstance(e, ev.SpeechStarted):
            assert segment == len(started) and not started - stopped  # ids in order, one open at a time
            started.add(segment)
        elif isinstance(e, ev.SpeechStopped):
            assert segment in started and segment not in stopped
            stopped.add(segment)
        elif isinstance(e, ev.CaptionPartial):
            assert segment in started and e.text.startswith(e.stable)
        elif isinstance(e, (ev.CaptionFinal, ev.Error)):
            assert segment in stopped and all(segment > f for f in finished)  # finals in segment order
            finished.add(segment)
    assert stopped == started
    turns = [e for e in events if isinstance(e, ev.TurnEnded)]
    assert [t.segment for t in turns] == sorted({t.segment for t in turns})


@pytest.fixture(scope="module")
def engine(runners):
    engine = Engine(runners("base", "int8"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def english(speech):
    clips = [c for c in speech if c.language == "en" and c.duration_s < 20][:3]
    assert len(clips) == 3
    return clips


@pytest.fixture(scope="module")
def stream(english) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips with GAP_S of silence before, between and after -> (audio, each clip's (start, end) in seconds)."""
    pieces, spans, t = [np.zeros(int(GAP_S * RATE), np.float32)], [], GAP_S
    for clip in english:
        audio = load_clip(clip)
        pieces += [audio, np.zeros(int(GAP_S * RATE), np.float32)]
        spans.append((t, t + len(audio) / RATE))
        t += (len(audio) / RATE) + GAP_S
    return np.concatenate(pieces), spans


@pytest.fixture(scope="module")
def live10x(engine, stream) -> tuple[CaptionSession, Run]:
    """The stream played live at 10x real time, once for the tests that read it."""
    s, run = session(engine)
    t0 = time.monotonic()
    asyncio.run(play(s, stream[0], speed=10))
    run.wall_s = time.monotonic() - t0
    return s, run


# -- pure -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("previous, current, language, stable", [
    ("", "and so", "en", ""),
    ("and so my", "and so my fellow", "en", "and so my"),
    ("ask not what your coun", "ask not what your country", "en", "ask not what your"),  # a word still growing
    ("And so,", "And so my", "en", "And"),  # punctuation makes a word differ
    ("and  so my", "and so my", "en", "and so my"),  # spacing is not a difference; the result is `current`'s text
    ("one two", "three", "en", ""),
    ("广州市房", "广州市房地产", "zh", "广州市房"),  # no spaces: characters
    ("广州市房地", "广州市方", "zh", "广州市"),
    ("ab", "ab cd", None, "ab"),
])
def test_stable_prefix(previous, current, language, stable):
    assert stable_prefix(previous, current, language) == stable
    assert current.startswith(stable_prefix(previous, current, language))


def test_config_is_validated():
    with pytest.raises(ValueError, match="language"):
        SessionConfig(language="auto")  # None means detect
    with pytest.raises(ValueError):
        SessionConfig(endpoint_ms=100)  # shorter than the segmenter's post-roll
    with pytest.raises(ValueError):
        SessionConfig(task="summarise")
    assert SessionConfig().segmenter().endpoint_ms == 500


# -- live, real model -------------------------------------------------------------------------------------------


def owners(finals: list, utterances: list[tuple[float, float]]) -> list[int]:
    """The utterance each final lies in (with the pre/post roll); a final spanning two, or none, fails."""
    out = []
    for f in finals:
        inside = [i for i, (start, end) in enumerate(utterances) if start - 0.5 < f.start and f.end < end + 0.5]
        assert len(inside) == 1, (f, utterances)
        out.append(inside[0])
    return out


def test_finals_cover_each_utterance_as_accurately_as_each_alone(live10x, stream, english, runners):
    """A final comes at each pause of the endpoint's length, so a long utterance is finalised in pieces (JFK pauses
    mid-sentence); each piece is decoded after the one before it, so the pieces read as the utterance does whole."""
    s, run = live10x
    finals = run.of(ev.CaptionFinal)
    assert sorted(set(owners(finals, stream[1]))) == list(range(len(english))) and len(finals) > len(english)
    assert all(f.language == "en" and f.decode["forwards"] > 0 for f in finals)
    alone = runners("base", "int8").transcribe([load_clip(c) for c in english], DecodeOptions(language="en"))
    wer_alone = error_rate([(c.reference, t.text) for c, t in zip(english, alone)], "en")
    wer_live = error_rate([(" ".join(c.reference for c in english), " ".join(f.text for f in finals))], "en")
    assert wer_live <= wer_alone + 1.0, (wer_live, wer_alone, [f.text for f in finals])


def test_live_events_keep_their_order_and_partials_only_grow_to_their_final(live10x, stream):
    s, run = live10x
    check_order(run.events)
    partials, finals = run.of(ev.CaptionPartial), {f.segment: f for f in run.of(ev.CaptionFinal)}
    assert partials, "no partial at 10x"
    for p in partials:
        # A partial hears up to the endpoint's silence after the words; the final stops at the post-roll.
        assert p.start == finals[p.segment].start and p.end <= finals[p.segment].end + EN.endpoint_ms / 1000
    for a, b in zip(partials, partials[1:]):
        if a.segment == b.segment:
            assert a.end < b.end and b.stable == stable_prefix(a.text, b.text, "en")
    assert run.wall_s >= len(stream[0]) / RATE / 10  # paced, not dumped
    # Latency behind the audio clock: measured for every caption, summarised per type.
    assert s.latency["caption.final"].count == len(finals) and s.latency["caption.partial"].count == len(partials)
    assert all(run.lags[e.seq] >= 0 for e in partials + list(finals.values()))
    assert s.clock == pytest.approx(len(stream[0]) / RATE)


def test_a_turn_ends_after_its_finals_with_their_text(live10x, stream):
    """turn.ended comes once EN.turn_ms of silence follows speech, after the turn's last final; its text is the
    turn's finals joined. Every utterance ends a turn (GAP_S of silence follows it); none spans two."""
    s, run = live10x
    turns = run.of(ev.TurnEnded)
    assert sorted(set(owners(turns, stream[1]))) == list(range(len(stream[1])))
    finals, last = run.of(ev.CaptionFinal), -1
    for turn in turns:
        said = [f for f in finals if last < f.segment <= turn.segment]
        assert turn.text == " ".join(f.text for f in said) and not turn.forced
        assert (turn.start, turn.end) == (said[0].start, said[-1].end)
        assert run.events.index(turn) > run.events.index(said[-1])
        last = turn.segment
    assert last == finals[-1].segment


def test_close_mid_speech_flushes_the_final(engine, speech):
    jfk = load_clip(speech[0])  # "And so my fellow Americans, ask not ..."
    s, run = session(engine)

    async def main():
        await s.feed(jfk[: 4 * RATE])  # cut off while he is speaking
        await s.close()
        await s.close()  # idempotent

    asyncio.run(main())
    check_order(run.events)
    finals = run.of(ev.CaptionFinal)
    assert finals and finals[-1].end <= 4.0  # "And so my fellow Americans" (a pause), then what was cut at 4 s
    assert "fellow americans" in finals[0].text.lower(), finals[0].text  # the words cut at 4 s vary; these do not
    assert s.ended and run.events[-1].end == 4.0


def test_flush_ends_the_utterance_now_and_the_stream_goes_on(engine, speech):
    jfk = load_clip(speech[0])
    s, run = session(engine, SessionConfig(language="en", partials=False))

    async def main():
        await s.feed(jfk[: int(2.2 * RATE)])  # "and so my fellow Americans"
        await s.flush(wait=True)
        first = run.of(ev.CaptionFinal)
        await s.feed(jfk[int(2.2 * RATE):])
        await s.close()
        return first

    first = asyncio.run(main())
    check_order(run.events)
    assert len(first) == 1 and "fellow" in first[0].text.lower() and first[0].end <= 2.2
    turn = run.events[run.events.index(first[0]) + 1]  # a flush ends the turn too, at once
    assert isinstance(turn, ev.TurnEnded) and turn.forced and turn.text == first[0].text
    rest = run.of(ev.CaptionFinal)[1:]
    assert rest and rest[0].segment == 1 and rest[0].start >= 2.2  # ids and times go on from the flush
    assert not run.of(ev.CaptionPartial)  # partials off
    assert "your country" in rest[-1].text


def test_silence_and_noise_give_no_captions(engine):
    rng = np.random.default_rng(0)
    s, run = session(engine)
    noise = (np.cumsum(rng.normal(0, 1, 6 * RATE)) * 1e-4).astype(np.float32)  # brown-ish, about -40 dBFS
    asyncio.run(play(s, np.concatenate([np.zeros(RATE, np.float32), noise]), speed=0))
    assert [e.type for e in run.events] == ["session.started", "session.ended"]


class FirstSegmentLast(Engine):
    """The real engine, but a decode of the first utterance (`first`, at the stream's start) returns only once a
    decode of the second has: the engine finishing segments out of order (finals, or the pause decodes that become
    them)."""

    def __init__(self, runner, first: np.ndarray):
        super().__init__(runner)
        self.first = first
        self.returned: list[tuple[bool, str]] = []  # (of the first utterance, text), in the order they returned
        self._later = asyncio.Event()

    async def transcribe(self, audio, options=DecodeOptions(), **kw):
        t = await super().transcribe(audio, options, **kw)
        first = len(audio) <= len(self.first) and np.array_equal(audio, self.first[:len(audio)])
        if first:
            await self._later.wait()
        else:
            self._later.set()
        self.returned.append((first, t.text))
        return t


def test_finals_go_out_in_segment_order_whatever_order_they_finish_in(runners, speech):
    en = [c for c in speech if c.language == "en"]
    gap = np.zeros(2 * RATE, np.float32)
    first = load_clip(en[2])  # "one two three", 2.7 s; then JFK, 11 s
    audio = np.concatenate([first, gap, load_clip(en[0]), gap])
    engine = FirstSegmentLast(runners("base", "int8"), np.concatenate([first, gap]))
    s, run = session(engine, SessionConfig(language="en", partials=False))
    try:
        asyncio.run(play(s, audio, speed=0))
    finally:
        engine.close()
    check_order(run.events)
    finals = run.of(ev.CaptionFinal)
    firsts = [i for i, (first, _) in enumerate(engine.returned) if first]
    assert firsts and firsts[0] > 0  # the engine: the second utterance's decode returned before any of the first's
    # the viewers: the first utterance, then the second's pieces, in segment order
    assert [f.segment for f in finals] == list(range(len(finals))) and len(finals) >= 2
    assert "country" in finals[-1].text


def test_engine_failure_is_an_error_event_and_the_session_goes_on(runners, speech):
    dead = Engine(runners("base", "int8"))
    dead.close()  # every request now fails: partials are only logged, finals become error events
    s, run = session(dead)
    en = [c for c in speech if c.language == "en"]
    gap = np.zeros(2 * RATE, np.float32)
    asyncio.run(play(s, np.concatenate([load_clip(en[0]), gap, load_clip(en[2]), gap]), speed=0))
    check_order(run.events)
    errors = run.of(ev.Error)
    assert [e.segment for e in errors] == list(range(len(errors))) and len(errors) >= 2  # JFK in pieces, then 1 2 3
    assert all(e.code == "final_failed" for e in errors)
    assert not run.of(ev.CaptionFinal) and not run.of(ev.CaptionPartial)


def test_bad_input_and_misuse_are_clear_errors(engine):
    with pytest.raises(ValueError, match="unknown language"):
        session(engine, SessionConfig(language="xx"))
    s, _ = session(engine)

    async def main():
        with pytest.raises(ValueError, match="float32"):
            await s.feed(np.zeros(160, np.int16))
        await s.close()
        with pytest.raises(RuntimeError, match="ended"):
            await s.feed(np.zeros(160, np.float32))

    asyncio.run(main())


def test_a_failing_receiver_fails_the_session_loudly(engine, speech):
    async def emit(event):
        if isinstance(event, ev.SpeechStarted):
            raise ConnectionResetError("viewer gone")

    s = CaptionSession("broken", engine, EN, emit=emit)
    with pytest.raises(ConnectionResetError):
        asyncio.run(play(s, load_clip(speech[3]), speed=0))


def test_abort_drops_pending_captions_and_ends_the_stream(engine, speech):
    s, run = session(engine)

    async def main():
        await s.feed(load_clip(speech[0]))
        await s.feed(np.zeros(2 * RATE, np.float32))  # the utterance ends: its final is requested
        await s.abort()

    asyncio.run(main())
    assert run.events[-1].type == "session.ended" and s.ended
    assert [e.seq for e in run.events] == list(range(len(run.events)))


def test_the_decode_of_the_last_pause_is_the_final(runners, speech):
    """Each pause is decoded when it starts (post-roll after the last word), over exactly the audio the final will
    have if the pause lasts; at the endpoint that result is the final: no second decode, the same transcript."""
    from vad.events import SpeechEnded, SpeechPaused
    from vad.segmenter import Segmenter

    jfk = load_clip(speech[0])
    audio = np.concatenate([jfk, np.zeros(2 * RATE, np.float32)])
    engine = Engine(runners("base", "int8"))
    s, run = session(engine, SessionConfig(language="en", partials=False))  # finals only: pauses are still decoded

    try:
        asyncio.run(play(s, audio, speed=1, chunk_ms=100))  # real time, so each pause's decode is done before the next
    finally:
        engine.close()
    vad_events = (segmenter := Segmenter(s.config.segmenter())).feed(audio) + segmenter.flush()
    pauses = [e for e in vad_events if isinstance(e, SpeechPaused)]
    pieces = [e for e in vad_events if isinstance(e, SpeechEnded)]  # JFK is finalised in pieces at his pauses
    assert len(pieces) >= 2 and all(any(p.end == e.end for p in pauses) for e in pieces)
    assert engine.stats.segments == len(pauses)  # one decode per pause, none for the finals
    finals = run.of(ev.CaptionFinal)
    assert len(finals) == len(pieces) and not run.of(ev.CaptionPartial)
    runner, before = runners("base", "int8"), None  # each piece as the session decodes it: led by the one before
    for final, piece in zip(finals, pieces):
        own = piece.audio.astype(np.float32)
        if before is not None and piece.start_s - before[0].end_s <= CONTEXT_GAP_S:
            led = runner.transcribe([np.concatenate([before[0].audio.astype(np.float32), own])],
                                    DecodeOptions(language="en", prefix=before[1]))[0]
        else:
            led = runner.transcribe([own], DecodeOptions(language="en"))[0]
        assert final.text == led.text and final.decode["tokens"] == led.result.emitted
        before = piece, led.result.tokens


def test_a_partial_waiting_in_the_queue_is_replaced_by_a_newer_one(runners, speech):
    """Under load a stream's partial may wait in the engine's queue (here: no credit for previews for the first
    two seconds); one that comes due meanwhile replaces it there, so the preview that runs shows the newest audio,
    not the audio of the first one asked for."""
    jfk = load_clip(speech[0])[: 4 * RATE]
    engine = Engine(runners("base", "int8"), partial_share=0.5)
    engine._scheduler.credit = -1.0  # two seconds of the clock before previews may run
    s, run = session(engine)

    try:
        asyncio.run(play(s, jfk, speed=1, chunk_ms=100))
    finally:
        engine.close()
    check_order(run.events)
    partials = run.of(ev.CaptionPartial)
    assert partials and engine.partials_dropped["superseded"] >= 3
    # the first preview shown heard at least 1.5 s of audio: it was asked for after the credit came back or near it
    assert partials[0].end >= 1.5, [(p.end, p.text) for p in partials]
