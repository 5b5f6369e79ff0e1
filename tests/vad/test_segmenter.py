"""The streaming segmenter on real speech: determinism, chunking, no lost audio, speech edges, edge cases."""
import itertools

from dataclasses import replace

import numpy as np
import pytest
import soxr

from vad.config import SegmenterConfig
from vad.classifier import NOISE_WINDOW_MS
from vad.events import Event, PartialDue, SpeechEnded, SpeechPaused, SpeechStarted, TurnEnded
from vad.segmenter import Segmenter, to_int16

RATE = 16000
TOLERANCE_S = 0.150  # the acceptance bar: a detected speech edge lies within 150 ms of the true one


def stream(pcm: np.ndarray, sizes: list[int] | int | None = None, config: SegmenterConfig | None = None) -> list[Event]:
    """Feed `pcm` in chunks of `sizes` (cycled; all at once if None), flush, and return every event in order."""
    segmenter, events, pos = Segmenter(config), [], 0
    chunks = itertools.cycle([len(pcm)] if sizes is None else [sizes] if isinstance(sizes, int) else sizes)
    while pos < len(pcm):
        n = next(chunks)
        events += segmenter.feed(pcm[pos:pos + n])
        pos += n
    return events + segmenter.flush()


def ended(events: list[Event]) -> list[SpeechEnded]:
    return [e for e in events if isinstance(e, SpeechEnded)]


def speech_spans(segments: list[SpeechEnded], config: SegmenterConfig) -> list[tuple[float, float]]:
    """Detected speech edges in seconds: start/end include the pre/post roll, so take it off again."""
    return [(e.start_s + config.pre_roll_ms / 1000, e.end_s - config.post_roll_ms / 1000) for e in segments]


def assert_boundaries(segments, runs, noise_only, config, rate=RATE) -> None:
    """Every detected edge within TOLERANCE_S of a true one; all speech kept; silences >= endpoint_ms split, short
    pauses do not (each judged with the tolerance on both sides); noise-only stretches hold no speech."""
    spans = speech_spans(segments, config)
    runs = [(a / rate, b / rate) for a, b in runs]
    starts, ends = np.array([a for a, _ in runs]), np.array([b for _, b in runs])
    errors = [(round(on, 3), round(float(np.min(np.abs(starts - on))), 3), round(off, 3),
               round(float(np.min(np.abs(ends - off))), 3)) for on, off in spans]
    assert all(max(e[1], e[3]) <= TOLERANCE_S for e in errors), f"(onset, error, offset, error) s: {errors}"
    inside = [[i for i, (on, off) in enumerate(spans) if on - TOLERANCE_S <= a and b <= off + TOLERANCE_S]
              for a, b in runs]
    assert all(inside), f"speech runs outside every segment: {[r for r, i in zip(runs, inside) if not i]}"
    endpoint = config.endpoint_ms / 1000
    for ((_, b0), i0), ((a1, _), i1) in zip(zip(runs, inside), zip(runs[1:], inside[1:])):
        if a1 - b0 >= endpoint + 2 * TOLERANCE_S:
            assert not set(i0) & set(i1), f"silence {b0:.2f}-{a1:.2f} s did not split"
        elif a1 - b0 <= endpoint - 2 * TOLERANCE_S:
            assert set(i0) & set(i1), f"pause {b0:.2f}-{a1:.2f} s split an utterance"
    for a, b in noise_only:
        a, b = a / rate + TOLERANCE_S, b / rate - TOLERANCE_S
        assert not [s for s in spans if s[0] < b and s[1] > a], f"speech found in noise {a:.2f}-{b:.2f} s"


def test_boundaries_on_spliced_speech(spliced):
    config = SegmenterConfig()
    segments = ended(stream(spliced.pcm, config=config))
    assert len(segments) >= 6  # one per clip at least: jfk and one-two-three have pauses that split them
    assert_boundaries(segments, spliced.runs, spliced.noise_only, config)


@pytest.mark.parametrize("rate", [8000, 48000])
def test_boundaries_at_other_rates(spliced, rate):
    pcm = soxr.resample(spliced.pcm.astype(np.float32) / 32768, RATE, rate)
    config = SegmenterConfig(sample_rate=rate)
    segments = ended(stream(to_int16(pcm), sizes=rate // 7, config=config))
    runs = [(a * rate // RATE, b * rate // RATE) for a, b in spliced.runs]
    noise_only = [(a * rate // RATE, b * rate // RATE) for a, b in spliced.noise_only]
    assert_boundaries(segments, runs, noise_only, config, rate=rate)


def test_chunk_size_invariant_and_deterministic(spliced):
    whole = stream(spliced.pcm)
    assert len(ended(whole)) > 5
    for sizes in (160, 592, RATE, [0, 1, 7, 0, 333, 4000, 161]):  # 10 ms, 37 ms, 1 s, ragged with empty chunks
        assert stream(spliced.pcm, sizes) == whole, sizes
    assert stream(spliced.pcm) == whole


def test_no_lost_audio(spliced):
    pcm, config = spliced.pcm, SegmenterConfig()
    events = stream(pcm, 592, config)
    segments = ended(events)
    pieces, pos = [], 0
    for i, seg in enumerate(segments):
        assert seg.index == i and pos <= seg.start < seg.end  # ordered, non-overlapping
        assert seg.audio.dtype == np.int16 and np.array_equal(seg.audio, pcm[seg.start:seg.end])
        pieces += [pcm[pos:seg.start], seg.audio]
        pos = seg.end
    assert np.array_equal(np.concatenate(pieces + [pcm[pos:]]), pcm)
    # Each segment's events: SpeechStarted, PartialDue every partial_interval_ms while speech goes on (SpeechPaused
    # in its pauses), then SpeechEnded.
    interval = config.samples(config.partial_interval_ms)
    for seg in segments:
        own = [e for e in events if e.index == seg.index]
        assert own[0] == SpeechStarted(seg.index, seg.start, RATE) and own[-1] is seg
        partials = [e for e in own[1:-1] if not isinstance(e, SpeechPaused)]
        assert all(isinstance(p, PartialDue) and p.start == seg.start for p in partials)
        assert all(np.array_equal(p.audio, pcm[p.start:p.end]) for p in partials)
        onset = seg.start + config.samples(config.pre_roll_ms)
        ends = [onset] + [p.end for p in partials]
        assert all(b - a >= interval and (b - onset) % config.frame_samples == 0 for a, b in zip(ends, ends[1:]))



def test_float32_gives_the_same_segments(spliced):
    as_int = ended(stream(spliced.pcm, 1000))
    floats = spliced.pcm.astype(np.float32) / 32768
    as_float = ended(stream(floats, 1000))
    assert [(e.index, e.start, e.end) for e in as_float] == [(e.index, e.start, e.end) for e in as_int]
    assert all(e.audio.dtype == np.float32 and np.array_equal(e.audio, floats[e.start:e.end]) for e in as_float)


def test_noise_only_yields_no_events(noise):
    for kinds, dbfs in ((["white"], -40), (["brown"], -40), (["silence", "white", "silence", "brown", "white"], -30)):
        pcm = np.concatenate([noise(kind, 3.0, seed=i, dbfs=dbfs) for i, kind in enumerate(kinds * 2)])
        assert stream(pcm, 1000) == [], (kinds, dbfs)


def trimmed(clip, runs_of, name: str) -> np.ndarray:
    """A clip cut down to its true speech: first run's start to last run's end."""
    pcm = clip(name)
    runs = runs_of(pcm)
    return pcm[runs[0][0]:runs[-1][1]]


@pytest.mark.parametrize("silence_ms, expected", [(750, 2), (300, 1)])
def test_silence_of_endpoint_ms_splits(clip, runs_of, silence_ms, expected):
    a = trimmed(clip, runs_of, "aishell-BAC009S0724W0121.wav")
    b = trimmed(clip, runs_of, "librispeech-1995-1837-0001.wav")
    quiet = np.zeros(RATE, np.int16)
    pcm = np.concatenate([quiet, a, np.zeros(silence_ms * RATE // 1000, np.int16), b, quiet])
    assert len(ended(stream(pcm))) == expected


def test_pre_roll_never_reaches_into_the_previous_segment(clip, runs_of):
    config = SegmenterConfig(endpoint_ms=300, pre_roll_ms=400)
    a = trimmed(clip, runs_of, "aishell-BAC009S0764W0121.wav")
    quiet = np.zeros(RATE, np.int16)
    pcm = np.concatenate([quiet, a, np.zeros(450 * RATE // 1000, np.int16), a, quiet])
    first, second = ended(stream(pcm, config=config))
    assert second.start == first.end  # clamped: 400 ms back from the onset is inside the first segment


def test_flush_ends_speech_cut_mid_word(clip):
    pcm = clip("librispeech-1995-1837-0001.wav")[:3 * RATE]  # 3.0 s is inside "...the loss of the cotton"
    segmenter = Segmenter()
    fed = segmenter.feed(pcm)
    assert isinstance(fed[0], SpeechStarted) and not ended(fed)
    flushed = segmenter.flush()
    assert [type(e) for e in flushed][-1] is SpeechEnded
    last = flushed[-1]
    assert last.end == len(pcm) and np.array_equal(last.audio, pcm[last.start:])


@pytest.mark.parametrize("name, max_s", [("librispeech-1995-1837-0001.wav", 3.0), ("mit-license-read.wav", 20.0)])
def test_long_speech_is_split_at_the_quietest_frame(clip, name, max_s):
    pcm = clip(name)
    config = SegmenterConfig(max_segment_s=max_s, long_segment_s=None)  # forced splits only
    segments = ended(stream(pcm, 777, config))
    limit, frame = round(max_s * RATE), config.frame_samples
    splits = [s for s, nxt in zip(segments, segments[1:]) if nxt.start == s.end]
    assert splits and all(s.end - s.start <= limit for s in segments)
    for s in splits:  # the cut ends the lowest-RMS whole frame of the segment's last second
        lo = -(-(s.start + limit - RATE) // frame) * frame
        frames = pcm[lo:(s.start + limit) // frame * frame].astype(np.float64).reshape(-1, frame)
        assert s.end == lo + (int(np.argmin(np.sqrt((frames ** 2).mean(axis=1)))) + 1) * frame
    # No sample lost: each run of contiguous pieces is exactly the input between its ends.
    for first, *rest in _contiguous(segments):
        last = rest[-1] if rest else first
        assert np.array_equal(np.concatenate([first.audio] + [r.audio for r in rest]), pcm[first.start:last.end])


def test_a_long_utterance_ends_at_a_shorter_pause(clip):
    """JFK played twice with a 0.32 s gap (a looped source): under the 1250 ms endpoint the gap would not end
    it, but 10 s into an utterance a 250 ms pause does, so the first segment is exactly the first play; JFK's
    own pauses, all before 10 s, still do not split it."""
    jfk = clip("jfk.wav")
    pcm = np.concatenate([jfk, np.zeros(int(0.32 * RATE), jfk.dtype), jfk])
    config = SegmenterConfig(endpoint_ms=1250)
    first = ended(stream(pcm, 800, config))[0]
    assert 0 <= first.start < 0.5 * RATE and len(jfk) <= first.end < len(jfk) + 0.32 * RATE
    run_on = ended(stream(pcm, 800, replace(config, long_segment_s=None)))[0]  # without the rule: into the 2nd play
    assert run_on.end > len(jfk) + 2 * RATE


def _contiguous(segments):
    groups = []
    for s in segments:
        if groups and groups[-1][-1].end == s.start:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def test_short_bursts_are_dropped(clip):
    config = SegmenterConfig(start_window_ms=100)  # 70 ms of voicing may open a segment; 250 ms must confirm it
    speech = clip("librispeech-1995-1837-0001.wav")[int(0.3 * RATE):int(1.3 * RATE)]  # inside a word run
    quiet = np.zeros(RATE, np.int16)
    burst = np.concatenate([quiet, speech[:int(0.15 * RATE)], quiet])
    assert stream(burst, config=config) == []
    clicks = np.zeros(3 * RATE, np.int16)
    clicks[::RATE // 3] = 30000
    assert stream(clicks) == []
    assert len(ended(stream(np.concatenate([quiet, speech, quiet]), config=config))) == 1


def test_sample_rate_change_is_rejected(clip):
    pcm = clip("one-two-three.wav")
    segmenter = Segmenter()
    segmenter.feed(pcm[:RATE], sample_rate=RATE)
    with pytest.raises(ValueError, match="sample rate changed mid-stream: got 8000 Hz, this stream is 16000 Hz"):
        segmenter.feed(pcm[RATE:], sample_rate=8000)
    with pytest.raises(ValueError, match="sample_rate must be one of"):
        Segmenter(SegmenterConfig(sample_rate=44100))


def test_empty_chunks_are_fine():
    segmenter = Segmenter()
    assert segmenter.feed(np.zeros(0, np.int16)) == []
    assert segmenter.feed(np.zeros(0, np.int16)) == []
    assert segmenter.flush() == []


def test_bad_input_is_rejected():
    segmenter = Segmenter()
    segmenter.feed(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="dtype changed mid-stream"):
        segmenter.feed(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="int16 or float32"):
        Segmenter().feed(np.zeros(100, np.float64))
    with pytest.raises(ValueError, match="mono 1-D"):
        Segmenter().feed(np.zeros((100, 2), np.int16))
    segmenter.flush()
    with pytest.raises(ValueError, match="after flush"):
        segmenter.feed(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="flush\\(\\) called twice"):
        segmenter.flush()


def test_to_int16_round_trips_and_clips():
    x = np.array([-32768, -1, 0, 1, 32767], np.int16)
    assert np.array_equal(to_int16(x.astype(np.float32) / 32768), x)
    assert np.array_equal(to_int16(np.array([-2.0, 2.0], np.float32)), [-32768, 32767])


def test_a_pause_announces_the_audio_its_segment_will_end_with(spliced):
    """SpeechPaused comes pause_ms after the last voiced frame, once per pause, holding exactly stream[start:end];
    when the silence then lasts to the endpoint, SpeechEnded has that very audio (its decode can be the final)."""
    pcm, config = spliced.pcm, SegmenterConfig()
    events = stream(pcm, 592, config)
    pauses = [e for e in events if isinstance(e, SpeechPaused)]
    assert pauses and all(np.array_equal(p.audio, pcm[p.start:p.end]) for p in pauses)
    for seg in ended(events):
        own = [e for e in events if e.index == seg.index and isinstance(e, SpeechPaused)]
        assert own and len({p.end for p in own}) == len(own)  # one per pause
        assert (own[-1].start, own[-1].end) == (seg.start, seg.end) and np.array_equal(own[-1].audio, seg.audio)


def test_no_partial_comes_due_in_a_pause():
    """JFK pauses 1.16 s after "Americans" (about 2.1-3.3 s): a preview there would add no speech."""
    from support.speech import SPEECH
    from gateway.media import decode_file

    config = SegmenterConfig(endpoint_ms=1250)  # the session's endpoint: the pause stays inside the segment
    events = stream(to_int16(decode_file(SPEECH / "jfk.wav")), 1000, config)
    (pause,) = [e for e in events if isinstance(e, SpeechPaused) and 2.0 < e.end_s < 2.6]
    ahead = NOISE_WINDOW_MS / 1000  # a partial's audio runs the classifier's look-ahead past the moment it came due
    assert not [e for e in events if isinstance(e, PartialDue) and pause.end_s < e.end_s - ahead < 3.2]
    assert len(ended(events)) == 1


def test_the_end_of_speech_in_silence_is_heard_without_the_look_ahead(clip):
    """webrtcvad's unvoiced verdicts stand (the classifier's vetoes only ever unvoice a frame), so a pause and the
    endpoint in clean silence are announced once that much silence has been fed, not NOISE_WINDOW_MS later; a
    partial holds all the audio fed so far."""
    config = SegmenterConfig()
    pcm = np.concatenate([clip("jfk.wav")[: 2 * RATE], np.zeros(2 * RATE, np.int16)])  # "And so my fellow Americans"
    seg, fed, heard = Segmenter(config), 0, []
    for i in range(0, len(pcm), config.frame_samples):
        fed += config.frame_samples
        heard += [(fed, e) for e in seg.feed(pcm[i : i + config.frame_samples])]
    (end_fed, end), = [(f, e) for f, e in heard if isinstance(e, SpeechEnded)]
    (pause_fed, pause), = [(f, e) for f, e in heard if isinstance(e, SpeechPaused)]
    voiced_end = end.end - config.samples(config.post_roll_ms)
    assert end_fed == voiced_end + config.samples(config.endpoint_ms)
    assert pause_fed == voiced_end + config.samples(config.pause_ms) and pause.end == end.end
    assert [p.end for f, p in heard if isinstance(p, PartialDue)] == [f for f, p in heard if isinstance(p, PartialDue)]
    assert ended(stream(pcm, RATE, config)) == [end]  # the same segment whatever the chunking


def test_a_reverberant_tail_far_below_the_speech_is_silence_without_the_look_ahead(clip):
    """LibriSpeech's room tone after a sentence is partly voiced to webrtcvad but EDGE_DB below the speech before it,
    which only ever grows with what comes: those frames are known unvoiced at once. So every pause is heard exactly
    pause_ms after the speech ends (up to 160 ms later while it waited for the look-ahead to label the last words,
    300 ms before the envelope veto), and every endpoint endpoint_ms after its last voiced frame (the first was 180
    ms later): at most that after the speech end its pause placed, which counts the frames the look-ahead still held
    that might have been speech (here 30-40 ms that were not), so that its decode is the final's."""
    config = SegmenterConfig(endpoint_ms=500, pause_ms=200)
    pcm = np.concatenate([clip("librispeech-1995-1837-0001.wav"), np.zeros(2 * RATE, np.int16)])
    seg, fed, heard = Segmenter(config), 0, []
    for i in range(0, len(pcm), config.frame_samples):
        fed += config.frame_samples
        heard += [(fed, e) for e in seg.feed(pcm[i : i + config.frame_samples])]
    late = {kind: [f - (e.end - config.samples(config.post_roll_ms)) - config.samples(ms) for f, e in heard
                   if isinstance(e, kind)] for kind, ms in ((SpeechEnded, config.endpoint_ms), (SpeechPaused, config.pause_ms))}
    assert len(late[SpeechPaused]) >= 3 and set(late[SpeechPaused]) == {0}
    assert len(late[SpeechEnded]) == 2 and all(-config.samples(50) <= late <= 0 for late in late[SpeechEnded])
    assert ended(stream(pcm, 592, config)) == [e for _, e in heard if isinstance(e, SpeechEnded)]


def test_a_short_utterance_ends_only_at_a_longer_pause(clip):
    """"one two three" is spoken with half-second gaps: a 500 ms endpoint cuts it into words, unless an utterance
    still under short_segment_s waits for short_endpoint_ms."""
    pcm = np.concatenate([clip("one-two-three.wav"), np.zeros(2 * RATE, np.int16)])
    words = ended(stream(pcm, 592, SegmenterConfig(endpoint_ms=500)))
    whole = ended(stream(pcm, 592, SegmenterConfig(endpoint_ms=500, short_segment_s=2.0)))
    assert len(words) >= 2 and len(whole) == 1
    assert whole[0].start == words[0].start and whole[0].end == words[-1].end
    assert SegmenterConfig(endpoint_ms=500, short_segment_s=2.0).endpoint_after(2.5) == 500


def test_a_turn_ends_after_turn_ms_of_silence_and_not_at_a_shorter_pause(clip):
    """JFK pauses 590 ms after "...for you," and 840 ms after "Americans": at turn_ms 700 the first pause stays inside
    the turn and the second ends it, the same whatever the chunking. In digital silence the end is heard without the
    look-ahead; in JFK's room tone (which webrtcvad partly calls voiced) at most the look-ahead later."""
    config = SegmenterConfig(endpoint_ms=500, turn_ms=700)
    pcm = np.concatenate([clip("jfk.wav"), np.zeros(2 * RATE, np.int16)])
    whole = stream(pcm, None, config)
    turns = [e for e in whole if isinstance(e, TurnEnded)]
    segments = ended(whole)
    assert len(segments) > len(turns) >= 2 and turns[-1].index == len(segments) - 1
    for turn in turns:  # the turn's last segment ended before it, the next one starts after it
        before = [e for e in whole[:whole.index(turn)] if isinstance(e, SpeechEnded)]
        assert before[-1].index == turn.index and not turn.forced
        assert turn.end - (before[-1].end - config.samples(config.post_roll_ms)) >= config.samples(config.turn_ms)
    assert all(stream(pcm, sizes, config) == whole for sizes in (160, 592, [0, 7, 4000]))
    seg, fed, heard = Segmenter(config), 0, []
    for i in range(0, len(pcm), config.frame_samples):
        fed += config.frame_samples
        heard += [fed for e in seg.feed(pcm[i:i + config.frame_samples]) if isinstance(e, TurnEnded)]
    assert len(heard) == len(turns) and heard[-1] == turns[-1].end
    assert all(t.end <= h <= t.end + config.samples(NOISE_WINDOW_MS) for h, t in zip(heard, turns))
    assert not any(isinstance(e, TurnEnded) for e in stream(pcm, None, SegmenterConfig(endpoint_ms=500)))


def test_flush_ends_the_turn_and_a_short_utterance_waits_for_no_more_than_the_turn(clip):
    pcm = clip("one-two-three.wav")
    config = SegmenterConfig(endpoint_ms=500, short_segment_s=2.0, turn_ms=700)
    events = stream(pcm[: RATE], None, config)  # "one", then the stream is flushed mid-turn
    assert isinstance(events[-1], TurnEnded) and events[-1].forced and events[-1].index == ended(events)[-1].index
    assert config.endpoint_after(1.0) == 700 and replace(config, turn_ms=None).endpoint_after(1.0) == 1250
    with pytest.raises(ValueError, match="turn_ms"):
        SegmenterConfig(turn_ms=100)
