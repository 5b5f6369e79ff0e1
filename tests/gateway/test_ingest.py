"""The ingest WebSocket's error contract on a real server: each bad input gets its error event and close code, and a
healthy stream on the same server, running all along, is unaffected."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest
from websockets.asyncio.client import connect

from support.speech import error_rate
from tests.gateway.servers import Server, jfk_pcm, receive_all, serving, stream_audio

pytestmark = pytest.mark.timeout(300)
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
MAX_FRAME = 8192

# name -> (query string, frames to send, expected close code, expected error code)
BAD = {
    "odd byte count": ("", [b"\x00" * 3201], 1007, "bad_audio"),
    "oversize frame": ("", [b"\x00" * (MAX_FRAME + 2)], 1009, "frame_too_big"),
    "NaN samples in pcm_f32le": ("encoding=pcm_f32le", [np.array([0.1, np.nan, -0.1] * 400, "<f4").tobytes()], 1007,
                                 "bad_audio"),
    "invalid JSON control": ("", ["{not json"], 1003, "bad_control"),
    "deeply nested JSON control": ("", ["[" * 4000 + "]" * 4000], 1003, "bad_control"),
    "non-object JSON control": ("", ["[1, 2]"], 1003, "bad_control"),
    "unknown control type": ("", [json.dumps({"type": "rewind"})], 1008, "bad_control"),
    "bad sample_rate": ("sample_rate=4000", [], 4400, "bad_request"),
    "non-integer channels": ("channels=two", [], 4400, "bad_request"),
    "unknown encoding": ("encoding=mp3", [], 4400, "bad_request"),
    "unknown language": ("language=xx", [], 4400, "bad_request"),
    "unknown parameter": ("rate=16000", [], 4400, "bad_request"),
    "words not a boolean": ("words=maybe", [], 4400, "bad_request"),
    "turn shorter than the post-roll": ("turn_ms=50", [], 4400, "bad_request"),
    "busy stream id": ("stream=healthy", [], 4409, "stream_busy"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve") / "server.log", "--max-frame-bytes", str(MAX_FRAME),
                 "--idle-timeout", "3") as s:
        yield s


async def bad_client(server: Server, query: str, frames: list) -> tuple[list[dict], int | None]:
    async with connect(f"{server.ws}/v1/listen?{query}") as ws:
        for frame in frames:
            await asyncio.sleep(0.3)  # some good audio first would change nothing: the session is live either way
            await ws.send(frame)
        events = await receive_all(ws, timeout=30)
        return events, ws.close_code


@pytest.fixture(scope="module")
def results(server: Server) -> dict:
    """The bad clients, one after another, while a healthy stream runs at twice real time alongside."""

    async def main() -> dict:
        async with connect(f"{server.ws}/v1/listen?stream=healthy&language=en") as healthy:
            received = asyncio.create_task(receive_all(healthy))
            sending = asyncio.create_task(stream_audio(healthy, jfk_pcm(), frame_ms=100, speed=2))
            await asyncio.sleep(0.5)  # healthy is registered: the busy-id case needs it live
            bad = {name: await bad_client(server, query, frames) for name, (query, frames, _, _) in BAD.items()}
            assert not sending.done(), "the bad cases must run while the healthy stream is live"
            await sending
            await healthy.send(json.dumps({"type": "keepalive"}))
            await healthy.send(json.dumps({"type": "close"}))
            return {"bad": bad, "healthy": await received, "healthy_code": healthy.close_code}

    return asyncio.run(main())


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gets_its_error_event_and_close_code(results, name):
    _, _, close, code = BAD[name]
    events, got = results["bad"][name]
    assert got == close
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == code and errors[0]["message"]
    if close != 4400 and close != 4409:  # refused before a session began: only the error; else the session ends
        assert events[0]["type"] == "session.started" and events[-1]["type"] == "session.ended"
        assert [e["seq"] for e in events] == list(range(len(events)))


def test_words_come_with_finals_of_streams_that_ask(server, results):
    """?words=true: each final carries its words, timed inside it, in order, spelling out its text; a stream that
    did not ask gets finals without a `words` field."""
    async def main() -> list[dict]:
        async with connect(f"{server.ws}/v1/listen?language=en&partials=false&words=true") as ws:
            await stream_audio(ws, jfk_pcm(), frame_ms=100, speed=10)
            await ws.send(json.dumps({"type": "close"}))
            return await receive_all(ws)

    finals = [e for e in asyncio.run(main()) if e["type"] == "caption.final"]
    assert finals
    for f in finals:
        words = f["words"]
        assert " ".join(w["word"] for w in words) == f["text"]
        assert all(f["start"] <= w["start"] <= w["end"] <= f["end"] and 0 < w["probability"] <= 1 for w in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))
    assert all("words" not in e for e in results["healthy"] if e["type"] == "caption.final")


def test_audio_frames_are_not_compressed(server):
    """The server declines permessage-deflate, which clients offer by default: PCM barely compresses, and inflating
    every audio frame would cost the event loop that serves all streams."""
    async def main() -> str | None:
        async with connect(f"{server.ws}/v1/listen?language=en", compression="deflate") as ws:
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert asyncio.run(main()) is None


def test_healthy_stream_alongside_is_unaffected(results):
    events = results["healthy"]
    assert results["healthy_code"] == 1000
    assert not [e for e in events if e["type"] == "error"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "session.started" and events[-1]["type"] == "session.ended"
    text = " ".join(e["text"] for e in events if e["type"] == "caption.final")
    assert error_rate([(REFERENCE, text)], "en") <= 10, text


def test_flush_forces_a_final_and_config_changes_the_next_decodes(server):
    async def main() -> tuple[list[dict], int | None]:
        async with connect(f"{server.ws}/v1/listen?language=en&partials=false") as ws:
            # "And so my fellow Americans", then no silence: only the flush can end the utterance
            await stream_audio(ws, jfk_pcm()[:16000 * 2 * 3], frame_ms=20, speed=10)
            for bad in ({"type": "config", "language": "english"}, {"type": "config", "endpointing_ms": 300},
                        {"type": "config", "partials": "no"}):
                await ws.send(json.dumps(bad))
            await ws.send(json.dumps({"type": "config", "language": "zh", "prompt": "新闻"}))
            await ws.send(json.dumps({"type": "flush"}))
            events = []
            async with asyncio.timeout(60):
                while not events or events[-1]["type"] != "caption.final":
                    events.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "close"}))
            return events + await receive_all(ws), ws.close_code

    events, code = asyncio.run(main())
    assert code == 1000
    kinds = [e["type"] for e in events]
    assert "caption.partial" not in kinds
    assert [e["code"] for e in events if e["type"] == "error"] == ["config_invalid"] * 3  # each refused, none fatal
    configured = events[kinds.index("session.configured")]
    assert (configured["language"], configured["prompt"], configured["partials"]) == ("zh", "新闻", False)
    final = events[kinds.index("caption.final")]
    assert final["language"] == "zh" and kinds.index("session.configured") < kinds.index("caption.final")
    assert kinds[-1] == "session.ended"


def test_a_forced_end_of_turn_gives_the_final_at_once(server):
    """Mid-sentence, with endpoint and turn far away: a flush ends the turn now, its final and turn.ended follow
    without another byte of audio, and the stream goes on."""
    async def main() -> list[dict]:
        query = "language=en&partials=false&endpointing_ms=3000&turn_ms=5000"
        async with connect(f"{server.ws}/v1/listen?{query}") as ws:
            await stream_audio(ws, jfk_pcm()[:16000 * 2 * 2], frame_ms=20, speed=10)  # "And so my fellow"
            await ws.send(json.dumps({"type": "flush"}))
            events = []
            async with asyncio.timeout(60):
                while not events or events[-1]["type"] != "turn.ended":
                    events.append(json.loads(await ws.recv()))
            await stream_audio(ws, jfk_pcm()[16000 * 2 * 2:], frame_ms=20, speed=10)
            await ws.send(json.dumps({"type": "close"}))
            return events + await receive_all(ws)

    events = asyncio.run(main())
    kinds = [e["type"] for e in events]
    final, turn = events[kinds.index("caption.final")], events[kinds.index("turn.ended")]
    assert "fellow" in final["text"].lower() and final["end"] <= 2.0
    assert turn["forced"] and turn["text"] == final["text"] and kinds.index("caption.final") < kinds.index("turn.ended")
    rest = [e for e in events[kinds.index("turn.ended"):] if e["type"] == "turn.ended"]
    assert rest[-1]["start"] >= 2.0 and "your country" in rest[-1]["text"]  # the next turn, ended by the close


def test_silent_client_times_out_with_its_finals(server):
    async def main() -> tuple[list[dict], int | None]:
        async with connect(f"{server.ws}/v1/listen?language=en") as ws:
            await stream_audio(ws, jfk_pcm()[:16000 * 2 * 4], frame_ms=20, speed=10)
            return await receive_all(ws, timeout=60), ws.close_code

    events, code = asyncio.run(main())
    assert code == 4408
    kinds = [e["type"] for e in events]
    assert [e["code"] for e in events if e["type"] == "error"] == ["idle_timeout"]
    assert "caption.final" in kinds and kinds[-1] == "session.ended"
