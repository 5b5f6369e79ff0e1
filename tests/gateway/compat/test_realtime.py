"""Realtime transcription sessions on a real server: OpenAI's protocol through the official `openai` client, StepFun's
through a plain WebSocket, each in server-VAD and in manual-commit mode, streaming JFK at real-time pace; and the
error events for bad client events, sent while those four sessions run."""
from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import soxr
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support.speech import clips, error_rate
from gateway.media import decode_file
from tests.gateway.servers import JFK, Server, get, pcm16, receive_all, serving

pytestmark = pytest.mark.timeout(300)
KEY = "realtime-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
REFERENCE = next(c.reference for c in clips() if c.path == JFK)
CHUNK_S = 0.1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve") / "server.log", "--api-key", KEY) as s:
        yield s


class OpenAIClient:
    """The official client, unchanged but for base_url: its typed resources send, its parser reads."""

    path = "/v1/realtime?intent=transcription"

    def __init__(self, server: Server) -> None:
        self.client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key=KEY)

    async def __aenter__(self) -> OpenAIClient:
        self.manager = self.client.realtime.connect(extra_query={"intent": "transcription"})
        self.conn = await self.manager.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.manager.__aexit__(*exc)

    def session(self, manual: bool) -> dict[str, Any]:
        return {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": None if manual else {"type": "server_vad", "silence_duration_ms": 700}}}}

    async def update(self, session: dict[str, Any]) -> None:
        await self.conn.session.update(session=session)  # type: ignore[arg-type]

    async def append(self, audio: str) -> None:
        await self.conn.input_audio_buffer.append(audio=audio)

    async def commit(self) -> None:
        await self.conn.input_audio_buffer.commit()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        async for event in self.conn:
            yield event.to_dict()


class StepFunClient:
    """StepFun's realtime ASR, as its documentation's clients speak it: JSON text frames on a WebSocket."""

    path = "/v1/realtime/asr/stream"

    def __init__(self, server: Server, path: str | None = None) -> None:
        self.url = server.ws + (path or self.path)
        self.n = 0

    async def __aenter__(self) -> StepFunClient:
        self.manager = connect(self.url, additional_headers=AUTH)
        self.ws = await self.manager.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.manager.__aexit__(*exc)

    def session(self, manual: bool) -> dict[str, Any]:
        return {"audio": {"input": {
            "format": {"type": "pcm", "codec": "pcm_s16le", "rate": 16000, "bits": 16, "channel": 1},
            "transcription": {"model": "stepaudio-2.5-asr", "language": "en", "enable_itn": True},
            "turn_detection": None if manual else {"type": "server_vad", "silence_duration_ms": 700}}}}

    async def send(self, event: dict[str, Any]) -> None:
        self.n += 1
        await self.ws.send(json.dumps({"event_id": f"event_{self.n}", **event}))

    async def update(self, session: dict[str, Any]) -> None:
        await self.send({"type": "session.update", "session": session})

    async def append(self, audio: str) -> None:
        await self.send({"type": "input_audio_buffer.append", "audio": audio})

    async def commit(self) -> None:
        await self.send({"type": "input_audio_buffer.commit"})

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for message in self.ws:
                yield json.loads(message)
        except ConnectionClosed:
            return


def settled(events: list[dict[str, Any]], manual: bool) -> bool:
    """Every committed item completed, and (server VAD) no speech still open."""
    kinds = [e["type"] for e in events]
    committed = {e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"}
    completed = {e["item_id"] for e in events if e["type"].endswith("transcription.completed")}
    open_speech = kinds.count("input_audio_buffer.speech_started") - kinds.count("input_audio_buffer.speech_stopped")
    return bool(committed) and committed == completed and (manual or open_speech == 0)


async def converse(client: OpenAIClient | StepFunClient, audio: np.ndarray, rate: int, manual: bool) -> list[dict]:
    """Configure, stream `audio` at real-time pace in 100 ms appends (then 1.5 s of silence with server VAD, or a
    commit), and collect every server event until the turns are all completed."""
    events: list[dict[str, Any]] = []
    async with client:
        async def read() -> None:
            async for event in client.events():
                events.append(event)

        reader = asyncio.create_task(read())
        await client.update(client.session(manual))
        pcm = pcm16(audio if manual else np.concatenate([audio, np.zeros(int(1.5 * rate), np.float32)]))
        step = int(rate * CHUNK_S) * 2
        t0 = time.monotonic()
        for i in range(0, len(pcm), step):
            await client.append(base64.b64encode(pcm[i:i + step]).decode())
            await asyncio.sleep(max(0.0, t0 + (i + step) / (2 * rate) - time.monotonic()))
        if manual:
            await client.commit()
        async with asyncio.timeout(90):
            while not settled(events, manual):
                await asyncio.sleep(0.1)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return events


# name -> (client event: a dict, or a raw frame), error code, param
BAD: dict[str, tuple[Any, str, str | None]] = {
    "invalid JSON": ("{not json", "invalid_json", None),
    "not an object": ("[1, 2]", "invalid_json", None),
    "deeply nested JSON": ("[" * 100000 + "]" * 100000, "invalid_json", None),  # was RecursionError: close 1011
    "unknown event type": ({"type": "response.create"}, "invalid_value", "type"),
    "append without audio": ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    "invalid base64": ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_value", "audio"),
    "G.711 format": ({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
                     "invalid_value", "session.audio.input.format.type"),
    "unknown model": ({"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "model": "gpt-5-ultra"}}}}}, "model_not_found", "session.audio.input.transcription.model"),
    "unknown language": ({"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "language": "xx"}}}}}, "invalid_value", "session.audio.input.transcription.language"),
    "unknown turn detection": ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "push_to_talk"}}}}}, "invalid_value", "session.audio.input.turn_detection.type"),
    "prompt over the limit": ({"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "prompt": "livecaptions " * 400}}}}}, "invalid_value", None),
    "conversation session": ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value",
                             "session.type"),
    "binary frame": (b"\x00\x01", "invalid_value", None),
    # last: it switches the session to manual commits, where committing nothing is refused
    "commit of an empty buffer": ([{"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}}, {"type": "input_audio_buffer.commit"}], "input_audio_buffer_commit_empty", None),
}


async def bad_events(server: Server) -> dict[str, Any]:
    """Each bad event in turn on one session -> its error event; then the session still takes an update."""
    out: dict[str, Any] = {}
    async with connect(f"{server.ws}/v1/realtime?intent=transcription", additional_headers=AUTH) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        for name, (event, _, _) in BAD.items():
            for frame in event if isinstance(event, list) else [event]:
                await ws.send(json.dumps({"event_id": f"evt_{name}", **frame}) if isinstance(frame, dict) else frame)
            while (reply := json.loads(await ws.recv()))["type"] != "error":
                assert reply["type"] == "session.updated"
            out[name] = reply
        await ws.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {"transcription": {
            "language": "zh"}}}}}))
        out["after"] = json.loads(await ws.recv())
    return out


async def oversize(server: Server) -> tuple[list[dict], int | None]:
    """A 600 KB append, over the server's --max-frame-bytes (256 KiB): closed as ingest closes such a frame."""
    async with connect(f"{server.ws}/v1/realtime?intent=transcription", additional_headers=AUTH) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 600_000}))
        return await receive_all(ws, timeout=30), ws.close_code


async def refused(server: Server, path: str, headers: dict[str, str]) -> tuple[list[dict], int | None]:
    async with connect(server.ws + path, additional_headers=headers) as ws:
        return await receive_all(ws, timeout=30), ws.close_code


@pytest.fixture(scope="module")
def results(server: Server) -> dict[str, Any]:
    """The four sessions at once, the bad events alongside, then refused connections."""
    audio = decode_file(JFK)
    audio24 = soxr.resample(audio, 16000, 24000).astype(np.float32)

    async def main() -> dict[str, Any]:
        runs = await asyncio.gather(
            converse(OpenAIClient(server), audio24, 24000, manual=False),
            converse(OpenAIClient(server), audio24, 24000, manual=True),
            converse(StepFunClient(server), audio, 16000, manual=False),
            converse(StepFunClient(server), audio, 16000, manual=True),
            bad_events(server))
        return {"openai vad": runs[0], "openai manual": runs[1], "stepfun vad": runs[2], "stepfun manual": runs[3],
                "bad": runs[4],
                "wrong intent": await refused(server, "/v1/realtime?intent=conversation", AUTH),
                "unknown model": await refused(server, "/v1/realtime?intent=transcription&model=nova-3", AUTH),
                "wrong key": await refused(server, "/v1/realtime?intent=transcription",
                                           {"Authorization": "Bearer nope"}),
                "oversize event": await oversize(server)}

    return asyncio.run(main())


def items(events: list[dict[str, Any]]) -> list[str]:
    return [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]


@pytest.mark.parametrize("run", ["openai vad", "openai manual", "stepfun vad", "stepfun manual"])
def test_session_transcribes_the_clip(results, run):
    events, manual, stepfun = results[run], run.endswith("manual"), run.startswith("stepfun")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.created" and "session.updated" in kinds
    session = next(e for e in events if e["type"] == "session.updated")["session"]
    assert session["audio"]["input"]["format"] == (
        {"type": "pcm", "codec": "pcm_s16le", "rate": 16000, "bits": 16, "channel": 1} if stepfun
        else {"type": "audio/pcm", "rate": 24000})
    assert session["audio"]["input"]["turn_detection"] == (None if manual else {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 200, "silence_duration_ms": 700})
    assert ("input_audio_buffer.speech_started" in kinds) is not manual
    ids = items(events)
    assert len(ids) == 1 if manual else len(ids) >= 1
    transcripts = []
    for n, item in enumerate(ids):
        mine = [(i, e) for i, e in enumerate(events) if e.get("item_id") == item or e.get("item", {}).get("id") == item]
        order = [e["type"] for _, e in mine if not e["type"].endswith(".delta")]
        expected = ["input_audio_buffer.committed", "conversation.item.created",
                    "conversation.item.input_audio_transcription.completed"]
        if not manual:
            expected = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", *expected]
        assert order == expected, order
        created = next(e for _, e in mine if e["type"] == "conversation.item.created")
        assert created["previous_item_id"] == (ids[n - 1] if n else None)
        assert created["item"]["role"] == "user" and created["item"]["type"] == "message"
        completed = mine[-1][1]
        assert all(i < mine[-1][0] for i, e in mine if e["type"].endswith(".delta"))  # no delta after completed
        usage = completed["usage"]
        assert usage["type"] == "tokens" and usage["input_token_details"]["audio_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        transcripts.append(completed["transcript"])
    assert error_rate([(REFERENCE, " ".join(transcripts))], "en") <= 10, transcripts
    deltas = [e for e in events if e["type"].endswith(".delta")]
    assert deltas, "deltas stream while the clip plays"
    if stepfun:  # the confirmed text and the tail still being heard
        assert all("text" in d and "stash" in d for d in deltas)
    else:  # an item's deltas add up to its completed transcript, as OpenAI's clients assume
        assert all(d["delta"] for d in deltas)
        for item, transcript in zip(ids, transcripts):
            assert "".join(d["delta"] for d in deltas if d["item_id"] == item) == transcript


def test_viewers_see_a_realtime_stream(results, server):
    session_id = results["stepfun manual"][0]["session"]["id"]
    status, body = get(urllib.request.Request(f"{server.http}/v1/streams/{session_id}/captions.srt", headers=AUTH))
    assert status == 200 and "country" in body.decode(), body


@pytest.mark.parametrize("name", BAD)
def test_bad_event_gets_an_error_and_the_session_goes_on(results, name):
    _, code, param = BAD[name]
    event = results["bad"][name]
    assert set(event) == {"type", "event_id", "error"}
    assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
    assert event["error"]["type"] == "invalid_request_error" and event["error"]["message"]
    assert (event["error"]["code"], event["error"]["param"]) == (code, param)
    assert event["error"]["event_id"] == (f"evt_{name}" if isinstance(BAD[name][0], (dict, list)) else None)
    after = results["bad"]["after"]
    assert after["type"] == "session.updated"
    assert after["session"]["audio"]["input"]["transcription"]["language"] == "zh"


@pytest.mark.parametrize("name, close, code", [("wrong intent", 4400, "invalid_value"),
                                               ("unknown model", 4400, "model_not_found"),
                                               ("wrong key", 4401, "unauthorized"),
                                               ("oversize event", 1009, "frame_too_big")])
def test_refused_connection(results, name, close, code):
    events, got = results[name]
    assert got == close
    assert len(events) == 1 and events[0]["type"] == "error"
    assert code in (events[0].get("code"), events[0].get("error", {}).get("code"))
