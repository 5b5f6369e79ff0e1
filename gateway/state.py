"""What one running app holds (as `app.state.gateway`): config, bus, engine, open sessions, metrics.

Made by the lifespan (gateway/app.py); routes only read it, except ingest, which adds and removes its session."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.auth import Auth
from gateway.bus import Bus
from gateway.config import ServeConfig
from gateway.limits import StreamLimits
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from engine.service import Engine
    from gateway.session import CaptionSession


@dataclass(eq=False)
class Gateway:
    config: ServeConfig
    bus: Bus
    metrics: Metrics
    auth: Auth
    limits: StreamLimits
    engine: Engine | None = None  # None until the model is loaded and warm
    load_error: BaseException | None = None
    draining: bool = False  # SIGTERM seen: no new ingest
    sessions: dict[str, CaptionSession] = field(default_factory=dict)  # ingest streams open on this instance
    loader: asyncio.Task[None] | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # draining and no session left: SSE may end

    def begin_drain(self) -> None:
        self.draining = True
        self._check_drained()

    def session_done(self, stream: str) -> None:
        self.sessions.pop(stream, None)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.draining and not self.sessions:
            self.drained.set()

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self.draining
