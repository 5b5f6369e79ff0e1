"""The caption event model: what a live session tells its viewers, as frozen dataclasses with a JSON form.

Every event carries `stream` and `seq` (per stream, strictly increasing from 0, assigned by the session in emission
order). Times (`start`, `end`) are float seconds of audio from the start of the stream, rounded to the millisecond.
The JSON form is `{"type": ..., "stream": ..., "seq": ..., <fields>}` with the field names below; `EVENTS_VERSION`
changes when a field changes meaning or goes away (`session.started` carries it, so clients can tell).

Per segment the order is: speech.started, caption.partial*, speech.stopped, caption.final (no final when the
segment held no words, an `error` when its decode failed). Nothing but turn.ended refers to a segment after its final. A turn is
the segments up to a long enough silence (the stream's `turn_ms`) or a flush: turn.ended follows its last final."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

EVENTS_VERSION = 1
MS = 3  # decimals of every time in seconds


def _check_common(event: Any) -> None:
    if not isinstance(event.stream, str) or not event.stream:
        raise ValueError(f"{event.type}: stream must be a non-empty string, got {event.stream!r}")
    if not isinstance(event.seq, int) or event.seq < 0:
        raise ValueError(f"{event.type}: seq must be an int >= 0, got {event.seq!r}")
    segment = getattr(event, "segment", None)
    if segment is not None and (not isinstance(segment, int) or segment < 0):
        raise ValueError(f"{event.type}: segment must be an int >= 0, got {segment!r}")
    for name in ("start", "end"):
        if hasattr(event, name):
            value = getattr(event, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{event.type}: {name} must be seconds >= 0, got {value!r}")
            object.__setattr__(event, name, round(float(value), MS))  # frozen: round once, so JSON round-trips
    if hasattr(event, "start") and hasattr(event, "end") and event.end < event.start:
        raise ValueError(f"{event.type}: end ({event.end}) is before start ({event.start})")


@dataclass(frozen=True)
class SessionStarted:
    type: ClassVar[str] = "session.started"
    stream: str
    seq: int
    sample_rate: int  # Hz of the audio the session takes
    language: str  # the language setting: an ISO code, or "auto" (detected per segment)
    model: str
    version: int = EVENTS_VERSION

    def __post_init__(self) -> None:
        _check_common(self)
        if self.sample_rate <= 0 or not self.language or not self.model or self.version < 1:
            raise ValueError(f"{self.type}: invalid sample_rate/language/model/version in {self!r}")


@dataclass(frozen=True)
class SpeechStarted:
    type: ClassVar[str] = "speech.started"
    stream: str
    seq: int
    segment: int
    start: float  # where the segment's audio begins (200 ms pre-roll included)

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class CaptionPartial:
    """A preview of the open segment; the next partial or the final replaces it whole."""

    type: ClassVar[str] = "caption.partial"
    stream: str
    seq: int
    segment: int
    text: str
    stable: str  # prefix of `text` the last two partials agree on: viewers may stop re-rendering it
    start: float
    end: float  # how far into the segment this preview heard

    def __post_init__(self) -> None:
        _check_common(self)
        if not self.text.startswith(self.stable):
            raise ValueError(f"{self.type}: stable {self.stable!r} is not a prefix of text {self.text!r}")


@dataclass(frozen=True)
class CaptionFinal:
    """The segment's caption for good: it replaces every partial of the segment."""

    type: ClassVar[str] = "caption.final"
    stream: str
    seq: int
    segment: int
    text: str
    start: float
    end: float
    language: str  # as given, or as detected for this segment
    no_speech_prob: float
    decode: dict[str, int]  # forwards: decoder passes, tokens: tokens emitted (as in the offline JSON)
    # only on streams that asked for them (?words=true): [{"word", "start", "end", "probability"}], times in
    # stream seconds from the cross-attention (engine/alignment.py); absent from the JSON otherwise
    words: list[dict[str, Any]] | None = field(default=None, metadata={"omit_none": True})

    def __post_init__(self) -> None:
        _check_common(self)
        if set(self.decode) != {"forwards", "tokens"}:
            raise ValueError(f"{self.type}: decode must hold exactly forwards and tokens, got {sorted(self.decode)}")
        object.__setattr__(self, "no_speech_prob", round(float(self.no_speech_prob), 4))


@dataclass(frozen=True)
class SpeechStopped:
    type: ClassVar[str] = "speech.stopped"
    stream: str
    seq: int
    segment: int
    end: float  # where the segment's audio ends (200 ms post-roll included); its final follows when decoded

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class TurnEnded:
    """The speaker stopped: `turn_ms` of silence followed `segment` (or the client flushed), and every final of the
    turn is out. `text` is those finals joined; nothing more will be said in this turn."""

    type: ClassVar[str] = "turn.ended"
    stream: str
    seq: int
    segment: int  # the turn's last segment
    text: str
    start: float  # where the turn's first segment begins
    end: float  # where its last segment ends
    forced: bool = False  # a flush ended it, not the silence

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class Error:
    """Something went wrong but the session goes on (e.g. one segment's final could not be decoded)."""

    type: ClassVar[str] = "error"
    stream: str
    seq: int
    code: str  # machine-readable: final_failed, ...
    message: str  # safe to show
    segment: int | None = None  # the segment it concerns, if any

    def __post_init__(self) -> None:
        _check_common(self)
        if not self.code:
            raise ValueError(f"{self.type}: code must not be empty")


@dataclass(frozen=True)
class SessionConfigured:
    """A `config` control message took effect: decodes requested from now on use these settings."""

    type: ClassVar[str] = "session.configured"
    stream: str
    seq: int
    language: str  # ISO code, or "auto"
    prompt: str | None
    partials: bool

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class SessionEnded:
    """The last event of a stream: every final has been delivered."""

    type: ClassVar[str] = "session.ended"
    stream: str
    seq: int
    end: float  # seconds of audio the session received

    def __post_init__(self) -> None:
        _check_common(self)


Event = (SessionStarted | SpeechStarted | CaptionPartial | CaptionFinal | SpeechStopped | TurnEnded | Error
         | SessionConfigured | SessionEnded)
EVENT_TYPES: dict[str, type] = {cls.type: cls for cls in (SessionStarted, SpeechStarted, CaptionPartial, CaptionFinal,
                                                          SpeechStopped, TurnEnded, Error, SessionConfigured,
                                                          SessionEnded)}


def to_json(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict: `type` first, then the fields in declaration order (an optional field
    that is None left out)."""
    omit = {f.name for f in fields(event) if f.metadata.get("omit_none") and getattr(event, f.name) is None}
    return {"type": event.type, **{k: v for k, v in asdict(event).items() if k not in omit}}


def from_json(data: dict[str, Any]) -> Event:
    """The inverse of `to_json`. Strict: an unknown type, a missing or an unknown field is a ValueError."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}; known: {', '.join(EVENT_TYPES)}")
    names = {f.name for f in fields(cls)}
    given = set(data) - {"type"}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    if given - names or required - given:
        raise ValueError(f"{kind}: unknown fields {sorted(given - names)}, missing fields {sorted(required - given)}")
    return cls(**{k: data[k] for k in given})
