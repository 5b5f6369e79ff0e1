"""Per-caller limits: concurrent streams per API key, and the size of a request body.

Both are per instance: behind a load balancer a key's streams are counted on each instance it reaches."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Grant
from gateway.errors import error_body


class LimitError(Exception):
    """A limit reached: HTTP `status` with an error body, or for a WebSocket an error event and `close_code`."""

    def __init__(self, status: int, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close_code = status, code, message, close_code

    def body(self) -> dict[str, object]:
        return error_body(self.code, self.message)


class StreamLimits:
    """Counts the open streams (ingest sockets, realtime sessions, HTTP transcriptions) of each key."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key  # 0: unlimited
        self.open: Counter[str] = Counter()

    @asynccontextmanager
    async def stream(self, grant: Grant) -> AsyncIterator[None]:
        if self.per_key and self.open[grant.subject] >= self.per_key:
            raise LimitError(429, "too_many_streams",
                             f"{self.per_key} concurrent streams per key is the limit (--max-streams-per-key)", 4429)
        self.open[grant.subject] += 1
        try:
            yield
        finally:
            self.open[grant.subject] -= 1
            if not self.open[grant.subject]:
                del self.open[grant.subject]


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for an HTTP request body over `max_bytes`: at once from Content-Length, or as soon as the bytes read
    pass it (chunked uploads), as long as the route has not started its response."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = LimitError(413, "body_too_large", f"request body over the {self.max_bytes} byte limit (--max-body-bytes)", 1009)
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
