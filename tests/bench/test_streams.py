"""bench/streams.py: its stream programs and lag-growth rule, and short real runs of both modes whose JSON lines
keep the contract the scale check reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.speech import SPEECH, clips
from bench.streams import FINAL, PARTIAL, RATE, TURN, Heard, StreamResult, Utterance, follow, program, speech_span

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def run(*args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "bench/streams.py", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_programs_are_seeded_real_audio_with_pauses():
    quiet = np.full(RATE // 10, 0.001, np.float32)  # -60 dBFS: not speech
    audio = [np.concatenate([quiet, np.full(RATE, 0.5, np.float32), quiet]), np.full(2 * RATE, -0.5, np.float32)]
    spans = [speech_span(a) for a in audio]
    assert spans == [pytest.approx((0.1, 1.1)), (0.0, 2.0)]
    (a, placed), (b, _) = program(audio, spans, 0, 20), program(audio, spans, 1, 20)
    assert (a, placed) == program(audio, spans, 0, 20) and a != b  # deterministic per stream, different across streams
    pcm = np.frombuffer(a, "<i2")
    assert len(pcm) == 20 * RATE
    voiced = np.abs(pcm) > 1000
    assert 0.15 < voiced.mean() < 0.6  # clips separated by 2-3.5 s of silence
    assert [u.clip for u in placed] == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1][:len(placed)] and placed[-1].start < 20
    for u in placed:  # each utterance is where its clip's speech is in the stream
        assert voiced[round(u.start * RATE):round(u.end * RATE)].all()
        assert not voiced[round(u.start * RATE) - 10:round(u.start * RATE)].any()
        assert not voiced[round(u.end * RATE):round(u.end * RATE) + 10].any()


def finals(lags: list[tuple[float, float]]) -> list[Heard]:
    return [Heard(FINAL, end + lag, end - 2, end, "words") for end, lag in lags]


def test_lag_growth_separates_a_stream_that_falls_behind():
    steady_lags = [(t, 0.8 + 0.1 * (i % 2)) for i, t in enumerate(range(5, 75, 7))]
    steady = StreamResult(finals(steady_lags), ended_s=0.5, duration_s=75)
    falling = StreamResult(finals([(t, 0.8 + 0.05 * t) for t in range(5, 75, 7)]), ended_s=0.5, duration_s=75)
    assert abs(steady.growth_s) < 0.2 and steady.realtime
    assert falling.growth_s == pytest.approx(0.05 * 63, rel=1e-6) and not falling.realtime
    assert not StreamResult(ended_s=None).realtime  # its session never finished
    # the close ends the open segment: its final, late in the burst of every stream's, is not a trend
    closed = StreamResult(finals(steady_lags + [(74.9, 2.5)]), ended_s=0.5, duration_s=75)
    assert closed.growth_s == steady.growth_s and closed.realtime


def test_captions_follow_the_utterance_whose_span_holds_them():
    u = Utterance(clip=3, start=10.0, end=14.0)
    heard = StreamResult([
        Heard(PARTIAL, 10.2, 9.8, 10.1, ""),  # no text: ignored
        Heard(PARTIAL, 10.9, 9.8, 10.6, "one"),  # the first word
        Heard(FINAL, 12.0, 9.8, 11.5, "one two"),
        Heard(FINAL, 14.9, 12.5, 14.2, "three"),  # the last final
        Heard(TURN, 15.0, 9.8, 11.5, "one two"),  # a pause split the utterance: not its last turn
        Heard(TURN, 15.6, 12.5, 14.2, "three"),
        Heard(FINAL, 15.5, 14.3, 15.9, "four"),  # midpoint 15.1: after the span, another utterance's
        Heard(PARTIAL, 9.0, 8.8, 9.0, "before"),  # start before the span
    ])
    f = follow(u, heard)
    assert f.text == "one two three" and f.utterance == u
    assert (f.first_word_s, f.final_s, f.turn_s) == pytest.approx((0.9, 0.9, 1.6))
    silent = follow(Utterance(0, 30.0, 33.0), heard)
    assert (silent.text, silent.final_s, silent.first_word_s, silent.turn_s) == ("", None, None, None)


def test_two_live_streams_report_latencies_batches_and_resources():
    r = run("--streams", "2", "--duration", "12")[-1]
    for key in ("streams", "p50_final_latency_s", "p95_final_latency_s", "p95_partial_latency_s", "p95_first_word_s",
                "p95_turn_latency_s", "wer_en", "cer_zh", "utterances", "realtime", "rss_mb"):
        assert key in r, key
    assert r["streams"] == 2 and r["finals"] >= 2 and r["partials"] >= 2 and not r["errors"]
    # In 12 s only stream 1's first clip (LibriSpeech, last word at 8.9 s) ends 1.5 s before the run does.
    assert r["utterances"] == 1 and r["utterances_without_final"] == 0 and r["cer_zh"] is None
    assert r["wer_en"] <= 25
    # A final can only come after the last word and the endpointing silence; turn.ended after the turn's finals.
    assert 0.5 < r["p50_final_latency_s"] <= r["p95_final_latency_s"] <= r["p95_turn_latency_s"]
    assert 0 < r["p50_first_word_s"] <= r["p95_first_word_s"] < 5
    assert 0 < r["p50_partial_latency_s"] <= r["p95_partial_latency_s"]
    assert 0 < r["p50_final_decode_s"] < r["p50_final_latency_s"]
    assert r["batches"] >= r["finals"] / 16 and r["batch_mean"] >= 1
    assert r["rss_mb"] > 100 and r["cpu_pct"] > 0 and isinstance(r["realtime"], bool)


@pytest.mark.slow
def test_offline_throughput_against_faster_whisper(tmp_path: Path):
    chosen = [c for c in clips() if c.path.name in ("jfk.wav", "aishell-BAC009S0724W0121.wav")]
    for c in chosen:
        (tmp_path / c.path.name).symlink_to(c.path)
    lines = (SPEECH / "manifest.tsv").read_text().splitlines()
    (tmp_path / "manifest.tsv").write_text("\n".join([lines[0]] + [l for l in lines if l.split("\t")[0] in
                                                                    {c.path.name for c in chosen}]) + "\n")
    ours, peer = run("--offline", str(tmp_path))
    assert ours["engine"].startswith("ours") and peer["engine"].startswith("faster-whisper")
    for r in (ours, peer):
        assert r["files"] == 2 and r["audio_s"] == pytest.approx(sum(c.duration_s for c in chosen), abs=0.1)
        assert r["wer"] <= 10 and r["cer"] <= 30
    speed = [r["audio_s"] / r["wall_s"] for r in (ours, peer)]
    assert ours["vs_faster_whisper"] == pytest.approx(speed[0] / speed[1], rel=0.01)
