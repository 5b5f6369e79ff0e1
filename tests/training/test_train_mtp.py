"""`livecaptions train-mtp` end to end on a small scale, for both kinds of head: synthesise, label with the frozen
model (audio head: its greedy transcripts; decoder heads: one teacher-forced pass over the spoken text, utterances
the model hears otherwise dropped), train, write heads that load; a rerun resumes from the cached shards and the
epoch checkpoint instead of starting over."""
from __future__ import annotations

import subprocess
import sys

from engine.mtp import CTCHead, load_heads
from training.distill import PAD, windows_of


def train(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gateway.cli", "train-mtp", "--model", "tiny.en", "--utterances", "12", "--epochs", "1",
           "--work", str(tmp_path / "work"), "--output", str(tmp_path / "heads.safetensors"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_train_audio_head_writes_a_head_that_loads_and_resumes(tmp_path):
    first = train(tmp_path)  # --head audio is the default
    assert first.returncode == 0, first.stderr[-2000:]
    assert "synthesise + label" in first.stderr and "train heads" in first.stderr  # progress bars
    head, meta = load_heads(tmp_path / "heads.safetensors", None)
    assert isinstance(head, CTCHead) and len(head.vocab) > 0
    assert meta["head"] == "audio" and meta["utterances"] == 12 and meta["zh_share"] == 0.0  # English-only model
    assert meta["tokens"] > 12 and meta["heldout"]["tokens_per_forward"] >= 1.0 and meta["command"].startswith("livecaptions")
    again = train(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "synthesise + label" not in again.stderr  # the shards were reused
    assert load_heads(tmp_path / "heads.safetensors", None)[1]["tokens"] == meta["tokens"]


def test_train_decoder_heads_writes_heads_and_resumes(tmp_path):
    first = train(tmp_path, "--head", "decoder", "--heads", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "synthesise + label" in first.stderr and "train heads" in first.stderr  # progress bars
    assert "utterances kept" in first.stderr
    heads, meta = load_heads(tmp_path / "heads.safetensors", None)
    assert heads.n_heads == 2 and len(heads.vocab) > 0
    assert meta["utterances"] > 0 and len(meta["heldout"]["top1"]) == 2 and meta["command"].startswith("livecaptions")
    # the agreement filter is reported: espeak-ng English is mostly heard as written, so most utterances stay
    assert meta["utterances_made"] == 12 and meta["utterances"] == round(meta["kept_share"] * 12)
    assert meta["kept_share"] >= 0.5 and meta["zh_share_made"] == 0.0  # English-only model: English speech only
    again = train(tmp_path, "--head", "decoder", "--heads", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "synthesise + label" not in again.stderr  # the shards were reused
    assert load_heads(tmp_path / "heads.safetensors", None)[1]["utterances"] == meta["utterances"]


def test_windows_stop_after_the_first_disagreement():
    # fed text 1 2 3 4 eot; the model chose 9 instead of 3 at position 2: labels after it answer a prefix greedy
    # decoding would not have written, so no window reaches past position 2
    labels, fed = [1, 2, 9, 4, 0], [1, 2, 3, 4, 0]
    w = windows_of(labels, fed, 2).tolist()
    assert w == [[1, 2, 9], [2, 9, PAD], [9, PAD, PAD], [4, 0, PAD], [0, PAD, PAD]]
    assert windows_of(fed, fed, 2).tolist()[0] == [1, 2, 3]
