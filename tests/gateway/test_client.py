"""`livecaptions listen` and `gateway.client.listen` against a real server: captions of a real file, and a refused
session surfacing as a clear error."""
from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator

import pytest

from support.speech import error_rate
from gateway import events as ev
from gateway.client import ListenError, file_source, listen, listen_url
from tests.gateway.servers import JFK, LIVECAPTIONS, Server, serving

pytestmark = pytest.mark.timeout(300)
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("client") / "server.log") as s:
        yield s


def test_cli_prints_events_as_json(server: Server) -> None:
    out = subprocess.run([LIVECAPTIONS, "listen", "--url", server.http, "--json", "--speed", "10", "--language", "en",
                          "--stream", "cli", str(JFK)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.started" and kinds[-1] == "session.ended" and "caption.partial" in kinds
    finals = " ".join(e["text"] for e in events if e["type"] == "caption.final")
    assert error_rate([(REFERENCE, finals)], "en") <= 10, finals


def test_cli_prints_captions_for_people(server: Server) -> None:
    out = subprocess.run([LIVECAPTIONS, "listen", "--url", server.ws, "--speed", "0", "--no-partials", str(JFK)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines and all(line.startswith("[") and "s +" in line for line in lines), lines  # "[end +lag] text"
    said = " ".join(line.split("] ", 1)[1] for line in lines)  # a line per final: JFK's address comes in pieces
    assert error_rate([(REFERENCE, said)], "en") <= 10, said


def test_library_iterates_events_and_raises_on_refusal(server: Server) -> None:
    async def main() -> None:
        got = [e async for e in listen(server.ws, file_source(JFK, speed=0), language="en", stream="lib")]
        assert isinstance(got[0], ev.SessionStarted) and isinstance(got[-1], ev.SessionEnded)
        text = " ".join(e.text for e in got if isinstance(e, ev.CaptionFinal))
        assert error_rate([(REFERENCE, text)], "en") <= 10, text
        seen: list[ev.Event] = []
        with pytest.raises(ListenError) as refused:
            async for event in listen(server.ws, file_source(JFK), language="xx"):
                seen.append(event)
        assert refused.value.code == 4400 and isinstance(seen[-1], ev.Error) and "language" in str(refused.value)

    asyncio.run(main())


def test_cli_reports_a_refusal_and_an_unreadable_file(server: Server, tmp_path) -> None:
    out = subprocess.run([LIVECAPTIONS, "listen", "--url", server.ws, "--language", "xx", str(JFK)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "error: the server closed the session with 4400" in out.stderr, out.stderr
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio")
    out = subprocess.run([LIVECAPTIONS, "listen", "--url", server.ws, str(junk)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("error:") and "Traceback" not in out.stderr, out.stderr
    # a missing file is reported before anything connects: at once, not after the server's idle timeout
    out = subprocess.run([LIVECAPTIONS, "listen", "--url", "ws://127.0.0.1:9/", str(tmp_path / "missing.wav")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "missing.wav" in out.stderr and "connect" not in out.stderr.lower(), out.stderr


def test_listen_url() -> None:
    assert listen_url("http://h:8000", stream="a", partials=False) == "ws://h:8000/v1/listen?stream=a&partials=false"
    assert listen_url("wss://h/base/v1/listen/") == "wss://h/base/v1/listen"
    with pytest.raises(ValueError):
        listen_url("ftp://h")
