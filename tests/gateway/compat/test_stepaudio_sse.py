"""StepAudio's `POST /v1/audio/asr/sse` on a real server with an API key: the seed's curl request, every container,
a 60 s+ file streamed window by window, ITN on and off, hotwords; then the bad-input table, each refusal with its
status and JSON error body, while a live /v1/listen stream and a long transcription run alongside."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from websockets.asyncio.client import connect

from support.speech import SPEECH, error_rate
from gateway.compat.itn import spoken
from gateway.media import decode_file
from gateway.offline import transcribe_file
from tests.gateway.servers import Server, jfk_pcm, pcm16, receive_all, serving, stream_audio
from tests.gateway.test_media import FORMATS, encode

pytestmark = pytest.mark.timeout(300)
KEY = "sse-secret"
BEARER = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 4_000_000
MAX_AUDIO_S = 100
JFK = SPEECH / "jfk.wav"
PCM_FORMAT = {"type": "pcm", "codec": "pcm_s16le", "rate": 16000, "bits": 16, "channel": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("stepaudio") / "server.log", "--api-key", KEY, "--max-body-bytes", str(MAX_BODY),
                 "--max-audio-s", str(MAX_AUDIO_S), "--max-streams-per-key", "2") as s:
        yield s


@pytest.fixture(scope="module")
def offline(runners):
    """path -> the CLI's offline transcript of that file (the same engine settings as the server's)."""
    from engine.messages import DecodeOptions

    return lambda path, language="en": transcribe_file(runners(), str(path), DecodeOptions(language=language)).text


def request_body(data: bytes, fmt: dict, **transcription: object) -> bytes:
    return json.dumps({"audio": {"data": base64.b64encode(data).decode(), "input": {
        "transcription": {"model": "stepaudio-2.5-asr", "language": "en", **transcription}, "format": fmt}}}).encode()


def post(server: Server, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, list[tuple[float, dict]] | dict]:
    """POST the body -> (200, [(arrival time, event)]) after checking the framing, or (status, JSON error body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", "/v1/audio/asr/sse", body=body, headers={
            "Content-Type": "application/json", "Accept": "text/event-stream", **(BEARER if headers is None else headers)})
        r = conn.getresponse()
        if r.status != 200:
            assert r.getheader("content-type") == "application/json"
            return r.status, json.loads(r.read())
        assert r.getheader("content-type", "").startswith("text/event-stream")
        events = []
        for i, line in enumerate(iter(r.readline, b"")):  # only `data: {json}` and blank lines: no event:, no [DONE]
            if i % 2:
                assert line == b"\n", line
            else:
                assert line.startswith(b"data: {"), line
                events.append((time.monotonic(), json.loads(line[6:])))
        return 200, events
    finally:
        conn.close()


def check_stream(events: list[tuple[float, dict]], timestamps: bool = False) -> tuple[list[dict], dict]:
    """The documented shape: deltas that add up to the done text, then one done event last -> (deltas, done)."""
    kinds = [e["type"] for _, e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1, kinds
    deltas, done = [e for _, e in events[:-1]], events[-1][1]
    assert deltas and all(e["type"] == "transcript.text.delta" for e in deltas), kinds
    assert "".join(d["delta"] for d in deltas) == done["text"]
    assert len({e["meta"]["session_id"] for _, e in events}) == 1
    assert all(isinstance(e["meta"]["timestamp"], int) for _, e in events)
    assert {"item_id", "content_index", "start_time", "end_time"} <= set(deltas[0]) if timestamps else "item_id" not in deltas[0]
    usage = done["usage"]
    assert usage["type"] == "tokens" and usage["output_tokens"] > 0
    assert usage["input_tokens"] == sum(usage["input_token_details"][k] for k in ("text_tokens", "audio_tokens"))
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    return deltas, done


def test_the_seeds_curl_request_with_base64_pcm(server, offline, tmp_path):
    pcm, _ = soundfile.read(str(JFK), dtype="int16")
    body = tmp_path / "body.json"
    body.write_bytes(request_body(pcm.tobytes(), PCM_FORMAT, enable_itn=True))
    out = subprocess.run(["curl", "-sN", f"{server.http}/v1/audio/asr/sse", "-H", f"Authorization: Bearer {KEY}",
                          "-H", "Content-Type: application/json", "-H", "Accept: text/event-stream", "-d", f"@{body}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    events = [(0.0, json.loads(line[6:])) for line in out.splitlines() if line.startswith("data: ")]
    _, done = check_stream(events)
    assert done["text"] == offline(JFK)
    assert done["audio_seconds"] == 11.0 and done["usage"]["input_token_details"]["audio_tokens"] == 550


@pytest.mark.parametrize("ext,codec,rate", FORMATS)
def test_every_container_gives_the_offline_transcript(server, offline, tmp_path, ext, codec, rate):
    path = tmp_path / f"jfk.{ext}"
    encode(path, decode_file(JFK), codec, rate)
    status, events = post(server, request_body(path.read_bytes(), {"type": ext}))
    assert status == 200, events
    _, done = check_stream(events)
    assert done["text"] == offline(path)
    assert error_rate([(offline(JFK), done["text"])], "en") <= 10


def test_a_long_file_streams_a_delta_per_window_before_the_last_is_decoded(server, offline, tmp_path):
    gap = np.zeros(16000, np.float32)
    clips = [SPEECH / n for n in ("jfk.wav", "librispeech-1995-1837-0001.wav", "mit-license-read.wav", "one-two-three.wav")]
    audio = np.concatenate([x for c in clips + clips[:1] for x in (decode_file(c), gap)])
    path = tmp_path / "long.wav"
    soundfile.write(str(path), audio, 16000, subtype="PCM_16")
    t0 = time.monotonic()
    status, events = post(server, request_body(path.read_bytes(), {"type": "wav"}, enable_timestamp=True))
    assert status == 200, events
    deltas, done = check_stream(events, timestamps=True)
    assert done["audio_seconds"] > 60
    assert done["text"] == offline(path)
    assert len(deltas) >= 3  # windows of at most 30 s
    assert [d["content_index"] for d in deltas] == sorted({d["content_index"] for d in deltas})
    assert all(0 <= d["start_time"] < d["end_time"] <= done["audio_seconds"] * 1000 for d in deltas)
    assert len({d["item_id"] for d in deltas}) == 1
    for d in deltas:  # each window's words, timed inside it and in order, spell its text
        words = d["words"]
        assert " ".join(w["word"] for w in words) == d["delta"].strip()
        assert all(d["start_time"] <= w["start_time"] <= w["end_time"] <= d["end_time"] for w in words)
        assert all(a["end_time"] <= b["start_time"] for a, b in zip(words, words[1:]))
    # The first window is decoded alone: its delta leaves the server, and reaches us, well before the last window
    # (decoded in a later batch) is done.
    assert deltas[-1]["meta"]["timestamp"] - deltas[0]["meta"]["timestamp"] >= 200
    first, last = events[0][0] - t0, events[-2][0] - t0
    assert last - first >= 0.2, (first, last)


def test_enable_itn_false_spells_numbers_out(server, tmp_path):
    said = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout",
                           "I bought twenty five apples and three hundred oranges."], capture_output=True, check=True).stdout
    for data, written, words in [((SPEECH / "one-two-three.wav").read_bytes(), "1, 2, 3", "one, two, three"),
                                 (said, "25", "twenty-five")]:
        texts = {}
        for itn in (True, False):
            status, events = post(server, request_body(data, {"type": "wav"}, enable_itn=itn))
            assert status == 200, events
            texts[itn] = check_stream(events)[1]["text"]
        assert written in texts[True] and words not in texts[True].lower(), texts
        assert words in texts[False].lower() and not any(c.isdigit() for c in texts[False]), texts


def test_spoken_form_follows_the_language():
    assert spoken("In 1961, 3.5% of the 21st class paid 1,000.", "en") == (
        "In one thousand, nine hundred and sixty-one, three point five percent of the twenty-first class paid one "
        "thousand.")
    assert spoken("我有25个苹果，增长了3.5%", "zh") == "我有二十五个苹果，增长了百分之三点五"
    assert spoken("Es kostet 12 Euro.", "de") == "Es kostet zwölf Euro."
    assert spoken("version 2.0.1, abc123", "en") == "version 2.0.1, abc123"  # not numbers people say
    assert spoken("Il a 12 ans.", "xx") == "Il a 12 ans."  # a language neither library knows keeps its digits


def test_hotwords_fix_a_rare_terms_spelling(server):
    said = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout",
                           "We deployed the Quixotl service to production yesterday."], capture_output=True, check=True).stdout
    texts = {}
    for hotwords in ([], ["Quixotl"]):
        status, events = post(server, request_body(said, {"type": "wav"}, hotwords=hotwords))
        assert status == 200, events
        texts[bool(hotwords)] = check_stream(events)[1]
    assert "Quixotl" not in texts[False]["text"] and "Quixotl" in texts[True]["text"], texts
    assert texts[True]["usage"]["input_token_details"]["text_tokens"] > 0  # the hotwords went in as prompt tokens


def bad_inputs(tmp_path: Path) -> list[tuple[str, bytes, dict[str, str] | None, int, str]]:
    """(what, body, headers (None: the key), status, error code)."""
    pcm = pcm16(decode_file(JFK))
    mp3 = tmp_path / "jfk.mp3"
    encode(mp3, decode_file(JFK), "libmp3lame", 44100)
    long_pcm8k = np.tile(np.frombuffer(pcm, "<i2")[::2], 10).tobytes()  # 110 s at 8 kHz: under the body limit
    no_rate = {k: v for k, v in PCM_FORMAT.items() if k != "rate"}
    missing_data = json.dumps({"audio": {"input": {"format": PCM_FORMAT}}}).encode()
    bad_b64 = request_body(b"", PCM_FORMAT).replace(b'"data": ""', b'"data": "@@not base64!!"')
    return [
        ("invalid JSON", b'{"audio": {"data": ', None, 400, "invalid_json"),
        ("deeply nested JSON", b"[" * 100000 + b"]" * 100000, None, 400, "invalid_json"),
        ("NaN samples in pcm_f32le", request_body(np.array([0.1, np.nan] * 8000, "<f4").tobytes(),
                                                  {**PCM_FORMAT, "codec": "pcm_f32le", "bits": 32}), None, 400,
         "invalid_audio"),
        ("invalid base64", bad_b64, None, 400, "invalid_base64"),
        ("missing data", missing_data, None, 400, "missing_field"),
        ("pcm without rate", request_body(pcm, no_rate), None, 400, "missing_field"),
        ("unsupported type", request_body(pcm, {"type": "amr"}), None, 400, "unsupported_format"),
        ("truncated MP3", request_body(mp3.read_bytes()[: mp3.stat().st_size // 2], {"type": "mp3"}), None, 400,
         "invalid_audio"),
        ("non-audio file", request_body(Path(__file__).read_bytes(), {"type": "wav"}), None, 400, "invalid_audio"),
        ("body over the limit", request_body(b"\0" * MAX_BODY, PCM_FORMAT), None, 413, "body_too_large"),
        ("audio over the limit", request_body(long_pcm8k, {**PCM_FORMAT, "rate": 8000}), None, 413, "audio_too_long"),
        ("unknown model", request_body(pcm, PCM_FORMAT, model="nope-asr"), None, 400, "model_not_found"),
        ("bad key", request_body(pcm, PCM_FORMAT), {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ("no key", request_body(pcm, PCM_FORMAT), {}, 401, "unauthorized"),
    ]


async def hold_a_slot(server: Server) -> asyncio.StreamWriter:
    """A request of this key whose body has not all arrived: the server holds one of the key's streams for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"POST /v1/audio/asr/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
    await writer.drain()
    await asyncio.sleep(0.5)  # the handler has started: it waits for the rest of the body
    return writer


def test_bad_inputs_get_their_status_and_error_body_while_a_stream_goes_on(server, offline, tmp_path):
    table = bad_inputs(tmp_path)
    results: dict[str, tuple[int, object]] = {}

    async def main() -> tuple[list[dict], int | None]:
        async with connect(f"{server.ws}/v1/listen?stream=alongside&language=en", additional_headers=BEARER) as ws:
            received = asyncio.create_task(receive_all(ws))
            feeding = asyncio.create_task(stream_audio(ws, jfk_pcm(), frame_ms=40, speed=1))
            for what, body, headers, _, _ in table:
                results[what] = await asyncio.to_thread(post, server, body, headers)
            # The live stream and a half-sent request hold this key's 2 streams: a third is refused.
            writer = await hold_a_slot(server)
            results["over the stream limit"] = await asyncio.to_thread(post, server, request_body(b"", PCM_FORMAT))
            writer.close()
            await writer.wait_closed()
            await feeding
            await ws.send(json.dumps({"type": "close"}))
            return await received, ws.close_code

    events, close_code = asyncio.run(main())
    for what, _, _, status, code in table + [("over the stream limit", b"", None, 429, "too_many_streams")]:
        got, err = results[what]
        assert isinstance(err, dict) and (got, err["error"]["code"]) == (status, code), (what, err)
        assert isinstance(err["error"]["message"], str) and err["error"]["message"] and err["error"]["type"], (what, err)
    assert "truncated" in results["truncated MP3"][1]["error"]["message"]  # type: ignore[index]
    # The stream alongside is unaffected.
    assert close_code == 1000 and events[-1]["type"] == "session.ended"
    text = " ".join(e["text"] for e in events if e["type"] == "caption.final")
    assert error_rate([(offline(JFK), text)], "en") <= 10, text
