"""The one shape of an HTTP error from this service (OpenAI's, so compatible clients parse ours too):
`{"error": {"message": <for people>, "type": <code>, "code": <code>}}` with a matching status; and the one way to
read a client's JSON."""
from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def parse_json(text: str | bytes) -> Any:
    """A client's JSON -> its value. ValueError for anything else, too deeply nested JSON included (json raises
    RecursionError for `[` x 100000, which would end the request with a 500 or the socket with 1011)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
