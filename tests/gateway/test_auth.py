"""Auth and limits on a real server with an API key: each refusal gets its HTTP status and JSON body, or its error
event and close code, while a healthy stream with the key runs alongside unaffected; without keys the server binds
to loopback only."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support.speech import error_rate
from tests.gateway.servers import LIVECAPTIONS, Server, jfk_pcm, receive_all, serving, stream_audio

pytestmark = pytest.mark.timeout(300)
KEY = "k1-secret"
REFERENCE = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("auth") / "server.log", "--api-key", KEY, "--max-streams-per-key", "3",
                 "--max-session", "10", "--max-body-bytes", "4096", "--allowed-origin", "https://ok.example",
                 "--log-level", "info") as s:  # info: the access log, whose redaction is tested
        yield s


def http(server: Server, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(server.http + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def mint(server: Server, **fields: object) -> str:
    status, body = http(server, "POST", "/v1/tokens", json.dumps(fields).encode(), BEARER)
    assert status == 200, body
    return str(body["token"])


async def refused(url: str, **kw: object) -> tuple[list[dict], int | None]:
    async with connect(url, **kw) as ws:  # type: ignore[arg-type]
        events = await receive_all(ws, timeout=30)
        return events, ws.close_code


def test_http_refusals(server: Server) -> None:
    assert http(server, "GET", "/v1/streams")[0] == 401
    status, body = http(server, "GET", "/v1/streams", headers={"Authorization": "Bearer nope"})
    assert (status, body["error"]["type"]) == (401, "unauthorized")
    assert http(server, "GET", "/v1/streams", headers=BEARER) == (200, {"streams": {}})
    assert http(server, "GET", "/healthz")[0] == 200  # operations stay open to probes
    read = mint(server, scope="read", stream="abc")
    assert http(server, "GET", f"/v1/streams/abc/captions.vtt?token={read}")[0] == 404  # allowed: just no captions yet
    status, body = http(server, "GET", f"/v1/streams/xyz/captions.vtt?token={read}")
    assert (status, body["error"]["type"]) == (403, "forbidden")
    status, body = http(server, "POST", f"/v1/tokens?token={read}", b"{}")  # a token cannot mint tokens
    assert (status, body["error"]["type"]) == (403, "forbidden")
    for bad in ({"scope": "admin"}, {"ttl_s": -1}, {"stream": "no spaces"}, {"color": 1}):
        status, body = http(server, "POST", "/v1/tokens", json.dumps(bad).encode(), BEARER)
        assert status == 400 and body["error"]["message"], bad
    for bad, code in ((b"{not json", "invalid_json"), (b"[" * 2000 + b"]" * 2000, "invalid_json")):  # deep: not a 500
        status, body = http(server, "POST", "/v1/tokens", bad, BEARER)
        assert (status, body["error"]["type"]) == (400, code), body
    status, body = http(server, "POST", "/v1/tokens", b"{" + b" " * 5000 + b"}", BEARER)
    assert (status, body["error"]["type"]) == (413, "body_too_large")
    short = mint(server, scope="read", ttl_s=0.5)
    time.sleep(1.0)
    status, body = http(server, "GET", f"/v1/streams?token={short}")
    assert (status, body["error"]["type"]) == (401, "token_expired")
    # a signature that is not ASCII is just wrong (it once raised TypeError in compare_digest: 500)
    status, body = http(server, "GET", "/v1/streams/a/captions.vtt?token=lct1.abc.%C3%A9")
    assert (status, body["error"]["type"]) == (401, "unauthorized")
    # a key in the query string would be logged: refused, with where it goes instead
    status, body = http(server, "GET", f"/v1/streams/a/events?token={KEY}")
    assert status == 401 and "Authorization: Bearer" in body["error"]["message"], body


def test_access_log_hides_credentials(server: Server) -> None:
    token = mint(server, scope="read")
    assert http(server, "GET", f"/v1/streams?token={token}")[0] == 200
    assert http(server, "GET", f"/v1/streams?stream=x&key={KEY}")[0] == 401
    log = server.log()
    assert "/v1/streams?token=***" in log and "key=***" in log, log[-2000:]
    assert token not in log and KEY not in log


def test_websocket_refusals_leave_a_healthy_stream_alone(server: Server) -> None:
    async def main() -> None:
        ws_url = f"{server.ws}/v1/listen?language=en"
        async with connect(f"{ws_url}&stream=healthy", additional_headers=BEARER) as healthy:
            received = asyncio.create_task(receive_all(healthy))
            sending = asyncio.create_task(stream_audio(healthy, jfk_pcm(), frame_ms=100, speed=4))
            expired = mint(server, scope="listen", ttl_s=0.5)
            await asyncio.sleep(1.0)
            cases = {  # name -> (url, connect kwargs, close code, error code)
                "no credential": (ws_url, {}, 4401, "unauthorized"),
                "invalid key": (f"{ws_url}&token=nope", {}, 4401, "unauthorized"),
                "expired token": (f"{ws_url}&token={expired}", {}, 4401, "token_expired"),
                "read token ingesting": (f"{ws_url}&token={mint(server, scope='read')}", {}, 4403, "forbidden"),
                "token for another stream": (f"{ws_url}&stream=a&token={mint(server, scope='listen', stream='b')}",
                                             {}, 4403, "forbidden"),
                "API key in the query": (f"{ws_url}&token={KEY}", {}, 4401, "unauthorized"),
                "signature not ASCII": (f"{ws_url}&token=lct1.abc.%C3%A9", {}, 4401, "unauthorized"),
                "wrong Origin": (f"{ws_url}&token={mint(server, scope='listen')}", {"origin": "https://evil.example"},
                                 4403, "forbidden_origin"),
                "own host, other scheme": (f"{ws_url}&token={mint(server, scope='listen')}",
                                           {"origin": f"https://127.0.0.1:{server.port}"}, 4403, "forbidden_origin"),
                "subscriber, wrong stream": (f"{server.ws}/v1/streams/healthy/captions?token="
                                             f"{mint(server, scope='read', stream='other')}", {}, 4403, "forbidden"),
            }
            results = {name: await refused(url, **kw) for name, (url, kw, _, _) in cases.items()}
            for name, (_, _, close, code) in cases.items():
                events, got = results[name]
                assert got == close, (name, got, events)
                assert [e["type"] for e in events] == ["error"] and events[0]["code"] == code, (name, events)
            # The server's own origin, an allowed origin and a stream-bound listen token are accepted.
            async with connect(f"{ws_url}&stream=own&token={mint(server, scope='listen')}",
                               origin=f"http://127.0.0.1:{server.port}") as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["type"] == "session.started"
            token = mint(server, scope="listen", stream="bound")
            async with connect(f"{ws_url}&stream=bound&token={token}", origin="https://ok.example") as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["type"] == "session.started"
                # Three streams per key: healthy + bound + this one; a fourth is refused.
                async with connect(f"{ws_url}&stream=third", additional_headers=BEARER) as third:
                    assert json.loads(await third.recv())["type"] == "session.started"
                    events, code = await refused(f"{ws_url}&stream=fourth", additional_headers=BEARER)
                    assert code == 4429 and events[0]["code"] == "too_many_streams", events
            await sending
            await healthy.send(json.dumps({"type": "close"}))
            events = await received
            assert healthy.close_code == 1000
            finals = " ".join(e["text"] for e in events if e["type"] == "caption.final")
            assert error_rate([(REFERENCE, finals)], "en") <= 10, finals
            assert not [e for e in events if e["type"] == "error"]

    asyncio.run(main())


def test_session_length_limit_delivers_finals_first(server: Server) -> None:
    async def main() -> None:
        async with connect(f"{server.ws}/v1/listen?language=en&stream=long", additional_headers=BEARER) as ws:
            received = asyncio.create_task(receive_all(ws))
            pcm = jfk_pcm()[: 16000 * 2 * 3]  # 3 s of speech, then silence: the session limit (10 s) cuts it
            with pytest.raises(ConnectionClosed):
                await stream_audio(ws, pcm + b"\x00" * (16000 * 2 * 12), frame_ms=100, speed=1)
            events = await received
        assert ws.close_code == 4413
        kinds = [e["type"] for e in events]
        assert "caption.final" in kinds and kinds.index("caption.final") < kinds.index("error"), kinds
        assert events[kinds.index("error")]["code"] == "session_too_long"

    asyncio.run(main())


def test_no_keys_on_a_public_host_is_refused_with_what_to_do(tmp_path) -> None:
    done = subprocess.run([LIVECAPTIONS, "serve", "--host", "0.0.0.0", "--model", "tiny.en"], capture_output=True,
                          text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                      if k not in ("LIVECAPTIONS_API_KEYS", "LIVECAPTIONS_ALLOW_ANONYMOUS")})
    assert done.returncode == 2 and done.stderr.startswith("error: --host 0.0.0.0 without API keys"), done.stderr
    assert "--api-key" in done.stderr and "--allow-anonymous" in done.stderr and "Traceback" not in done.stderr
