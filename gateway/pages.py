"""The web pages (web/): `/` live captions from the microphone or a file, `/overlay` for an OBS browser source,
`/watch` a viewer's full transcript, their static assets under `/static`, and the icon at `/favicon.ico`.

Plain HTML, ES modules and CSS served as files: no build step, no templating. The pages are public (auth.py RULES);
what they fetch (the ingest socket, SSE) carries a token when the server has API keys."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"
PAGES = {"/": "index.html", "/overlay": "overlay.html", "/watch": "watch.html"}
# Pages are tiny and change with the server: revalidate each load (ETag), so an upgrade never mixes old and new.
NO_STALE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    path = WEB / name

    async def page(request: Request) -> Response:
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=NO_STALE)

    return page


class _Static(StaticFiles):
    """StaticFiles that asks browsers to revalidate too (the asset names carry no content hash)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_STALE)
        return response


async def favicon(request: Request) -> Response:
    return FileResponse(WEB / "static" / "favicon.svg", media_type="image/svg+xml", headers=NO_STALE)


def routes() -> list[BaseRoute]:
    return [*(Route(url, _page(name), methods=["GET", "HEAD"]) for url, name in PAGES.items()),
            Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
            Mount("/static", _Static(directory=WEB / "static"), name="static")]
