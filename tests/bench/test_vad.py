"""bench/vad.py: the segmenter alone on the live benchmark's streams, run as a script."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gateway.session import SessionConfig

ROOT = Path(__file__).resolve().parents[2]


def test_pauses_come_pause_ms_after_the_last_words_and_become_the_finals():
    done = subprocess.run([sys.executable, "bench/vad.py", "--streams", "3", "--duration", "40", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.splitlines()[-1])
    config = SessionConfig().segmenter()
    lead_s = (config.endpoint_ms - config.pause_ms) / 1000
    for language in ("en", "zh"):
        assert r[f"{language}_utterances"] >= 2 and r[f"{language}_without_pause"] == 0  # every final has its pause
        assert r[f"{language}_pause_p50_s"] <= r[f"{language}_endpoint_p50_s"] - lead_s + 0.02
    # English ends cleanly: its pause comes pause_ms after the last word, give or take where the VAD ends it (it
    # waited for the classifier's look-ahead before: p50 0.32 s, p90 0.36 s)
    assert r["en_pause_p50_s"] <= config.pause_ms / 1000 + 0.05 and r["en_pause_p90_s"] <= config.pause_ms / 1000 + 0.1
    assert 0 < r["pauses_not_final"] < r["pauses"] and r["us_per_frame"] > r["webrtcvad_us_per_frame"] > 0
