"""Deepgram's live protocol on /v1/listen, driven by Deepgram's own Python SDK (`deepgram-sdk`) pointed at a real
server: interim and final results for JFK at real-time pace, a WAV file streamed with Finalize, the handshake
refusals as HTTP statuses, and the in-stream errors."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.speech import SPEECH, clips, error_rate
from tests.gateway.servers import Server, get, jfk_pcm, receive_all, serving

with warnings.catch_warnings():  # the SDK imports websockets' deprecated InvalidStatusCode alias: its own business
    warnings.simplefilter("ignore", DeprecationWarning)
    import deepgram.listen.v1.client  # noqa: F401

pytestmark = pytest.mark.timeout(300)
KEY = "deepgram-test-key"
AUTH = {"Authorization": f"Token {KEY}"}  # Deepgram's scheme
LIBRI = SPEECH / "librispeech-1995-1837-0001.wav"
REFERENCE = {c.path.name: c.reference for c in clips()}
JFK_TEXT, LIBRI_TEXT = REFERENCE["jfk.wav"], REFERENCE[LIBRI.name]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve") / "server.log", "--api-key", KEY) as s:
        yield s


def client(server: Server, key: str = KEY) -> AsyncDeepgramClient:
    """Deepgram's client, unchanged but for the environment's URLs."""
    env = DeepgramClientEnvironment(base=server.http, production=server.ws, agent=server.ws, agent_rest=server.http)
    return AsyncDeepgramClient(api_key=key, environment=env)


async def collect(connection: Any) -> list[dict[str, Any]]:
    return [m.model_dump() async for m in connection]


async def live_jfk(server: Server) -> tuple[list[dict[str, Any]], bytes]:
    """JFK at real-time pace plus 2 s of silence, in 100 ms messages; KeepAlive, then CloseStream."""
    pcm = jfk_pcm() + bytes(2 * 16000 * 2)
    async with client(server).listen.v1.connect(
            model="nova-3", language="en-US", encoding="linear16", sample_rate=16000, channels=1,
            interim_results="true", utterance_end_ms="1000", vad_events="true", smart_format="true",
            request_options={"additional_query_parameters": {"stream": "dg-jfk"}}) as connection:
        received = asyncio.create_task(collect(connection))
        t0, step = time.monotonic(), 3200
        for i in range(0, len(pcm), step):
            await connection.send_media(pcm[i:i + step])
            await asyncio.sleep(max(0.0, t0 + (i + step) / 32000 - time.monotonic()))
        await connection.send_keep_alive()
        await connection.send_close_stream()
        return await asyncio.wait_for(received, 60), pcm


async def wav_finalize(server: Server) -> list[dict[str, Any]]:
    """A WAV file as it is on disk, no encoding given, as fast as it can go; Finalize ends its utterance (no
    trailing silence), then CloseStream."""
    async with client(server).listen.v1.connect(model="nova-2", language="en", interim_results="false") as connection:
        received = asyncio.create_task(collect(connection))
        data = LIBRI.read_bytes()
        for i in range(0, len(data), 8000):
            await connection.send_media(data[i:i + 8000])
        await connection.send_finalize()
        await asyncio.sleep(0.5)
        await connection.send_close_stream()
        return await asyncio.wait_for(received, 120)


async def bad_stream(server: Server) -> tuple[list[dict[str, Any]], int | None]:
    """An unknown text message, deeply nested JSON and a Configure (answered, the stream goes on), then bytes that
    are not audio."""
    async with connect(f"{server.ws}/v1/listen?model=nova-3", additional_headers=AUTH) as ws:
        await ws.send("hello")
        await ws.send("[" * 100000 + "]" * 100000)  # was a RecursionError: close 1011
        await ws.send(json.dumps({"type": "Configure", "keyterms": ["livecaptions"]}))
        await asyncio.sleep(0.5)
        await ws.send(b"MP3 or anything else but a WAV header")
        return await receive_all(ws, timeout=30), ws.close_code


async def refusal(server: Server, query: str, headers: dict[str, str] = AUTH) -> tuple[int, Any]:
    try:
        async with connect(f"{server.ws}/v1/listen?{query}", additional_headers=headers) as ws:
            return 101, (await receive_all(ws, timeout=30), ws.close_code)
    except InvalidStatus as e:
        return e.response.status_code, json.loads(e.response.body or b"{}")


# name -> (query string, HTTP status of the refused handshake)
REFUSED = {
    "unsupported encoding": ("model=nova-3&encoding=mulaw&sample_rate=8000", 400),
    "encoding without sample_rate": ("model=nova-3&encoding=linear16", 400),
    "unknown model": ("model=gpt-9-audio", 400),
    "multichannel": ("model=nova-3&encoding=linear16&sample_rate=16000&multichannel=true", 400),
    "unknown language": ("model=nova-3&language=xx", 400),
    "too many channels": ("model=nova-3&encoding=linear16&sample_rate=16000&channels=9", 400),
    "utterance_end_ms under 1000": ("model=nova-3&interim_results=true&utterance_end_ms=10", 400),
    "busy stream id": ("model=nova-3&stream=dg-jfk", 409),
}


@pytest.fixture(scope="module")
def results(server: Server) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        live = asyncio.create_task(live_jfk(server))
        await asyncio.sleep(1.0)  # dg-jfk is live: the busy-id refusal needs it
        wav, bad = await asyncio.gather(wav_finalize(server), bad_stream(server))
        refused = {name: await refusal(server, query) for name, (query, _) in REFUSED.items()}
        assert not live.done(), "the refusals must run while the live stream is on"
        wrong_key = await refusal(server, "model=nova-3", {"Authorization": "Token wrong"})
        messages, pcm = await live
        return {"live": messages, "pcm": pcm, "wav": wav, "bad": bad, "refused": refused, "wrong key": wrong_key}

    return asyncio.run(main())


def test_sdk_live_client_gets_interim_and_final_results(results):
    messages = results["live"]
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "Metadata"
    interim = [m for m in messages if m["type"] == "Results" and not m["is_final"]]
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert interim and finals, kinds
    assert all(m["speech_final"] and not m["from_finalize"] for m in finals)
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    assert error_rate([(JFK_TEXT, text)], "en") <= 10, text
    for m in interim + finals:
        alternative = m["channel"]["alternatives"][0]
        assert m["channel_index"] == [0, 1] and m["duration"] > 0 and m["start"] >= 0
        assert [w["punctuated_word"] for w in alternative["words"]] == alternative["transcript"].split()
        assert m["metadata"]["model_info"]["name"] == "nova-3"
    for m in finals:  # timed from the cross-attention: in order, inside the result, not overlapping
        words = m["channel"]["alternatives"][0]["words"]
        assert all(m["start"] <= w["start"] <= w["end"] <= m["start"] + m["duration"] + 1e-3 for w in words), words
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:])) and all(0 < w["confidence"] <= 1 for w in words)
    # UtteranceEnd after the clip's last final: 2 s of silence is more than utterance_end_ms
    last_final = max(i for i, m in enumerate(messages) if m["type"] == "Results" and m["is_final"])
    assert "UtteranceEnd" in kinds[last_final:]
    end = messages[kinds.index("UtteranceEnd", last_final)]
    assert end["last_word_end"] == finals[-1]["channel"]["alternatives"][0]["words"][-1]["end"]
    metadata = messages[-1]
    assert metadata["duration"] == pytest.approx(13.0, abs=0.01) and metadata["channels"] == 1
    assert metadata["sha256"] == hashlib.sha256(results["pcm"]).hexdigest()
    assert {m["metadata"]["request_id"] for m in finals} == {metadata["request_id"]}


def test_viewers_see_a_deepgram_stream(results, server):
    status, body = get(urllib.request.Request(f"{server.http}/v1/streams/dg-jfk/captions.srt",
                                              headers={"Authorization": f"Bearer {KEY}"}))
    assert status == 200 and "country" in body.decode(), body


def test_wav_stream_and_finalize(results):
    messages = results["wav"]
    finals = [m for m in messages if m["type"] == "Results"]
    assert finals and all(m["is_final"] for m in finals), "interim_results=false: finals only"
    assert finals[-1]["from_finalize"] and not finals[-1]["speech_final"]
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    assert error_rate([(LIBRI_TEXT, text)], "en") <= 15, text
    assert messages[-1]["type"] == "Metadata" and messages[-1]["duration"] == pytest.approx(8.73, abs=0.02)


def test_in_stream_errors(results):
    messages, close = results["bad"]
    assert [m["type"] for m in messages] == ["Error", "Error", "ConfigureFailure", "Error"]
    assert messages[0]["variant"] == "SchemaError" and messages[0]["message"] == "hello"
    assert messages[1]["variant"] == "SchemaError"
    assert messages[2]["code"] == "CONFIGURE_KEYTERMS_NOT_SUPPORTED"
    assert messages[3]["variant"] == "DATA-0000" and close == 1008


@pytest.mark.parametrize("name", REFUSED)
def test_refused_handshake_is_an_http_status(results, name):
    status, body = results["refused"][name]
    assert status == REFUSED[name][1]
    assert body["err_msg"] and body["request_id"]


def test_wrong_key_is_refused(results):
    status, (events, close) = results["wrong key"]
    assert status == 101 and close == 4401 and events[0]["code"] == "unauthorized"
