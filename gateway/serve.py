"""`livecaptions serve`: run the app on uvicorn.

SIGTERM/SIGINT: we mark the app draining (no new ingest; SSE responses end once the local sessions are done), then
uvicorn stops listening, closes the WebSockets with 1012 (the ingest handlers then finish their sessions, finals
published), waits for the handlers and runs the lifespan shutdown (engine and bus closed: gateway/app.py)."""
from __future__ import annotations

import asyncio
import logging
import re
import socket

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.app import create_app
from gateway.config import ServeConfig
from gateway.state import Gateway


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for open HTTP responses before the lifespan shutdown, so draining must start here.
        gw: Gateway | None = getattr(self.app.state, "gateway", None)
        if gw is not None:
            gw.begin_drain()
        await super().shutdown(sockets)


HEADERS_TIMEOUT_S = 5.0  # a connection whose request headers are not all in by then is dropped


class HeadersTimeout(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers: uvicorn has none, so a client that
    sends half a request and stops (slowloris) held its connection for ever."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in
            self._disarm()
        elif self._deadline is None:
            self._arm()  # the first bytes of a keep-alive connection's next request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(HEADERS_TIMEOUT_S, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


log = logging.getLogger("livecaptions.serve")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
_SECRET_PARAM = re.compile(r"([?&](?:token|key|api_key)=)[^&\s\"]*", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Credentials in logged URLs (`?token=`, `?key=`) become ***: uvicorn logs every request's query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_PARAM.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def run(config: ServeConfig) -> int:
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.loopback_only and config.host not in LOOPBACK:
        raise ValueError(f"--host {config.host} without API keys would let anyone who reaches it stream and watch: "
                         "pass --api-key (LIVECAPTIONS_API_KEYS; `livecaptions hash-key KEY` makes the value to "
                         "store), or --allow-anonymous (LIVECAPTIONS_ALLOW_ANONYMOUS=1) on a trusted network")
    if config.loopback_only:
        log.warning("no API keys configured: auth is off; serving on %s only", config.host)
    elif not config.api_keys:
        log.warning("no API keys configured (--allow-anonymous): anyone who reaches %s:%d may stream and watch",
                    config.host, config.port)
    app = create_app(config)
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                                    ws_max_size=config.ws_max_size,
                                    # PCM barely compresses; inflating each audio frame costs the event loop's time
                                    ws_per_message_deflate=False,
                                    http=HeadersTimeout,
                                    ws="websockets-sansio",  # reports a server shutdown to the app as code 1012
                                    lifespan="on", timeout_graceful_shutdown=120), app)
    for name in ("uvicorn.access", "uvicorn.error"):  # the WebSocket lines ("accepted") come on uvicorn.error
        logging.getLogger(name).addFilter(RedactSecrets())
    server.run()
    return 0 if server.started else 1
