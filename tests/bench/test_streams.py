"""bench/streams.py: its stream programs and lag-growth rule, and short real runs of both modes whose JSON lines
keep the contract the scale check reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.scoring import SPEECH, clips
from bench.streams import RATE, StreamResult, program

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def run(*args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "bench/streams.py", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_programs_are_seeded_real_audio_with_pauses():
    audio = [np.full(RATE, 0.5, np.float32), np.full(2 * RATE, -0.5, np.float32)]
    a, b = program(audio, 0, 20), program(audio, 1, 20)
    assert a == program(audio, 0, 20) and a != b  # deterministic per stream, different across streams
    pcm = np.frombuffer(a, "<i2")
    assert len(pcm) == 20 * RATE
    voiced = pcm != 0
    assert 0.15 < voiced.mean() < 0.6  # clips separated by 2-3.5 s of silence


def test_lag_growth_separates_a_stream_that_falls_behind():
    steady = StreamResult(finals=[(t, 0.8 + 0.1 * (i % 2)) for i, t in enumerate(range(5, 75, 7))], ended_s=0.5)
    falling = StreamResult(finals=[(t, 0.8 + 0.05 * t) for t in range(5, 75, 7)], ended_s=0.5)
    assert abs(steady.growth_s) < 0.2 and steady.realtime
    assert falling.growth_s == pytest.approx(0.05 * 63, rel=1e-6) and not falling.realtime
    assert not StreamResult(ended_s=None).realtime  # its session never finished


def test_two_live_streams_report_latencies_batches_and_resources():
    r = run("--streams", "2", "--duration", "12")[-1]
    for key in ("streams", "p50_final_latency_s", "p95_final_latency_s", "p95_partial_latency_s", "realtime", "rss_mb"):
        assert key in r, key
    assert r["streams"] == 2 and r["finals"] >= 2 and r["partials"] >= 2 and not r["errors"]
    # A final can only come after its segment's audio and the endpointing silence: latency is positive.
    assert 0 < r["p50_final_latency_s"] <= r["p95_final_latency_s"]
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
