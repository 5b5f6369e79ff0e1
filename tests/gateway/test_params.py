"""The pure parts of the edge, without a server: /v1/listen's query, tokens, Deepgram's options and WAV headers,
realtime session updates. (The same refusals end to end, over real sockets: test_ingest, test_auth, compat/.)"""
from __future__ import annotations

import struct
import time

import pytest
from starlette.datastructures import QueryParams

from engine.messages import EngineConfig
from gateway.auth import Auth, AuthError, Grant
from gateway.compat import deepgram, realtime
from gateway.config import ServeConfig
from gateway.ingest import ListenParams
from gateway.session import SessionConfig

CONFIG = ServeConfig(engine=EngineConfig())


def listen(query: str) -> ListenParams:
    return ListenParams.parse(QueryParams(query), CONFIG)


def test_listen_parameters():
    p = listen("stream=room-1&language=en&sample_rate=48000&channels=2&partials=false&turn_ms=900&words=true")
    assert (p.stream, p.language, p.sample_rate, p.channels, p.partials, p.turn_ms, p.words) == \
        ("room-1", "en", 48000, 2, False, 900, True)
    config = p.session_config()
    assert (config.language, config.partials, config.turn_ms, config.words) == ("en", False, 900, True)
    assert listen("").stream and listen("language=auto").session_config().language is None
    defaults = listen("stream=a")
    assert (defaults.encoding, defaults.sample_rate, defaults.endpointing_ms) == ("pcm_s16le", 16000,
                                                                                  SessionConfig.endpoint_ms)
    for bad in ("stream=no spaces", "encoding=mp3", "sample_rate=4000", "sample_rate=fast", "channels=9",
                "language=english", "partials=maybe", "words=2", "turn_ms=50", "endpointing_ms=-1", "rate=16000"):
        with pytest.raises(ValueError):
            listen(bad)


def test_tokens_are_scoped_bound_signed_and_expire():
    auth = Auth(("sha256:" + "0" * 64,), token_secret="s")
    key = Grant("key:00000000", frozenset({"listen", "read"}), key=True)
    token, expires = auth.mint(key, "read", "room1", 60)
    grant = auth.authenticate(token, in_query=True)
    assert grant.scopes == {"read"} and grant.stream == "room1" and expires > time.time()
    assert grant.allows("read", "room1") and not grant.allows("read", "room2") and not grant.allows("listen", "room1")
    payload, sig = token[len("lct1."):].split(".")
    other_char = "B" if sig[-1] == "A" else "A"
    for forged in (f"lct1.{payload}.{sig[:-1]}{other_char}", f"lct1.{payload}x.{sig}", "lct1.abc.\u00e9", "lct1.",
                   "lct1..."):
        with pytest.raises(AuthError) as e:
            auth.authenticate(forged)
        assert e.value.status == 401
    other = Auth(("sha256:" + "0" * 64,), token_secret="another")
    with pytest.raises(AuthError):
        other.authenticate(token)  # signed with another secret
    with pytest.raises(AuthError):
        auth.authenticate("my-raw-key", in_query=True)  # keys never in a URL
    for scope, ttl in (("admin", 60), ("read", 0), ("read", 10**9)):
        with pytest.raises(ValueError):
            auth.mint(key, scope, None, ttl)


def test_deepgram_options():
    o = deepgram.Options.parse(QueryParams("model=nova-3&encoding=linear16&sample_rate=8000&channels=2"
                                           "&interim_results=true&endpointing=300&utterance_end_ms=1500"
                                           "&keyterm=Kubernetes:2&keywords=Redis&language=en-US"), CONFIG)
    assert (o.encoding, o.sample_rate, o.channels, o.interim_results) == ("pcm_s16le", 8000, 2, True)
    assert (o.endpointing_ms, o.utterance_end_ms, o.language, o.prompt) == (300, 1500, "en", "Kubernetes, Redis")
    config = o.session_config()
    assert config.words and config.empty_finals and config.endpoint_ms == config.turn_ms == 300
    wav = deepgram.Options.parse(QueryParams("model=nova-2"), CONFIG)
    assert wav.encoding is None and wav.endpointing_ms == SessionConfig.endpoint_ms
    assert deepgram.Options.parse(QueryParams("endpointing=false"), CONFIG).endpointing_ms is None
    assert deepgram.requested(QueryParams("model=nova-3")) and not deepgram.requested(QueryParams("language=en"))
    for bad in ("encoding=opus", "encoding=linear16", "multichannel=true", "sample_rate=1000", "stream=a b",
                "language=!!", "utterance_end_ms=10"):
        with pytest.raises(ValueError):
            deepgram.Options.parse(QueryParams(bad), CONFIG)


def wav(tag: int, channels: int, rate: int, bits: int, extra: bytes = b"") -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF" + struct.pack("<I", 0) + b"WAVE" + extra + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", 0)


def test_wav_headers():
    assert deepgram.wav_header(wav(1, 1, 16000, 16)) == ("pcm_s16le", 16000, 1, len(wav(1, 1, 16000, 16)))
    assert deepgram.wav_header(wav(3, 2, 48000, 32))[:3] == ("pcm_f32le", 48000, 2)
    listed = wav(1, 1, 8000, 16, extra=b"LIST" + struct.pack("<I", 4) + b"INFO")  # a chunk before fmt
    assert deepgram.wav_header(listed)[:3] == ("pcm_s16le", 8000, 1)
    assert deepgram.wav_header(wav(1, 1, 16000, 16)[:30]) is None  # not all here yet: wait for more
    for bad in (b"ID3" + b"\0" * 64, wav(85, 1, 16000, 16), wav(1, 1, 16000, 24)):
        with pytest.raises(Exception):
            deepgram.wav_header(bad)


def test_realtime_session_updates():
    served = "base"
    s = realtime._update(realtime.Settings(realtime.OpenAI.default_format), {"audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "gpt-4o-transcribe", "language": "de", "prompt": "Grüße"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}}}, realtime.OpenAI(), served)
    assert (s.format.rate, s.language, s.prompt, s.turn_detection.silence_duration_ms) == (24000, "de", "Grüße", 800)
    assert s.session_config().endpoint_ms == 800
    manual = realtime._update(s, {"audio": {"input": {"turn_detection": None}}}, realtime.OpenAI(), served)
    assert manual.turn_detection is None and manual.language == "de"  # only what the update holds changes
    step = realtime._update(realtime.Settings(realtime.StepFun.default_format), {"audio": {"input": {
        "format": {"type": "pcm", "codec": "pcm_s16le", "rate": 8000, "bits": 16, "channel": 1},
        "transcription": {"hotwords": ["Kubernetes"], "enable_itn": False}}}}, realtime.StepFun(), served)
    assert (step.format.rate, step.prompt, step.enable_itn) == (8000, "Kubernetes", False)
    for dialect, update in ((realtime.OpenAI(), {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}),
                            (realtime.OpenAI(), {"audio": "loud"}),
                            (realtime.OpenAI(), {"audio": {"input": {"transcription": {"language": 7}}}}),
                            (realtime.StepFun(), {"audio": {"input": {"format": {"type": "pcm", "bits": 8}}}})):
        with pytest.raises(realtime.Invalid):
            realtime._update(realtime.Settings(dialect.default_format), update, dialect, served)
