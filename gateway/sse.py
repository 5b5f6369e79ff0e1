"""Server-sent events `/v1/streams/{stream}/events`: a stream's caption events over plain HTTP.

Each SSE event is `id: <bus id>` + `data: <event JSON>`. A reconnecting EventSource sends `Last-Event-ID` and
gets everything after it from the bus history, then live: nothing missed, nothing twice. `?last_event_id=` (for
clients that cannot set headers) does the same, `?last_event_id=0` replays all retained history; neither: live
from now. A `: ping` comment every sse_ping_s keeps proxies from timing the response out. The response ends after
session.ended, when the viewer falls too far behind (reconnect to resume), or on shutdown."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.bus import SlowSubscriber
from gateway.config import check_subscription
from gateway.errors import error_response
from gateway.state import Gateway

RETRY_MS = 1000  # how soon an EventSource reconnects after the response ends


async def events(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    stream = request.path_params["stream"]
    after = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        check_subscription(stream, after)
    except ValueError as e:
        return error_response(400, "bad_request", str(e))
    return StreamingResponse(_frames(gw, stream, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _frames(gw: Gateway, stream: str, after: str | None) -> AsyncIterator[str]:
    async with gw.bus.subscribe(stream, after) as sub:
        # First bytes only once subscribed: a client that has read them will miss nothing published later.
        yield f"retry: {RETRY_MS}\n: subscribed\n\n"
        # uvicorn waits for open responses before shutting down: end once this instance's sessions are finished
        # (their finals published); the client resumes elsewhere with Last-Event-ID.
        stop = asyncio.ensure_future(gw.drained.wait())
        nxt: asyncio.Future[tuple[str, dict]] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(sub))
                done, _ = await asyncio.wait({nxt, stop}, timeout=gw.config.sse_ping_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()  # safe: a subscription only hands an event out when its await returns
                    await asyncio.gather(nxt, return_exceptions=True)
                    if stop.done():
                        return
                    yield ": ping\n\n"
                    continue
                try:
                    eid, event = nxt.result()
                except (StopAsyncIteration, SlowSubscriber):
                    return
                yield f"id: {eid}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                if event.get("type") == "session.ended":
                    return
        finally:  # also when the client left mid-wait: no task may outlive the subscription
            for task in (stop, nxt):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (stop, nxt) if t is not None), return_exceptions=True)
