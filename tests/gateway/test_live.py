"""`livecaptions transcribe --live`: a real process playing a real clip, its JSON event lines, and the caption
rendering for people (in place on a terminal, finals only in a pipe)."""
from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys

from support.speech import error_rate
from gateway import events as ev
from gateway.printer import Printer


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_live_json_prints_every_event_in_order(speech):
    clip = next(c for c in speech if c.language == "en" and c.duration_s < 10)
    p = cli("transcribe", "--live", "--speed", "0", "--json", "--language", "en", str(clip.path))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert lines and all({"type", "stream", "seq"} <= line.keys() for line in lines)
    assert [ev.to_json(ev.from_json(line)) for line in lines] == lines  # exactly the event model
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    assert lines[0] == {"type": "session.started", "stream": clip.path.name, "seq": 0, "sample_rate": 16000,
                        "language": "en", "model": "base", "version": 1}
    assert lines[-1]["type"] == "session.ended" and abs(lines[-1]["end"] - clip.duration_s) < 0.05
    finals = [line for line in lines if line["type"] == "caption.final"]
    assert finals and all("segment" in f for f in finals)  # in pieces at the speaker's pauses
    assert error_rate([(clip.reference, " ".join(f["text"] for f in finals))], "en") < 10


def test_live_flags_are_checked_before_any_work(speech):
    p = cli("transcribe", "--live", str(speech[0].path), str(speech[1].path))
    assert p.returncode == 2 and "--live plays one file" in p.stderr and "Traceback" not in p.stderr
    p = cli("transcribe", "--live", "--speed", "-1", str(speech[0].path))
    assert p.returncode == 2 and "--speed" in p.stderr


EVENTS = [
    ev.SessionStarted("s", 0, sample_rate=16000, language="en", model="base"),
    ev.SpeechStarted("s", 1, segment=0, start=0.12),
    ev.CaptionPartial("s", 2, segment=0, text="and so", stable="", start=0.12, end=0.82),
    ev.CaptionPartial("s", 3, segment=0, text="and so my fellow", stable="and so", start=0.12, end=1.32),
    ev.SpeechStopped("s", 4, segment=0, end=2.33),
    ev.CaptionFinal("s", 5, segment=0, text="And so my fellow Americans.", start=0.12, end=2.33, language="en",
                    no_speech_prob=0.1, decode={"forwards": 7, "tokens": 7}),
    ev.SessionEnded("s", 6, end=3.0),
]


def render(tty: bool, as_json: bool = False) -> str:
    out = io.StringIO()
    printer = Printer(as_json, out, tty=tty)
    printer.clock = lambda: 2.74

    async def main():
        for e in EVENTS:
            await printer(e)

    asyncio.run(main())
    assert printer.counts == {"session.started": 1, "speech.started": 1, "caption.partial": 2, "speech.stopped": 1,
                              "caption.final": 1, "session.ended": 1}
    return out.getvalue()


def test_terminal_rewrites_partials_in_place_and_keeps_finals():
    text = render(tty=True)
    assert text == ("\r\x1b[K[ 0.82s +1.92s] and so"
                    "\r\x1b[K[ 1.32s +1.42s] and so my fellow"
                    "\r\x1b[K[ 2.33s +0.41s] And so my fellow Americans.\n")


def test_lag_is_shown_in_wall_seconds_at_any_speed():
    out = io.StringIO()
    printer = Printer(False, out, tty=False)
    printer.clock, printer.speed = lambda: 6.33, 10.0  # played at 10x: 4 s of audio past the end is 0.4 s of waiting
    asyncio.run(printer(EVENTS[5]))
    assert out.getvalue() == "[ 2.33s +0.40s] And so my fellow Americans.\n" and printer.lags["caption.final"] == [0.4]


def test_pipe_gets_finals_only_and_json_gets_everything():
    assert render(tty=False) == "[ 2.33s +0.41s] And so my fellow Americans.\n"
    lines = render(tty=False, as_json=True).splitlines()
    assert [json.loads(line) for line in lines] == [ev.to_json(e) for e in EVENTS]
    assert all(re.fullmatch(r"\{.*\}", line) for line in lines)
