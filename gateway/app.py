"""The Starlette app: routes, health and the lifespan that owns the bus and the engine.

Nothing happens at import: `create_app(config)` builds an app; its lifespan starts the bus, then loads and warms
the model in the background (so /healthz answers at once and /readyz says 503 until the model is warm), and on
shutdown drains: uvicorn has already stopped listening and waited for the ingest handlers, which finish their
sessions (finals published) when uvicorn closes their sockets with 1012; then the engine and the bus close."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.auth import Auth, AuthMiddleware
from gateway.bus import Bus, MemoryBus, RedisBus
from gateway import ingest
from gateway.compat import deepgram, openai_audio, realtime
from gateway.compat.intake import Endpoint
from gateway.compat.stepaudio_sse import asr_sse
from gateway.config import ServeConfig
from gateway.limits import BodyLimitMiddleware, StreamLimits
from gateway.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.pages import routes as page_routes
from gateway.sse import events
from gateway.state import Gateway
from gateway.subtitles import subtitles
from gateway.tokens import tokens
from gateway.ws import captions

log = logging.getLogger("livecaptions.app")


def make_bus(config: ServeConfig) -> Bus:
    if config.redis_url is None:
        return MemoryBus(config.history_len, registry_ttl_s=config.registry_ttl_s, stream_ttl_s=config.history_ttl_s,
                         max_streams=config.history_streams)
    return RedisBus(config.redis_url, history_len=config.history_len, registry_ttl_s=config.registry_ttl_s,
                    prefix=config.redis_prefix, stream_ttl_s=config.history_ttl_s)


async def _load(gw: Gateway) -> None:
    from engine.runner import ModelRunner  # torch: imported here, not at app import
    from engine.service import Engine

    def build() -> ModelRunner:
        runner = ModelRunner(gw.config.engine)
        runner.warm_up()  # the first stream's captions must not pay for lazy initialisation
        return runner

    try:
        gw.engine = Engine(await asyncio.to_thread(build))
        log.info("model %s ready", gw.config.engine.model)
    except Exception as e:  # stays unready (503) with the reason; the process keeps serving /healthz
        gw.load_error = e
        log.exception("model failed to load")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    config: ServeConfig = app.state.config
    gw = Gateway(config, make_bus(config), Metrics(lambda: len(gw.sessions), lambda: gw.engine), app.state.auth,
                 StreamLimits(config.max_streams_per_key))
    app.state.gateway = gw
    await gw.bus.start()
    gw.loader = asyncio.create_task(_load(gw))
    try:
        yield
    finally:
        gw.begin_drain()
        await gw.loader  # a load in a thread cannot be cancelled; wait for it, then release it
        # Normally empty by now (uvicorn waited for the ingest handlers); close any left, finals published.
        for stream, session in list(gw.sessions.items()):
            try:
                await session.close()
            except Exception:
                log.exception("stream %s did not close cleanly", stream)
        if gw.engine is not None:
            await asyncio.to_thread(gw.engine.close)  # finishes queued decodes
        await gw.bus.close()


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    bus = await gw.bus.ping()
    body = {"ready": gw.ready and bus, "model": gw.engine is not None, "bus": bus, "draining": gw.draining}
    if gw.load_error is not None:
        body["error"] = str(gw.load_error)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


async def metrics(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def streams(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    return JSONResponse({"streams": await gw.bus.live_streams()})


async def listen(ws: WebSocket) -> None:
    """`/v1/listen` speaks two protocols: Deepgram's for its clients (they name a model or Deepgram options),
    ours otherwise."""
    await (deepgram.listen if deepgram.requested(ws.query_params) else ingest.listen)(ws)


def create_app(config: ServeConfig) -> Starlette:
    auth = Auth(config.api_keys, config.token_secret, config.allowed_origins, config.max_token_ttl_s,
                allowed_hosts=config.allowed_hosts if config.loopback_only else None)
    middleware = [Middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes or 2**63),
                  Middleware(AuthMiddleware, auth=auth)]
    if config.allowed_origins:  # outermost: a CORS preflight carries no credentials
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type",
                                                                                      "Last-Event-ID"]))
    app = Starlette(lifespan=lifespan, middleware=middleware, routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        WebSocketRoute("/v1/listen", listen),
        WebSocketRoute("/v1/realtime", realtime.openai),
        WebSocketRoute("/v1/realtime/asr/stream", realtime.stepfun),
        Route("/v1/tokens", tokens, methods=["POST"]),
        Route("/v1/audio/asr/sse", Endpoint(asr_sse), methods=["POST"]),
        Route("/v1/audio/transcriptions", Endpoint(openai_audio.transcriptions), methods=["POST"]),
        Route("/v1/audio/translations", Endpoint(openai_audio.translations), methods=["POST"]),
        Route("/v1/models", openai_audio.models),
        Route("/v1/models/{model:path}", openai_audio.model),
        Route("/v1/streams", streams),
        WebSocketRoute("/v1/streams/{stream}/captions", captions),
        Route("/v1/streams/{stream}/events", events),
        Route("/v1/streams/{stream}/captions.{fmt}", subtitles),
        *page_routes(),
    ])
    app.state.config, app.state.auth = config, auth
    return app
