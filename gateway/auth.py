"""Who may do what: API keys (kept as sha256 hashes), short-lived scoped tokens, and the browser Origin allowlist.

A request proves itself with `Authorization: Bearer <key or token>` (`Token <...>` too, as Deepgram clients send)
or `?token=<token>` (browsers cannot set WebSocket headers; query strings end up in logs and browser history, so
only a short-lived token goes there, never a key). An API key may do everything; a token only what it
was minted for (`POST /v1/tokens`): a scope ("listen": send audio, transcribe; "read": watch a stream), optionally
one stream, until it expires. Tokens are HMAC-signed with a secret that every instance derives from the same
configured key hashes (or --token-secret), so a token minted on one instance works on all of them.

With no keys configured auth is off: every request passes as "anonymous", and `serve` binds loopback only and serves
only loopback Host names (and --allowed-host ones), so a web page whose name was rebound to 127.0.0.1 (DNS
rebinding) is refused.
`AuthMiddleware` applies RULES to every HTTP request and WebSocket before any route runs, and leaves the caller's
Grant in `request.state.grant` for per-key limits."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import events as ev
from gateway.errors import error_body

SCOPES = ("listen", "read")
KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")
TOKEN_PREFIX = "lct1."
LOOPBACK_HOST = re.compile(r"localhost|.+\.localhost|127(\.\d{1,3}){3}|::1", re.IGNORECASE)

# path -> what it needs: a scope, "key" (an API key itself), or None (public). The stream a token must be bound
# to, if it is bound, comes from the path's `stream` group or the `stream` query parameter. First match wins.
RULES: list[tuple[re.Pattern[str], str | None]] = [(re.compile(p), need) for p, need in [
    (r"/v1/tokens", "key"),
    (r"/v1/listen", "listen"),
    (r"/v1/streams/(?P<stream>[^/]+)/.*", "read"),
    (r"/v1/streams", "read"),
    (r"/v1/(audio|realtime)(/.*)?", "listen"),
    (r"/v1/models(/.*)?", "any"),
    (r"/v1/.*", "key"),  # anything else under the API: keys only, until a rule says otherwise
    (r".*", None),  # pages, static files, /healthz, /readyz, /metrics
]]


def hash_key(key: str) -> str:
    """What config stores for an API key (`livecaptions hash-key`); an already hashed key is returned as is."""
    return key if KEY_HASH.fullmatch(key) else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What the caller may do."""

    subject: str  # "key:<8 hex of the key hash>", or "anonymous" with auth off: what per-key limits count
    scopes: frozenset[str]  # subset of SCOPES; an API key has all of them
    stream: str | None = None  # a token bound to one stream; None: any stream
    expires_at: float | None = None  # unix seconds; None: an API key
    key: bool = False  # an API key itself (may mint tokens)

    def allows(self, need: str, stream: str | None) -> bool:
        if need == "key":
            return self.key
        if need != "any" and need not in self.scopes:
            return False
        return self.stream is None or need == "any" or stream == self.stream


class AuthError(Exception):
    """A refused request: HTTP `status` with an error body, or for a WebSocket an error event and `close_code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @property
    def close_code(self) -> int:
        return 4401 if self.status == 401 else 4403

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


class Auth:
    def __init__(self, key_hashes: tuple[str, ...] = (), token_secret: str | None = None,
                 allowed_origins: tuple[str, ...] = (), max_token_ttl_s: float = 86400.0,
                 allowed_hosts: tuple[str, ...] | None = None) -> None:
        """`allowed_hosts`: None serves any Host name; a tuple serves loopback names and those only."""
        self.keys = frozenset(hash_key(k) for k in key_hashes)
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self.max_token_ttl_s = max_token_ttl_s
        seed = token_secret or "\n".join(sorted(self.keys))
        self._secret = hashlib.sha256(b"livecaptions-token\n" + seed.encode()).digest()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, credential: str | None, in_query: bool = False) -> Grant:
        """The grant of a key or token (`in_query`: from ?token=, where keys are refused) -> Grant; AuthError(401) if
        it is missing, unknown or expired."""
        if not self.enabled:
            return Grant("anonymous", frozenset(SCOPES), key=True)
        if not credential:
            raise AuthError(401, "unauthorized", "an API key or token is required: Authorization: Bearer KEY or ?token=")
        if credential.startswith(TOKEN_PREFIX):
            return self._verify(credential)
        if in_query:
            raise AuthError(401, "unauthorized", "?token= takes a token, not an API key (query strings end up in "
                            "logs): send Authorization: Bearer KEY, or mint a token with POST /v1/tokens")
        h = hash_key(credential)
        if h not in self.keys:
            raise AuthError(401, "unauthorized", "invalid API key")
        return Grant("key:" + h[7:15], frozenset(SCOPES), key=True)

    def mint(self, grant: Grant, scope: str, stream: str | None, ttl_s: float) -> tuple[str, float]:
        """A token for `scope` (on `stream`, or any) valid `ttl_s` seconds -> (token, expires_at)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not 0 < ttl_s <= self.max_token_ttl_s:
            raise ValueError(f"ttl_s must be in (0, {self.max_token_ttl_s:g}], got {ttl_s}")
        exp = round(time.time() + ttl_s, 3)
        payload = _b64(json.dumps({"sub": grant.subject, "scp": scope, "str": stream, "exp": exp},
                                  separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{self._sign(payload)}", exp

    def _verify(self, token: str) -> Grant:
        payload, _, sig = token[len(TOKEN_PREFIX):].partition(".")
        if not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):  # bytes: any characters compare
            raise AuthError(401, "unauthorized", "invalid token")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        if claims["exp"] < time.time():
            raise AuthError(401, "token_expired", "the token has expired: mint a new one with POST /v1/tokens")
        return Grant(claims["sub"], frozenset([claims["scp"]]), claims["str"], claims["exp"])

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def check_origin(self, scope: Scope, headers: Headers) -> None:
        """Browser WebSockets carry an Origin: allow the server's own origin (scheme, host and port) and the
        allowlist ("*": any). Behind a TLS proxy the page's scheme is the proxy's (X-Forwarded-Proto)."""
        origin = headers.get("origin")
        if origin is None or "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins:
            return
        schemes = {"https" if scope.get("scheme") in ("https", "wss") else "http", headers.get("x-forwarded-proto")}
        if any(origin.rstrip("/") == f"{s}://{headers.get('host')}" for s in schemes if s):
            return
        raise AuthError(403, "forbidden_origin", f"origin {origin} is not allowed (--allowed-origin)")

    def check_host(self, headers: Headers) -> None:
        """With `allowed_hosts` set (no keys): only a loopback Host name or an allowed one is served."""
        if self.allowed_hosts is None:
            return
        try:
            name = urlsplit("//" + headers.get("host", "")).hostname or ""
        except ValueError:  # e.g. an unclosed IPv6 bracket
            name = ""
        if not (LOOPBACK_HOST.fullmatch(name) or name in self.allowed_hosts):
            raise AuthError(403, "forbidden_host", f"Host {name!r} is not served without API keys: open it as "
                            "localhost or 127.0.0.1, or start the server with --allowed-host or --api-key")

    def grant(self, scope: Scope) -> Grant:
        """Apply RULES to one ASGI request -> its Grant; AuthError if refused."""
        headers, path = Headers(scope=scope), scope["path"]
        self.check_host(headers)
        if scope["type"] == "websocket":
            self.check_origin(scope, headers)
        need = next(n for p, n in RULES if p.fullmatch(path))
        scheme, _, value = headers.get("authorization", "").partition(" ")
        credential = value.strip() if scheme.lower() in ("bearer", "token") else None
        in_query = not credential
        credential = credential or QueryParams(scope.get("query_string", b"")).get("token")
        if need is None:  # public: whoever it is (a missing or bad credential does not matter here)
            try:
                return self.authenticate(credential, in_query)
            except AuthError:
                return Grant("anonymous", frozenset())
        grant = self.authenticate(credential, in_query)
        stream = _stream_of(scope)
        if not grant.allows(need, stream):
            what = "an API key" if need == "key" else f"{need!r} access" + (f" to stream {stream!r}" if stream else "")
            raise AuthError(403, "forbidden", f"this credential does not grant {what}")
        return grant


class AuthMiddleware:
    """Refuses what Auth refuses before any route runs: HTTP gets `status` + a JSON error body; a WebSocket is
    accepted, sent one error event and closed with 4401/4403 (a browser cannot read an HTTP refusal of a socket)."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        try:
            grant = self.auth.grant(scope)
        except AuthError as e:
            return await _refuse(scope, receive, send, e)
        scope.setdefault("state", {})["grant"] = grant
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, e: AuthError) -> None:
    if scope["type"] == "http":
        body = json.dumps(e.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if e.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="livecaptions"'))
        await send({"type": "http.response.start", "status": e.status, "headers": headers})
        return await send({"type": "http.response.body", "body": body})
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    event = ev.Error(stream=_stream_of(scope) or "-", seq=0, code=e.code, message=e.message)
    await send({"type": "websocket.send", "text": json.dumps(ev.to_json(event))})
    await send({"type": "websocket.close", "code": e.close_code, "reason": e.message[:120]})


def _stream_of(scope: Scope) -> str | None:
    """The stream a request concerns: the path's `stream` group, else the `stream` query parameter."""
    match = next(m for p, _ in RULES if (m := p.fullmatch(scope["path"])))
    return match.groupdict().get("stream") or QueryParams(scope.get("query_string", b"")).get("stream")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
