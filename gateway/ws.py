"""The subscriber WebSocket `/v1/streams/{stream}/captions`: a stream's caption events as they are published.

Each text frame is the event JSON with one more key, "id" (the bus id). `?after=<id>` resumes after that id from
history, `?after=0` replays all retained history, none: live from now. The socket closes 1000 after
session.ended, 1013 if the viewer falls too far behind (resume with ?after=<last id>), 1001 on server shutdown."""
from __future__ import annotations

import asyncio
import json
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.bus import SlowSubscriber
from gateway.config import check_subscription
from gateway.state import Gateway

log = logging.getLogger("livecaptions.subscribers")


async def captions(ws: WebSocket) -> None:
    gw: Gateway = ws.app.state.gateway
    stream, after = ws.path_params["stream"], ws.query_params.get("after")
    await ws.accept()
    try:
        check_subscription(stream, after)
    except ValueError as e:
        return await ws.close(4400, str(e)[:120])
    code = 1000
    async with gw.bus.subscribe(stream, after) as sub:
        # The client sends nothing, but we must notice it leaving while no event comes.
        gone = asyncio.create_task(_until_disconnect(ws))
        try:
            while True:
                nxt = asyncio.ensure_future(anext(sub))
                await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    return
                try:
                    eid, event = nxt.result()
                except StopAsyncIteration:  # the bus closed: the server is going down
                    code = 1001
                    break
                except SlowSubscriber:
                    code = 1013
                    break
                await ws.send_text(json.dumps({**event, "id": eid}, ensure_ascii=False))
                if event.get("type") == "session.ended":
                    break
        except (WebSocketDisconnect, OSError):
            return
        finally:
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
    try:
        await ws.close(code)
    except Exception:
        log.debug("close %d not sent", code, exc_info=True)


async def _until_disconnect(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass
