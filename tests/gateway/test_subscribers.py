"""Two server processes sharing a private redis-server: ingest on one, watch on the other (WebSocket and SSE, with
a mid-stream SSE resume), and SIGTERM on the ingest server drains its session to the viewers on the other."""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from support.speech import error_rate
from tests.gateway.servers import SSE, Server, get, jfk_pcm, receive_all, serving, stream_audio

pytestmark = pytest.mark.timeout(300)
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def pair(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("serve")
    common = ("--redis-url", redis_server.url, "--redis-prefix", f"test-{uuid.uuid4().hex[:8]}:")
    a, b = Server(logs / "a.log", *common), Server(logs / "b.log", *common)  # both load at once
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_ingest_on_one_server_is_watched_on_the_other(pair):
    a, b = pair

    async def main() -> dict:
        sse = await SSE.open(b.port, "/v1/streams/shared-1/events")
        async with connect(f"{b.ws}/v1/streams/shared-1/captions") as viewer:
            await asyncio.sleep(0.3)  # the viewer's subscription is made once its handler runs
            async with connect(f"{a.ws}/v1/listen?stream=shared-1&language=en") as ingest:
                received = asyncio.create_task(receive_all(ingest))
                sending = asyncio.create_task(stream_audio(ingest, jfk_pcm(), speed=5))
                # Resume mid-stream: read two events, drop the connection, come back with the last id.
                first = [await sse.event(), await sse.event()]
                await sse.close()
                await asyncio.sleep(0.5)  # events published meanwhile must come from history
                listed = json.loads(get(b.http + "/v1/streams")[1])["streams"]
                resumed = await SSE.open(b.port, "/v1/streams/shared-1/events", last_event_id=first[-1][0])
                await sending
                await ingest.send(json.dumps({"type": "close"}))
                events = await received
            watched = await receive_all(viewer)
        rest = []
        while (item := await resumed.event()) is not None:
            rest.append(item)
        await resumed.close()
        return {"events": events, "viewer": watched, "sse": first + rest, "listed": listed}

    r = asyncio.run(main())
    events = r["events"]
    assert events[-1]["type"] == "session.ended"
    assert [{k: v for k, v in e.items() if k != "id"} for e in r["viewer"]] == events
    assert [e for _, e in r["sse"]] == events  # no gap, no duplicate across the reconnect
    assert [i for i, _ in r["sse"]] == [e["id"] for e in r["viewer"]]
    assert "shared-1" in r["listed"]
    text = " ".join(e["text"] for e in events if e["type"] == "caption.final")
    assert error_rate([(REFERENCE, text)], "en") <= 10, text
    status, srt = get(b.http + "/v1/streams/shared-1/captions.srt")
    assert status == 200 and "country" in srt.decode()


def test_redis_restart_mid_stream_loses_no_final(pair, redis_server):
    """redis-server killed (as in a crash) while a stream is captioned, back 2 s later with an empty dataset: the
    viewer on the other server still gets every event the ingest client got, in order, once each."""
    a, b = pair

    async def main() -> tuple[list[dict], list[dict]]:
        async with connect(f"{b.ws}/v1/streams/outage-1/captions") as viewer:
            await asyncio.sleep(0.3)
            async with connect(f"{a.ws}/v1/listen?stream=outage-1&language=en") as ingest:
                received = asyncio.create_task(receive_all(ingest))
                sending = asyncio.create_task(stream_audio(ingest, jfk_pcm(), speed=2))
                await asyncio.sleep(1.5)
                redis_server.kill()
                await asyncio.sleep(2.0)
                redis_server.start()  # same port
                await sending
                await ingest.send(json.dumps({"type": "close"}))
                events = await received
            return events, await receive_all(viewer, timeout=60)

    events, watched = asyncio.run(main())
    assert events[-1]["type"] == "session.ended" and "caption.final" in [e["type"] for e in events]
    assert [{k: v for k, v in e.items() if k != "id"} for e in watched] == events


def test_sigterm_drains_the_open_session_to_viewers_elsewhere(pair):
    a, b = pair

    async def main() -> list[dict]:
        async with connect(f"{b.ws}/v1/streams/drain-1/captions") as viewer:
            await asyncio.sleep(0.3)
            async with connect(f"{a.ws}/v1/listen?stream=drain-1&language=en") as ingest:
                # Mid-utterance when the server is told to stop: only draining can produce this segment's final.
                await stream_audio(ingest, jfk_pcm()[:16000 * 2 * 3], speed=10)
                await asyncio.sleep(0.3)
                code = await asyncio.to_thread(a.stop)
                assert code in (0, -15), a.log()  # uvicorn re-raises the SIGTERM it handled, once shut down
                await receive_all(ingest, timeout=30)
                assert ingest.close_code == 1012  # "service restart": reconnect elsewhere
            return await receive_all(viewer, timeout=30)

    watched = asyncio.run(main())
    kinds = [e["type"] for e in watched]
    assert kinds[0] == "session.started" and kinds[-1] == "session.ended"
    assert "caption.final" in kinds and "americans" in watched[kinds.index("caption.final")]["text"].lower()
    assert json.loads(get(b.http + "/v1/streams")[1]) == {"streams": {}}  # unregistered on the way out
