"""Overload at the server: more live audio than the CPU can preview. Partials are dropped (a stream's stale
preview is replaced by its newer one), every final still arrives with the right words, and /healthz keeps
answering while the engine is saturated."""
from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from support.speech import error_rate
from gateway.session import SessionConfig
from tests.gateway.servers import get, jfk_pcm, receive_all, serving, stream_audio

pytestmark = pytest.mark.timeout(400)
STREAMS, SPEED = 6, 6.0  # six streams at six times real time: 36 s of audio a second into a 2-core CPU
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def test_overload_drops_partials_never_finals_and_stays_responsive(tmp_path):
    jfk = jfk_pcm()
    pcm = jfk + bytes(2 * 16000 * 2) + jfk  # two utterances, 2 s apart: two finals per stream

    async def one(server, i: int) -> list[dict]:
        async with connect(f"{server.ws}/v1/listen?stream=load-{i}&language=en") as ingest:
            received = asyncio.create_task(receive_all(ingest, timeout=300))
            await stream_audio(ingest, pcm, frame_ms=40, speed=SPEED)
            await ingest.send(json.dumps({"type": "close"}))
            return await received

    async def health(server, stop: asyncio.Event) -> list[float]:
        waits = []
        while not stop.is_set():
            t0 = time.perf_counter()
            status, _ = await asyncio.to_thread(get, server.http + "/healthz", 5)
            assert status == 200
            waits.append(time.perf_counter() - t0)
            await asyncio.sleep(0.25)
        return waits

    async def main(server) -> tuple[list[list[dict]], list[float]]:
        stop = asyncio.Event()
        probe = asyncio.create_task(health(server, stop))
        events = await asyncio.gather(*[one(server, i) for i in range(STREAMS)])
        stop.set()
        return events, await probe

    with serving(tmp_path / "server.log") as server:
        events, waits = asyncio.run(main(server))
        metrics = get(server.http + "/metrics")[1].decode()
    due = 2 * 11.0 / (SessionConfig.partial_interval_ms / 1000)  # partials that come due per stream
    for stream in events:
        finals = [e["text"] for e in stream if e["type"] == "caption.final"]
        assert len(finals) >= 2, finals  # finals are never shed (JFK twice, in pieces at his pauses)
        assert error_rate([(REFERENCE + " " + REFERENCE, " ".join(finals))], "en") < 10
        # partials are: a session keeps only its newest waiting one while one decodes
        assert 0 < sum(e["type"] == "caption.partial" for e in stream) < due / 2
    assert re.search(r'livecaptions_engine_partials_dropped\{reason="superseded"\} \d', metrics)
    assert len(waits) > 4 and max(waits) < 1.0, waits  # the event loop answers while the engine is saturated
    assert np.median(waits) < 0.1
