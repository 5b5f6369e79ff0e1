"""`POST /v1/tokens`: an API key mints a short-lived token for a browser or an overlay URL.

Body (JSON, all optional): {"scope": "listen"|"read" (default "read"), "stream": ID or null (any stream),
"ttl_s": seconds (default 3600)} -> {"token", "scope", "stream", "expires_at"}. The auth middleware has already
checked that the caller holds an API key (gateway/auth.py RULES)."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import Grant
from gateway.config import STREAM_ID
from gateway.errors import error_response, parse_json
from gateway.state import Gateway

DEFAULT_TTL_S = 3600.0


async def tokens(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    grant: Grant = request.state.grant
    try:
        body: Any = parse_json(await request.body() or b"{}")
    except ValueError as e:  # UnicodeDecodeError included
        return error_response(400, "invalid_json", f"the body is not valid JSON ({e})")
    try:
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        scope, stream, ttl = body.get("scope", "read"), body.get("stream"), body.get("ttl_s", DEFAULT_TTL_S)
        if unknown := set(body) - {"scope", "stream", "ttl_s"}:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        if stream is not None and not (isinstance(stream, str) and STREAM_ID.fullmatch(stream)):
            raise ValueError(f"stream must be null or match {STREAM_ID.pattern}")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
            raise ValueError("ttl_s must be a number of seconds")
        token, expires_at = gw.auth.mint(grant, scope, stream, float(ttl))
    except ValueError as e:
        return error_response(400, "invalid_request", str(e))
    return JSONResponse({"token": token, "scope": scope, "stream": stream, "expires_at": expires_at})
