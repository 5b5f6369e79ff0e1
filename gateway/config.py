"""`livecaptions serve` settings: one frozen dataclass, validated once, read by every part of the app."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # engine.runner pulls in torch: only the lifespan imports it for real
    from engine.messages import EngineConfig

STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # URL-path and Redis-key safe


def check_subscription(stream: str, after: str | None) -> None:
    """A viewer's request: ValueError unless `stream` is a valid id and `after`, if given, a bus event id."""
    from gateway.bus import id_key

    if not STREAM_ID.fullmatch(stream):
        raise ValueError(f"stream must match {STREAM_ID.pattern}")
    if after is not None:
        id_key(after)
LANGUAGE = re.compile(r"auto|[a-z]{2,3}")


@dataclass(frozen=True)
class ServeConfig:
    engine: EngineConfig
    host: str = "127.0.0.1"
    port: int = 8000
    language: str = "auto"  # default for ingest streams that do not pass ?language=
    redis_url: str | None = None  # None: in-process MemoryBus (single server)
    redis_prefix: str = "livecaptions:"
    max_frame_bytes: int = 256 * 1024  # per WebSocket message; 100 ms of 48 kHz stereo f32 is 38 400
    idle_timeout_s: float = 30.0  # an ingest socket silent this long is closed (4408)
    history_len: int = 5000  # events kept per stream for resume and .vtt/.srt
    history_ttl_s: float = 86400.0  # a stream's history is dropped this long after its last event
    history_streams: int = 1000  # in-process bus: histories kept at most (the least recently published go first)
    registry_ttl_s: float = 15.0  # a stream not heartbeating this long drops off GET /v1/streams
    sse_ping_s: float = 15.0
    log_level: str = "info"
    # auth (gateway/auth.py): no keys = auth off, loopback only unless allow_anonymous
    api_keys: tuple[str, ...] = ()  # "sha256:<hex>" hashes (plain keys are hashed on load: `livecaptions hash-key`)
    token_secret: str | None = None  # signs tokens; default: derived from the key hashes (same on every instance)
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed besides the server's own; "*": any
    allow_anonymous: bool = False  # no keys, yet serve other hosts than loopback (a trusted network or an auth proxy)
    allowed_hosts: tuple[str, ...] = ()  # without keys, Host names served besides loopback ones (DNS rebinding guard)
    max_token_ttl_s: float = 86400.0
    # limits (gateway/limits.py): 0 = unlimited
    max_streams_per_key: int = 100  # concurrent ingest/realtime streams and transcriptions per key, per instance
    max_session_s: float = 0.0  # an ingest session this long is closed (4413), finals delivered first
    max_body_bytes: int = 100 * 1024 * 1024  # HTTP request bodies (file uploads): 413 beyond
    max_audio_s: float = 4 * 3600.0  # audio per HTTP transcription request: 413 beyond

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not LANGUAGE.fullmatch(self.language):
            raise ValueError(f"language must be 'auto' or an ISO code such as 'en', got {self.language!r}")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis URL must start with redis://, rediss:// or unix://, got {self.redis_url!r}")
        if self.max_frame_bytes < 1024:
            raise ValueError(f"max frame bytes must be >= 1024, got {self.max_frame_bytes}")
        for name in ("idle_timeout_s", "registry_ttl_s", "sse_ping_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_streams_per_key", "max_session_s", "max_body_bytes", "max_audio_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: unlimited), got {getattr(self, name)}")
        if not self.max_token_ttl_s > 0:
            raise ValueError(f"max token TTL must be > 0, got {self.max_token_ttl_s}")
        if self.history_len < 10:
            raise ValueError(f"history length must be >= 10, got {self.history_len}")
        if not self.history_ttl_s > 0 or self.history_streams < 1:
            raise ValueError(f"history TTL must be > 0 and history streams >= 1, got {self.history_ttl_s} and "
                             f"{self.history_streams}")

    @property
    def loopback_only(self) -> bool:
        """No keys and not explicitly anonymous: the server must not be reachable from other hosts."""
        return not self.api_keys and not self.allow_anonymous

    @property
    def ws_max_size(self) -> int:
        # uvicorn's own hard cap, above ours so that we, not the protocol layer, answer an oversize frame (with an
        # error event before 1009); only a frame beyond this gets a bare 1009.
        return 4 * self.max_frame_bytes + 65536
