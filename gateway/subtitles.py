"""`GET /v1/streams/{stream}/captions.vtt|.srt`: a stream's finals so far (from the bus history) as subtitles; and
the cues of every subtitle this service writes.

Only what the bus still retains (--history-len events per stream, partials included) can be written out. A final
or a file's segment that carries timed words is cut into cues of at most LINE_CHARS characters (a readable line;
a new cue also after a pause of PAUSE_S), each from its first word's start to its last word's end; one without
words is one cue."""
from __future__ import annotations

import datetime

import srt
import webvtt
from starlette.requests import Request
from starlette.responses import Response

from engine.messages import UNSPACED_LANGUAGES
from gateway.bus import Event
from gateway.config import STREAM_ID
from gateway.errors import error_response
from gateway.state import Gateway

LINE_CHARS = 42  # the common subtitle guideline for one line
PAUSE_S = 1.0
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


def cues(finals: list[Event], line_chars: int = LINE_CHARS) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue: finals (or segments: `start`, `end`, `text`, optional `words` and
    `language`) cut at word times into lines of at most `line_chars` characters."""
    out = []
    for e in finals:
        words = e.get("words")
        if not words:
            out.append((e["start"], e["end"], e["text"].strip()))
            continue
        gap = "" if e.get("language") in UNSPACED_LANGUAGES else " "
        line: list[dict] = []
        for w in words:
            text = gap.join(x["word"] for x in line + [w])
            if line and (len(text) > line_chars or w["start"] - line[-1]["end"] > PAUSE_S):
                out.append((line[0]["start"], line[-1]["end"], gap.join(x["word"] for x in line)))
                line = []
            line.append(w)
        out.append((line[0]["start"], line[-1]["end"], gap.join(x["word"] for x in line)))
    return out


def to_vtt(finals: list[Event], line_chars: int = LINE_CHARS) -> str:
    vtt = webvtt.WebVTT()
    for start, end, text in cues(finals, line_chars):
        vtt.captions.append(webvtt.Caption(_clock(start), _clock(end), text))
    return vtt.content if finals else "WEBVTT\n"


def to_srt(finals: list[Event], line_chars: int = LINE_CHARS) -> str:
    return srt.compose([srt.Subtitle(i, datetime.timedelta(seconds=start), datetime.timedelta(seconds=end), text)
                        for i, (start, end, text) in enumerate(cues(finals, line_chars), 1)])


def _clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
