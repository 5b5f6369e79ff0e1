"""The one shape of an HTTP error from this service (OpenAI's, so compatible clients parse ours too):
`{"error": {"message": <for people>, "type": <code>, "code": <code>}}` with a matching status."""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)
