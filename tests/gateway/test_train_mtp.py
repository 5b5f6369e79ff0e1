"""`livecaptions train-mtp` end to end on a small scale: synthesise, label with the frozen model, train, write
heads that load; a rerun resumes from the cached shards and the epoch checkpoint instead of starting over."""
from __future__ import annotations

import subprocess
import sys

from engine.mtp import load_heads


def train(tmp_path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gateway.cli", "train-mtp", "--model", "tiny.en", "--utterances", "12", "--heads", "2",
           "--epochs", "1", "--work", str(tmp_path / "work"), "--output", str(tmp_path / "heads.safetensors")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_train_writes_heads_and_resumes(tmp_path):
    first = train(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "synthesise + label" in first.stderr and "train heads" in first.stderr  # progress bars
    heads, meta = load_heads(tmp_path / "heads.safetensors", None)
    assert heads.n_heads == 2 and len(heads.vocab) > 0
    assert meta["utterances"] > 0 and len(meta["heldout"]["top1"]) == 2 and meta["command"].startswith("livecaptions")
    again = train(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "synthesise + label" not in again.stderr  # the shards were reused
