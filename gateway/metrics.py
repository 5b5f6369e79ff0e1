"""Prometheus metrics of one app, on its own CollectorRegistry (two apps in a process never clash)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway import events as ev

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self, live_streams: Callable[[], int], engine: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self._engine = engine  # () -> the Engine, or None while the model loads
        self._batches_seen = self._started_seen = 0
        self._tokens = self._forwards = 0  # mirrors of the counters below, for the ratio gauge
        r = self.registry
        Gauge("livecaptions_live_streams", "Ingest streams open on this instance", registry=r).set_function(
            lambda: float(live_streams()))
        Gauge("livecaptions_engine_queue_depth", "Decode requests waiting for the engine", registry=r).set_function(
            lambda: float(e.queue_depth) if (e := engine()) is not None else 0.0)
        dropped = Gauge("livecaptions_engine_partials_dropped", "Partials the engine never ran (ever), by reason: "
                        "superseded by a newer one of their stream, or shed when the queue was full", ["reason"], registry=r)
        for reason in ("superseded", "overloaded"):
            dropped.labels(reason).set_function(
                lambda reason=reason: float(e.partials_dropped[reason]) if (e := engine()) is not None else 0.0)
        busy = Gauge("livecaptions_engine_busy_seconds", "Seconds each engine worker has worked (ever): the encoder "
                     "(encode and prefill) and the decoder (decoder steps); its rate is that stage's utilisation",
                     ["stage"], registry=r)
        for stage in ("encode", "decode"):
            busy.labels(stage).set_function(
                lambda stage=stage: float(getattr(e.stats, f"{stage}_s")) if (e := engine()) is not None else 0.0)
        self.segments = Counter("livecaptions_segments", "Caption finals published", registry=r)
        self.errors = Counter("livecaptions_errors", "Error events sent, by code", ["code"], registry=r)
        self.batch_size = Histogram("livecaptions_engine_batch_size", "Segments per engine batch",
                                    buckets=(1, 2, 4, 8, 16, 32), registry=r)
        self.engine_lag = Histogram("livecaptions_engine_lag_seconds",
                                    "How late the engine started a request: seconds past the time its caption was due "
                                    "(a final: when its segment ended; a partial: when the next one would come)",
                                    ["kind"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8), registry=r)
        self.lag = Histogram("livecaptions_caption_lag_seconds",
                             "How far the stream's audio clock was past a caption's end when it went out (decode latency)",
                             ["kind"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16), registry=r)
        self.tokens = Counter("livecaptions_decode_tokens", "Tokens emitted by finals", registry=r)
        self.forwards = Counter("livecaptions_decode_forwards", "Decoder passes of finals", registry=r)
        Gauge("livecaptions_mtp_tokens_per_forward", "Tokens per decoder pass over all finals (MTP speed-up)",
              registry=r).set_function(self._tokens_per_forward)

    def _tokens_per_forward(self) -> float:
        return self._tokens / self._forwards if self._forwards else 0.0

    def observe(self, event: ev.Event, lag_s: float) -> None:
        """One event the gateway sent out."""
        if isinstance(event, ev.CaptionFinal):
            self.segments.inc()
            self.tokens.inc(event.decode["tokens"])
            self.forwards.inc(event.decode["forwards"])
            self._tokens += event.decode["tokens"]
            self._forwards += event.decode["forwards"]
            self.lag.labels("final").observe(max(0.0, lag_s))
        elif isinstance(event, ev.CaptionPartial):
            self.lag.labels("partial").observe(max(0.0, lag_s))
        elif isinstance(event, ev.Error):
            self.errors.labels(event.code).inc()

    def render(self) -> bytes:
        self._sync_engine()
        return generate_latest(self.registry)

    def _sync_engine(self) -> None:
        # The engine keeps counters, not callbacks: observe the batches and starts since the last scrape (its recent
        # lists are bounded, so a scrape interval with more than they hold samples the newest).
        engine = self._engine()
        if engine is None:
            return
        stats = engine.stats
        for size in _newest(stats.batch_sizes, stats.batches - self._batches_seen):
            self.batch_size.observe(size)
        for kind, lag in _newest(stats.lags, stats.started - self._started_seen):
            self.engine_lag.labels(kind).observe(max(0.0, lag))
        self._batches_seen, self._started_seen = stats.batches, stats.started


def _newest(samples: list, count: int) -> list:
    """The last `count` of `samples` (all it holds if fewer)."""
    return samples[-count:] if count > 0 else []
