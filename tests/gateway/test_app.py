"""`livecaptions serve` end to end, one real server process (in-process bus): a client streams JFK over the ingest
WebSocket while a WebSocket and an SSE subscriber watch; then resume, subtitles, health and metrics."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from support.speech import error_rate
from tests.gateway.servers import SSE, Server, get, jfk_pcm, receive_all, serving, stream_audio

pytestmark = pytest.mark.timeout(300)
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def jfk(server: Server) -> dict:
    """One JFK stream, watched by a WebSocket and an SSE subscriber: every party's events."""

    async def main() -> dict:
        stream = "jfk-1"
        sse = await SSE.open(server.port, f"/v1/streams/{stream}/events")
        async with connect(f"{server.ws}/v1/streams/{stream}/captions") as viewer:
            await asyncio.sleep(0.2)  # the viewer's subscription is made once its handler runs
            async with connect(f"{server.ws}/v1/listen?stream={stream}&language=en") as ingest:
                received = asyncio.create_task(receive_all(ingest))
                await stream_audio(ingest, jfk_pcm(), frame_ms=40, speed=10)
                listed = json.loads(get(server.http + "/v1/streams")[1])["streams"]
                await ingest.send(json.dumps({"type": "close"}))
                events = await received
                code = ingest.close_code
            watched = await receive_all(viewer)
        sse_events = []
        while (item := await sse.event()) is not None:
            sse_events.append(item)
        await sse.close()
        return {"events": events, "code": code, "listed": listed, "viewer": watched, "sse": sse_events}

    return asyncio.run(main())


def finals(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "caption.final"]


def test_ingest_gets_its_captions_and_a_normal_close(jfk):
    events = jfk["events"]
    assert jfk["code"] == 1000
    assert events[0]["type"] == "session.started" and events[0]["stream"] == "jfk-1"
    assert events[-1]["type"] == "session.ended"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert any(e["type"] == "caption.partial" for e in events)
    text = " ".join(e["text"] for e in finals(events))
    assert error_rate([(REFERENCE, text)], "en") <= 10, text
    assert "jfk-1" in jfk["listed"]


def test_subscribers_see_the_same_events_in_order(jfk):
    strip = lambda e: {k: v for k, v in e.items() if k != "id"}  # noqa: E731
    assert [strip(e) for e in jfk["viewer"]] == jfk["events"]  # subscribed before the stream began: all of it
    assert [e for _, e in jfk["sse"]] == jfk["events"]
    assert [e["id"] for e in jfk["viewer"]] == [i for i, _ in jfk["sse"]]  # the same bus ids


def test_sse_resumes_from_last_event_id_without_gap_or_duplicate(server, jfk):
    async def main() -> list[tuple[str, dict]]:
        first = await SSE.open(server.port, "/v1/streams/jfk-1/events?last_event_id=0")
        got = [await first.event(), await first.event(), await first.event()]
        await first.close()
        second = await SSE.open(server.port, "/v1/streams/jfk-1/events", last_event_id=got[-1][0])
        while (item := await second.event()) is not None:
            got.append(item)
        await second.close()
        return got

    got = asyncio.run(main())
    assert [e["seq"] for _, e in got] == list(range(len(jfk["events"])))
    assert [i for i, _ in got] == [i for i, _ in jfk["sse"]]


def test_subtitles_hold_the_finals(server, jfk):
    texts = [e["text"].strip() for e in finals(jfk["events"])]
    status, vtt = get(server.http + "/v1/streams/jfk-1/captions.vtt")
    assert status == 200 and vtt.decode().startswith("WEBVTT")
    status, srt = get(server.http + "/v1/streams/jfk-1/captions.srt")
    assert status == 200 and srt.decode().startswith("1\n00:00:")
    for text in texts:
        assert text in vtt.decode() and text in srt.decode()
    assert get(server.http + "/v1/streams/nobody/captions.srt")[0] == 404


def test_health_ready_and_metrics(server, jfk):
    assert get(server.http + "/healthz") == (200, b'{"status":"ok"}')
    status, body = get(server.http + "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    status, body = get(server.http + "/metrics")
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in body.decode().splitlines()
               if line and not line.startswith("#")}
    assert status == 200
    assert metrics["livecaptions_segments_total"] == len(finals(jfk["events"]))
    assert metrics["livecaptions_live_streams"] == 0
    assert metrics["livecaptions_mtp_tokens_per_forward"] >= 1
    assert metrics["livecaptions_engine_batch_size_count"] >= 1
    assert metrics['livecaptions_caption_lag_seconds_count{kind="final"}'] == len(finals(jfk["events"]))
    assert "livecaptions_engine_queue_depth" in metrics
    assert metrics['livecaptions_engine_busy_seconds{stage="encode"}'] > 0  # the stream's segments were encoded
    assert metrics['livecaptions_engine_busy_seconds{stage="decode"}'] > 0
    # how late each request started against its due time: every final (pauses that became finals count as partials)
    assert sum(v for k, v in metrics.items() if k.startswith("livecaptions_engine_lag_seconds_count")) >= 1
    assert json.loads(get(server.http + "/v1/streams")[1]) == {"streams": {}}



def test_without_keys_only_loopback_host_names_are_served(server):
    """DNS rebinding: a page at attacker.example whose name now points at 127.0.0.1 sends Host and Origin
    attacker.example; without keys only loopback names are served, so it gets 403 / 4403, not captions."""

    def status(host: str) -> tuple[int, dict]:
        req = urllib.request.Request(server.http + "/v1/streams", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, body = status(f"attacker.example:{server.port}")
    assert (code, body["error"]["type"]) == (403, "forbidden_host"), body
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert status(host)[0] == 200, host

    async def main() -> tuple[list[dict], int | None]:
        rebound = f"attacker.example:{server.port}"
        async with connect(f"ws://{rebound}/v1/streams/room1/captions", host="127.0.0.1", port=server.port,
                           origin=f"http://{rebound}") as ws:  # type: ignore[arg-type]
            return await receive_all(ws, timeout=30), ws.close_code

    events, code = asyncio.run(main())
    assert code == 4403 and [e["code"] for e in events] == ["forbidden_host"], events


def test_half_sent_requests_are_dropped(server):
    """A client that sends part of a request's headers and stops (slowloris) is disconnected after
    HEADERS_TIMEOUT_S; uvicorn alone held such connections for ever."""
    from gateway.serve import HEADERS_TIMEOUT_S

    async def main() -> list[bytes]:
        conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(30)]
        for _, writer in conns:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
            await writer.drain()
        await asyncio.sleep(1.0)
        assert get(server.http + "/healthz")[0] == 200  # the server serves others meanwhile
        async with asyncio.timeout(HEADERS_TIMEOUT_S + 5):
            ends = [await reader.read() for reader, _ in conns]  # b"" once the server has closed the connection
        for _, writer in conns:
            writer.close()
        return ends

    assert asyncio.run(main()) == [b""] * 30


def test_a_resume_id_beyond_the_bus_id_range_is_a_400(server):
    async def main() -> list[int]:
        statuses = []
        for eid in ("18446744073709551616-0", "1-18446744073709551616"):  # 2**64: past Redis stream ids
            sse = await SSE.open(server.port, "/v1/streams/jfk-1/events", last_event_id=eid)
            statuses.append(sse.status)
            await sse.close()
        return statuses

    assert asyncio.run(main()) == [400, 400]
