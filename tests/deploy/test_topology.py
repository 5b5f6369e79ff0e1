"""The deployment topology of deploy/compose.yaml with real processes: a redis-server, two `livecaptions serve
--redis-url` replicas and Debian's nginx configured from deploy/nginx.conf. Everything goes through nginx: two SSE
viewers (nginx puts one on each replica), then a talker streaming speech into /v1/listen (hashed to one replica).
Mid-stream one replica is SIGKILLed:
- the viewers' other replica: the talker goes on undisturbed, the surviving viewer misses nothing, and the dead
  replica's viewer resumes through nginx (Last-Event-ID) on the survivor, missing nothing either;
- the talker's replica: the viewer on the other replica keeps everything published until the crash, the talker
  reconnects through nginx with the same stream id (refused with 4409 until the dead replica's registration
  expires) and finishes the talk on the survivor, and the dead replica's viewer again resumes on the survivor."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from support.speech import SPEECH, clips, error_rate
from gateway.media import decode_file
from tests.deploy.proxy import Nginx
from tests.gateway.servers import SSE, Server, get, pcm16

pytestmark = pytest.mark.timeout(300)
SPEED = 3.0  # times real time
FRAME_MS = 40


def talk() -> tuple[bytes, str]:
    """JFK, 2 s of silence (an endpoint: its final comes mid-talk), then a LibriSpeech sentence -> (s16le, text)."""
    refs = {c.path.name: c.reference for c in clips()}
    jfk, libri = decode_file(SPEECH / "jfk.wav"), decode_file(SPEECH / "librispeech-1995-1837-0001.wav")
    audio = np.concatenate([jfk, np.zeros(32000, np.float32), libri])
    return pcm16(audio), f"{refs['jfk.wav']} {refs['librispeech-1995-1837-0001.wav']}"


def upstream(headers) -> str:
    """The replica nginx used (the last one it tried), from the header deploy/nginx.conf adds."""
    return headers["x-livecaptions-upstream"].split(",")[-1].strip()


class Viewer:
    """An SSE viewer through nginx; when its connection ends early it reconnects with Last-Event-ID."""

    def __init__(self, port: int, stream: str) -> None:
        self.port, self.path = port, f"/v1/streams/{stream}/events"
        self.events: list[tuple[str, dict]] = []  # (bus id, event) in arrival order
        self.upstreams: list[str] = []  # the replica of each connection
        self.sse: SSE | None = None

    async def connect(self) -> None:
        last = self.events[-1][0] if self.events else None
        self.sse = await SSE.open(self.port, self.path, last_event_id=last)
        assert self.sse.status == 200, (self.sse.status, self.sse.body)
        self.upstreams.append(upstream(self.sse.headers))

    async def follow(self) -> None:
        """Until session.ended of a session that reached its end (a crashed one has none)."""
        assert self.sse is not None
        while True:
            item = await self.sse.event(timeout=120)
            if item is None:  # its replica died: nginx ended the response
                await self.sse.close()
                await self.connect()
                continue
            self.events.append(item)
            if item[1]["type"] == "session.ended":
                await self.sse.close()
                return


class Talker:
    """Streams `pcm` into /v1/listen through nginx at SPEED; `pos` survives a dropped connection."""

    def __init__(self, url: str, pcm: bytes) -> None:
        self.url, self.pcm, self.pos = url, pcm, 0
        self.connections: list[list[dict]] = []  # events received, per connection
        self.refused = 0  # connections refused with stream_busy

    async def connect(self, timeout: float = 60) -> tuple[ClientConnection, str]:
        """A session; retries while the stream id is still registered to a dead replica (4409)."""
        async with asyncio.timeout(timeout):
            while True:
                ws = await connect(self.url)
                first = json.loads(await ws.recv())
                if first["type"] != "error":
                    self.connections.append([first])
                    return ws, upstream(ws.response.headers)
                assert first["code"] == "stream_busy", first
                self.refused += 1
                await ws.close()
                await asyncio.sleep(0.5)

    async def send(self, ws: ClientConnection) -> bool:
        """Send from `pos` to the end -> whether it got there (False: the connection dropped)."""
        step = 16000 * 2 * FRAME_MS // 1000
        loop = asyncio.get_running_loop()
        t0, start = loop.time(), self.pos
        while self.pos < len(self.pcm):
            try:
                await ws.send(self.pcm[self.pos:self.pos + step])
            except ConnectionClosed:
                return False
            self.pos += step
            await asyncio.sleep(max(0.0, t0 + (self.pos - start) / 32000 / SPEED - loop.time()))
        return True

    async def receive(self, ws: ClientConnection, on_final=None) -> None:
        try:
            async for message in ws:
                event = json.loads(message)
                self.connections[-1].append(event)
                if event["type"] == "caption.final" and on_final is not None:
                    on_final()
        except ConnectionClosed:
            pass


@pytest.fixture
def topology(private_redis, tmp_path: Path) -> Iterator[tuple[list[Server], Nginx]]:
    if Nginx.binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    servers = [Server(tmp_path / f"replica-{i}.log", "--redis-url", private_redis.url) for i in (1, 2)]
    nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{s.port}" for s in servers])
    try:
        for s in servers:
            s.wait_ready()
        nginx.check()
        nginx.start()
        yield servers, nginx
    finally:
        nginx.stop()
        for s in servers:
            s.stop()


async def _history(port: int, stream: str) -> list[tuple[str, dict]]:
    """Everything the bus kept for `stream`, read from one replica directly (the response ends at session.ended)."""
    sse = await SSE.open(port, f"/v1/streams/{stream}/events", last_event_id="0")
    out = []
    while (item := await sse.event(timeout=30)) is not None:
        out.append(item)
    await sse.close()
    return out


@pytest.mark.parametrize("victim", ["viewers-replica", "talker-replica"])
def test_a_replica_dies_mid_stream_and_nothing_is_lost(topology, victim: str):
    servers, nginx = topology
    stream = f"topo-{victim}"
    pcm, reference = talk()
    by_addr = {f"127.0.0.1:{s.port}": s for s in servers}

    async def main() -> dict:
        viewers = [Viewer(nginx.port, stream) for _ in servers]
        for v in viewers:  # one after the other: least_conn sends the second to the replica without a viewer
            await v.connect()
        following = [asyncio.create_task(v.follow()) for v in viewers]
        talker = Talker(f"ws://127.0.0.1:{nginx.port}/v1/listen?stream={stream}&language=en", pcm)
        ws, home = await talker.connect()
        dead = next(a for a in by_addr if a != home) if victim == "viewers-replica" else home
        survivor = next(a for a in by_addr if a != dead)

        def kill() -> None:  # after the first final: mid-talk, the LibriSpeech sentence is still to come
            if by_addr[dead].proc.poll() is None:
                by_addr[dead].proc.kill()

        receiving = asyncio.create_task(talker.receive(ws, on_final=kill))
        finished = await talker.send(ws)
        health = [get(f"http://127.0.0.1:{nginx.port}/healthz")[0] for _ in range(4)]  # both upstreams tried
        if not finished:  # the talker's replica died under it: go on through nginx, on the survivor
            await receiving
            ws, home2 = await talker.connect()
            assert home2 == survivor
            receiving = asyncio.create_task(talker.receive(ws))
            assert await talker.send(ws)
        await ws.send(json.dumps({"type": "close"}))
        await receiving
        await asyncio.wait_for(asyncio.gather(*following), 120)
        history = await _history(by_addr[survivor].port, stream)
        return {"viewers": viewers, "talker": talker, "home": home, "dead": dead, "survivor": survivor,
                "health": health, "history": history}

    r = asyncio.run(main())
    viewers, talker = r["viewers"], r["talker"]
    assert by_addr[r["dead"]].proc.poll() is not None, "the replica was not killed mid-stream"
    assert {v.upstreams[0] for v in viewers} == set(by_addr)  # one viewer on each replica
    assert r["health"] == [200] * 4  # nginx keeps answering with one replica dead

    for v in viewers:
        if v.upstreams[0] == r["dead"]:
            assert v.upstreams[1:] == [r["survivor"]]  # resumed through nginx on the survivor
        else:
            assert v.upstreams == [r["survivor"]]  # never interrupted
    ids = [i for i, _ in viewers[0].events]
    assert viewers[0].events == viewers[1].events  # the resumed viewer missed nothing, and got nothing twice
    assert len(set(ids)) == len(ids)
    assert viewers[0].events == r["history"]  # and both hold everything the bus kept

    watched = [e for _, e in viewers[0].events]
    if victim == "viewers-replica":
        assert len(talker.connections) == 1
        assert talker.connections[0] == watched  # the talker's session never noticed
    else:
        first, second = talker.connections
        assert talker.refused > 0  # the crashed session's id stayed registered for a while, then was free
        assert first[-1]["type"] != "session.ended" and first == watched[:len(first)]  # nothing it saw is lost
        starts = [i for i, e in enumerate(watched) if e["type"] == "session.started"]
        assert len(starts) == 2 and second == watched[starts[1]:]  # then the session on the survivor, whole
    text = " ".join(e["text"] for e in watched if e["type"] == "caption.final")
    assert "country" in text.lower()  # the first final, from before the crash
    if victim == "viewers-replica":
        assert error_rate([(reference, text)], "en") <= 15, text
    else:
        assert "dreams" in text.lower()  # the end of the talk, transcribed on the survivor
