"""The caption event model: exact JSON field names, lossless round-trip, validation, versioning."""
from __future__ import annotations

import json

import pytest

from gateway.events import (EVENT_TYPES, EVENTS_VERSION, CaptionFinal, CaptionPartial, Error, SessionConfigured,
                            SessionEnded, SessionStarted, SpeechStarted, SpeechStopped, TurnEnded, from_json,
                            to_json)

ONE_OF_EACH = [
    SessionStarted("s1", 0, sample_rate=16000, language="auto", model="base"),
    SpeechStarted("s1", 1, segment=0, start=0.12),
    CaptionPartial("s1", 2, segment=0, text="and so my fellow", stable="and so my", start=0.12, end=1.62),
    SpeechStopped("s1", 3, segment=0, end=2.33),
    CaptionFinal("s1", 4, segment=0, text="And so my fellow Americans.", start=0.12, end=2.33, language="en",
                 no_speech_prob=0.0777, decode={"forwards": 7, "tokens": 7}),
    Error("s1", 5, code="final_failed", message="segment 1 could not be transcribed: engine is closed", segment=1),
    SessionEnded("s1", 6, end=11.0),
    SessionConfigured("s1", 7, language="zh", prompt=None, partials=True),
    TurnEnded("s1", 8, segment=0, text="And so my fellow Americans.", start=0.12, end=2.33),
]

FIELDS = {  # the wire format: viewers, the bus history and the acceptance check read these names
    "session.started": ["type", "stream", "seq", "sample_rate", "language", "model", "version"],
    "speech.started": ["type", "stream", "seq", "segment", "start"],
    "caption.partial": ["type", "stream", "seq", "segment", "text", "stable", "start", "end"],
    "speech.stopped": ["type", "stream", "seq", "segment", "end"],
    "caption.final": ["type", "stream", "seq", "segment", "text", "start", "end", "language", "no_speech_prob",
                      "decode"],
    "error": ["type", "stream", "seq", "code", "message", "segment"],
    "session.ended": ["type", "stream", "seq", "end"],
    "session.configured": ["type", "stream", "seq", "language", "prompt", "partials"],
    "turn.ended": ["type", "stream", "seq", "segment", "text", "start", "end", "forced"],
}


def test_every_type_has_its_field_names_and_round_trips_through_json_text():
    assert {e.type for e in ONE_OF_EACH} == set(EVENT_TYPES) == set(FIELDS)
    for event in ONE_OF_EACH:
        data = to_json(event)
        assert list(data) == FIELDS[event.type]
        wire = json.dumps(data)  # plain JSON types only
        assert from_json(json.loads(wire)) == event
    assert to_json(ONE_OF_EACH[0])["version"] == EVENTS_VERSION == 1
    assert to_json(ONE_OF_EACH[4])["decode"] == {"forwards": 7, "tokens": 7}


def test_times_are_rounded_to_the_millisecond_once():
    e = CaptionPartial("s", 3, segment=2, text="a b", stable="a", start=1 / 3, end=2.0004999)
    assert (e.start, e.end) == (0.333, 2.0)
    assert from_json(to_json(e)) == e
    assert CaptionFinal("s", 0, 0, "x", 0, 1, "en", 0.123456, {"forwards": 1, "tokens": 2}).no_speech_prob == 0.1235


@pytest.mark.parametrize("make", [
    lambda: SpeechStarted("s", -1, segment=0, start=0.0),  # seq
    lambda: SpeechStarted("", 0, segment=0, start=0.0),  # stream
    lambda: SpeechStarted("s", 0, segment=-1, start=0.0),
    lambda: SpeechStopped("s", 0, segment=0, end=float("nan")),
    lambda: CaptionPartial("s", 0, segment=0, text="a b", stable="b", start=0.0, end=1.0),  # stable not a prefix
    lambda: CaptionPartial("s", 0, segment=0, text="a", stable="", start=2.0, end=1.0),  # end before start
    lambda: CaptionFinal("s", 0, 0, "x", 0, 1, "en", 0.1, {"forwards": 1}),  # decode keys
    lambda: Error("s", 0, code="", message="m"),
    lambda: TurnEnded("s", 0, segment=1, text="x", start=2.0, end=1.0),
    lambda: SessionStarted("s", 0, sample_rate=0, language="en", model="base"),
])
def test_invalid_events_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_from_json_is_strict():
    good = to_json(ONE_OF_EACH[1])
    with pytest.raises(ValueError, match="unknown event type"):
        from_json({**good, "type": "caption.draft"})
    with pytest.raises(ValueError, match="unknown fields"):
        from_json({**good, "colour": "red"})
    with pytest.raises(ValueError, match="missing fields"):
        from_json({k: v for k, v in good.items() if k != "start"})
    assert from_json({k: v for k, v in to_json(ONE_OF_EACH[5]).items() if k != "segment"}).segment is None  # optional


def test_events_are_frozen():
    with pytest.raises(AttributeError):
        ONE_OF_EACH[1].seq = 9  # type: ignore[misc]
