"""Errors of the compatible HTTP APIs: an HTTP status and `{"error": {"message", "type", "param", "code"}}`.

The service's one error shape (gateway/errors.py: `message`, `type`, `code`) plus OpenAI's `param`, with `type`
the class OpenAI's clients expect (`invalid_request_error`, ...) rather than the code: a superset of StepFun's
(`message`, `type`), so either vendor's client reads our refusals, auth and limit ones included."""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A refused request; the message is safe to show to the client."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "server_error"), "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)
