"""The overlay: styling from the query string, and resuming (SSE Last-Event-ID) after its server restarts with
nothing missed and nothing twice, while captions go on arriving through another instance sharing Redis."""
from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from support.speech import clips
from gateway.media import decode_file
from tests.gateway.conftest import private_redis  # noqa: F401 (fixture)
from tests.gateway.servers import Server, pcm16
from tests.web.test_live import TIMEOUT_MS, finals

RATE = 16000
GAP = np.zeros(int(2.0 * RATE), dtype=np.float32)  # 2 s of silence: every clip ends its own segment


def test_overlay_styles_from_query(server, launch) -> None:
    page = launch().new_page(viewport={"width": 1280, "height": 720})
    page.goto(server.http + "/overlay?stream=style-test&size=60&color=ff0&bg=none&font=serif&position=top"
              "&align=left&lines=3")
    box = page.locator("[data-testid=overlay]")
    style = box.evaluate("el => { const s = getComputedStyle(el); return [s.fontSize, s.color, s.justifyContent, "
                         "s.textAlign, s.fontFamily] }")
    assert style == ["60px", "rgb(255, 255, 0)", "flex-start", "left", "serif"]
    # Values that are not CSS are ignored, not injected.
    page.goto(server.http + "/overlay?stream=style-test&color=red;}body{display:none&size=huge")
    assert box.evaluate("el => getComputedStyle(el).color") == "rgb(255, 255, 255)"
    assert page.evaluate("() => getComputedStyle(document.body).display") == "block"


class Feeder:
    """An ingest client in a thread: streams PCM to /v1/listen and records every event with its arrival time."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._stack = ExitStack()  # websockets wants its connection used as a context manager
        self.ws = self._stack.enter_context(connect(url))
        self.events: list[tuple[float, dict]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.ws:
                self.events.append((time.monotonic(), json.loads(message)))
        except ConnectionClosed:
            pass

    def play(self, audio: np.ndarray, speed: float = 4.0, frame_ms: int = 40) -> None:
        pcm, step = pcm16(audio), RATE * 2 * frame_ms // 1000
        t0 = time.monotonic()
        for i in range(0, len(pcm), step):
            self.ws.send(pcm[i:i + step])
            time.sleep(max(0.0, t0 + (i + step) / (RATE * 2) / speed - time.monotonic()))

    def finals(self) -> list[tuple[float, str]]:
        """The turns' texts: a line each on the overlay."""
        return [(t, e["text"].strip()) for t, e in self.events if e["type"] == "turn.ended"]

    def wait_finals(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.finals()) < n:
            assert time.monotonic() < deadline, f"{len(self.finals())} finals, waited for {n}"
            time.sleep(0.1)

    def close(self) -> None:
        self.ws.send(json.dumps({"type": "close"}))
        self.reader.join(timeout=90)
        self._stack.close()


def test_overlay_resumes_after_its_server_restarts(private_redis, launch, tmp_path: Path) -> None:  # noqa: F811
    speech = {c.path.name: decode_file(c.path) for c in clips() if c.language == "en" and c.duration_s < 12}
    redis = ("--redis-url", private_redis.url)
    # A serves the overlay (it decodes nothing: the small model loads fastest), B takes the audio.
    a = Server(tmp_path / "a.log", *redis, "--model", "tiny.en")
    b = Server(tmp_path / "b.log", *redis)
    feeder = None
    try:
        a.wait_ready()
        b.wait_ready()
        overlay = launch().new_page(viewport={"width": 1280, "height": 720})
        overlay.goto(a.http + "/overlay?stream=restart&lines=50&partials=0")
        overlay.wait_for_function("() => document.body.dataset.state === 'live'", timeout=TIMEOUT_MS)
        feeder = Feeder(b.ws + "/v1/listen?stream=restart&language=en")

        feeder.play(np.concatenate([speech["jfk.wav"], GAP]))
        feeder.wait_finals(1)
        overlay.wait_for_selector("[data-testid=overlay-line]", timeout=TIMEOUT_MS)

        a.stop()  # the overlay loses its server ...
        overlay.wait_for_function("() => document.body.dataset.state !== 'live'", timeout=TIMEOUT_MS)
        feeder.play(np.concatenate([speech["one-two-three.wav"], GAP, speech["librispeech-1995-1837-0001.wav"], GAP]))
        feeder.wait_finals(3)
        missed_until = time.monotonic()  # ... while these finals are published
        a = Server(tmp_path / "a2.log", *redis, "--model", "tiny.en", port=a.port)
        a.wait_ready()
        assert all(t < missed_until for t, _ in feeder.finals()[1:3])

        feeder.play(np.concatenate([speech["jfk.wav"], GAP]))
        feeder.close()
        expected = [text for _, text in feeder.finals()]
        assert len(expected) >= 4
        overlay.wait_for_function("n => document.querySelectorAll('[data-testid=overlay-line]').length >= n",
                                  arg=len(expected), timeout=TIMEOUT_MS)
        time.sleep(1)  # a duplicate would arrive right behind
        assert finals(overlay, "overlay-line") == expected
    finally:
        if feeder is not None:
            feeder._stack.close()
        a.stop()
        b.stop()
