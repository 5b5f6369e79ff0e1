"""`livecaptions transcribe` as a user runs it: a real process, real files, the JSON contract, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest
import srt

from support.speech import error_rate


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=timeout)


def write_wav(path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())


def test_json_lines_hold_the_contract(speech):
    en = [c for c in speech if c.language == "en"][:2]
    p = cli("transcribe", "--json", "--language", "en", *[str(c.path) for c in en])
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(lines) == 2
    for line, clip in zip(lines, en):
        assert {"file", "language", "text", "segments", "audio_s", "wall_s", "rtf", "decode"} <= line.keys()
        assert line["file"] == str(clip.path) and line["language"] == "en"
        assert line["decode"]["forwards"] > 0 and line["decode"]["tokens"] >= line["decode"]["forwards"]
        assert abs(line["audio_s"] - clip.duration_s) < 0.05 and line["rtf"] == pytest.approx(line["wall_s"] / line["audio_s"], rel=0.01)
        assert line["segments"] and line["segments"][0]["start"] == 0.0
        assert error_rate([(clip.reference, line["text"])], "en") < 10


def test_long_file_is_split_at_silence_with_progress(speech):
    mp3 = speech[0].path.parent / "original" / "multilingual.mp3"  # 60 s: English, then German
    p = cli("transcribe", "--json", "--progress", str(mp3))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert len(out["segments"]) >= 2 and all(s["end"] - s["start"] <= 30.0 for s in out["segments"])
    assert out["segments"][-1]["end"] > 50
    assert "60/60 s" in p.stderr
    assert "Permission is hereby granted" in out["text"]


def test_word_timestamps_and_subtitles_cut_at_words(speech):
    """A 60 s file in two languages: --word-timestamps gives each segment its words, in order and inside it; and
    --subtitles cuts cues at word times into lines of at most --line-chars."""
    mp3 = speech[0].path.parent / "original" / "multilingual.mp3"
    p = cli("transcribe", "--json", "--word-timestamps", str(mp3))
    assert p.returncode == 0, p.stderr
    for seg in json.loads(p.stdout)["segments"]:
        words = seg["words"]
        assert " ".join(w["word"] for w in words) == seg["text"]
        assert all(seg["start"] <= w["start"] <= w["end"] <= seg["end"] for w in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))
    p = cli("transcribe", "--subtitles", "srt", "--line-chars", "30", str(mp3))
    assert p.returncode == 0, p.stderr
    cues = list(srt.parse(p.stdout))
    assert len(cues) > 20 and all(len(c.content) <= 30 or " " not in c.content for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:])) and cues[-1].end.total_seconds() <= 60.5


def test_plain_text_output(speech):
    p = cli("transcribe", "--model", "tiny.en", str(speech[0].path))
    assert p.returncode == 0, p.stderr
    assert "fellow Americans" in p.stdout
    assert p.stderr == ""  # nothing said that the user did not ask about (no progress off a terminal, no notes)
    p = cli("transcribe", "--model", "tiny.en", "--drafts", "mtp", str(speech[0].path))
    assert p.returncode == 0 and p.stderr.startswith("note: no MTP heads") and p.stderr.count("\n") == 1, p.stderr


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, speech):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not audio\n" * 100)
    write_wav(tmp_path / "zero-length.wav", np.zeros(0))
    write_wav(tmp_path / "all-zero.wav", np.zeros(16000 * 2))
    cases = {"empty.wav": "empty", "notes.txt": "not a readable audio file|not an audio file", "zero-length.wav": "no audio samples|0.000 s",
             "all-zero.wav": "every sample is zero", "missing.wav": "no such file"}
    for name, msg in cases.items():
        p = cli("transcribe", str(tmp_path / name))
        assert p.returncode != 0, name
        assert "Traceback" not in p.stderr and "error:" in p.stderr, p.stderr
        assert any(m in p.stderr for m in msg.split("|")), (name, p.stderr)
    # audio without speech is not bad input: empty text, success
    write_wav(tmp_path / "hiss.wav", np.random.default_rng(0).normal(0, 30, 16000 * 2))
    p = cli("transcribe", "--model", "tiny.en", str(tmp_path / "hiss.wav"))
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr == "", (p.stdout, p.stderr)
    # one bad file does not stop the good ones
    p = cli("transcribe", str(tmp_path / "empty.wav"), str(speech[0].path))
    assert p.returncode == 1 and "fellow Americans" in p.stdout
    for args, msg in [(["--model", "nosuchmodel"], "unknown model"), (["--model", "small"], "not bundled"),
                      (["--language", "xx"], "unknown language"), (["--device", "cuda"], "CUDA")]:
        if args[0] == "--device" and _has_cuda():
            continue
        p = cli("transcribe", *args, str(speech[0].path))
        assert p.returncode == 2 and "Traceback" not in p.stderr and msg in p.stderr, (args, p.stderr)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_closed_pipe_ends_quietly(speech):
    """`livecaptions transcribe --live --json FILE | head -3`: the reader leaves early; no traceback, as Unix tools."""
    cmd = f"{sys.executable} -m gateway.cli transcribe --live --speed 0 --json --model tiny.en {speech[0].path} | head -1"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert json.loads(p.stdout)["type"] == "session.started"
    assert p.stderr == "", p.stderr
