"""`GET /v1/streams/{stream}/captions.vtt|.srt`: a stream's finals so far (from the bus history) as subtitles.

Only what the bus still retains (--history-len events per stream, partials included) can be written out."""
from __future__ import annotations

import datetime

import srt
import webvtt
from starlette.requests import Request
from starlette.responses import Response

from gateway.bus import Event
from gateway.config import STREAM_ID
from gateway.errors import error_response
from gateway.state import Gateway

MEDIA_TYPES = {"vtt": "text/vtt; charset=utf-8", "srt": "application/x-subrip; charset=utf-8"}


async def subtitles(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    stream, fmt = request.path_params["stream"], request.path_params["fmt"]
    if fmt not in MEDIA_TYPES or not STREAM_ID.fullmatch(stream):
        return error_response(404, "not_found", "no such subtitle format or stream id")
    history = await gw.bus.history(stream)
    if not history:
        return error_response(404, "not_found", f"no stream {stream!r} in the history")
    finals = [e for _, e in history if e.get("type") == "caption.final"]
    body = to_vtt(finals) if fmt == "vtt" else to_srt(finals)
    return Response(body, media_type=MEDIA_TYPES[fmt])


def to_vtt(finals: list[Event]) -> str:
    vtt = webvtt.WebVTT()
    for e in finals:
        vtt.captions.append(webvtt.Caption(_clock(e["start"]), _clock(e["end"]), e["text"].strip()))
    return vtt.content if finals else "WEBVTT\n"


def to_srt(finals: list[Event]) -> str:
    return srt.compose([srt.Subtitle(i, datetime.timedelta(seconds=e["start"]), datetime.timedelta(seconds=e["end"]),
                                     e["text"].strip()) for i, e in enumerate(finals, 1)])


def _clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
