"""The engine as a service: two worker threads own the model; any thread or event loop submits requests.

    engine = Engine(ModelRunner(EngineConfig()))
    transcript = await engine.transcribe(audio, DecodeOptions(language="en"), stream="s1", final=True)

Continuous batching, as a two-stage pipeline. The encoder worker admits what the scheduler picks
(engine/scheduler.py decides everything about what runs when: finals first, earliest due first, partials within
their budget and share), encodes them (only the audio that is new since its stream's last decode
where one was kept: engine/preview.py) and prefills their decoding. The decoder worker joins them to the
running decode batch between steps, runs one decoder step of the whole batch at a time (MTP/previous drafts
verified inside it) and resolves the rows that finished. So a final waits for at most the encode in progress and
its own, never for a batch of partials to finish decoding; and encoding overlaps decoding. Cancelling the
awaiting task, or `cancel_stream`, frees queued entries."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from engine.decoding import Batch
from engine.messages import SAMPLE_RATE, DecodeOptions, Transcript
from engine.preview import Preview
from engine.runner import ModelRunner
from engine.scheduler import PARTIAL_SHARE, Cancelled, Request, Scheduler

# audio whose encoding is kept for streams' next decodes, all streams together (about 2.5 MB a second for base);
# the least recently used goes first, and its stream's next decode encodes in full
MAX_KEPT_S = 300.0


@dataclass
class EngineStats:
    """Counters for /metrics; read from any thread (values are replaced, never mutated in place)."""

    batches: int = 0  # admissions: groups of requests encoded and joined to the decode batch
    steps: int = 0  # decoder steps of the running batch
    segments: int = 0
    audio_s: float = 0.0
    encode_s: float = 0.0  # seconds the encoder worker spent encoding and prefilling
    decode_s: float = 0.0  # seconds the decoder worker spent in decoder steps
    last_batch: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # decode batch size after each admission, newest last (bounded)
    started: int = 0  # requests started
    lags: list[tuple[str, float]] = field(default_factory=list)  # (final|partial, s past due) at start, newest last


class Engine:
    def __init__(self, runner: ModelRunner, max_queue: int = 64, partial_share: float = PARTIAL_SHARE):
        self.runner = runner
        self.stats = EngineStats()
        self._scheduler = Scheduler(max_queue=max_queue, partial_share=partial_share)
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._ready: list[tuple[Batch, list[_Running]]] = []  # encoded and prefilled, to join the decode batch
        self._retry: list[_Running] = []  # looped in trim mode: encoded again (_Running.encoder), ahead of the queue
        self._preparing: list[_Running] = []  # being encoded
        self._decoding: list[_Running] = []  # rows of the decode batch (the decoder's own list, as of its last step)
        self._previews: dict[str, Preview] = {}  # by stream: its latest segment's encoding, kept for its next decodes
        self._threads = [threading.Thread(target=loop, name=f"livecaptions-{name}", daemon=True)
                         for name, loop in (("encoder", self._encode_loop), ("decoder", self._decode_loop))]
        for thread in self._threads:
            thread.start()

    # -- the engine's face for the gateway: what it may know of the model, without reaching into the runner --

    @property
    def model_name(self) -> str:
        return self.runner.model_name

    @property
    def max_batch(self) -> int:
        return self.runner.config.max_batch

    def check_language(self, language: str | None) -> None:
        """ValueError unless the model can be told `language` (None: detect; an English-only model takes any)."""
        self.runner.tokenizer.check_language(language)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as a prompt."""
        return len(self.runner.tokenizer.encode(" " + text.strip()))

    def submit(self, req: Request) -> concurrent.futures.Future:
        """Queue a request from any thread -> a future of its Transcript (or Superseded/Overloaded/Cancelled)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("engine is closed")
            rid, dropped = self._scheduler.add(req)
            self._futures[rid] = fut
            self._drop(dropped)
            self._wake.notify_all()
        return fut

    def _drop(self, dropped: list[tuple[int, Exception]]) -> None:
        for i, reason in dropped:
            dead = self._futures.pop(i)
            if not dead.done():  # its caller may have cancelled it already
                dead.set_exception(reason)

    def _lags(self, taken: list[tuple[int, Request, float]]) -> None:
        """Record how late each request started (seconds past its due time) for /metrics."""
        s = self.stats
        self.stats = replace(s, lags=(s.lags + [("final" if r.final else "partial", lag) for _, r, lag in taken])[-256:],
                             started=s.started + len(taken))

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions = DecodeOptions(), *, stream: str = "",
                         final: bool = True, pause: bool = False, previous: tuple[int, ...] = (),
                         previous_language: str | None = None, slack_s: float = 0.0, first: bool = False) -> Transcript:
        """`final` False: a partial (a preview); `pause` too: a partial up to a pause, likely the final (scheduler).
        `previous`, `previous_language`: the previous partial's tokens, drafts to verify (engine/mtp.py), and its
        language, the one to try first when detecting (DecodeOptions). `slack_s`: wanted that many seconds from now
        (the scheduler serves the earliest due first). `first`: a partial of a segment none of which has been shown
        (served before other partials)."""
        if previous or previous_language:
            options = replace(options, previous=tuple(previous) or options.previous,
                              previous_language=previous_language or options.previous_language)
        fut = self.submit(Request(stream, audio, options, final, pause and not final, slack_s, first and not final))
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()  # a queued request is skipped when its batch is formed
            raise

    def waiting(self, stream: str) -> bool:
        """Whether a partial (not a pause) of `stream` is queued, not started: a newer one would replace it."""
        with self._wake:
            return self._scheduler.waiting(stream)

    def promote(self, stream: str) -> bool:
        """Serve `stream`'s queued partial as a final from now on -> whether one was queued."""
        with self._wake:
            found = self._scheduler.promote(stream)
            self._wake.notify_all()
        return found

    def cancel_stream(self, stream: str) -> int:
        """Drop every queued request of `stream` -> how many."""
        with self._wake:
            gone = self._scheduler.cancel(stream)
            self._previews.pop(stream, None)
            for i in gone:
                fut = self._futures.pop(i)
                if not fut.done():
                    fut.set_exception(Cancelled(f"stream {stream!r} was cancelled"))
        return len(gone)

    @property
    def queue_depth(self) -> int:
        return len(self._scheduler)

    @property
    def partials_dropped(self) -> dict[str, int]:
        """Partials never run, ever, by reason: replaced by a newer one of their stream, or shed for overload."""
        return {"superseded": self._scheduler.superseded, "overloaded": self._scheduler.shed}

    def close(self, timeout: float = 60) -> None:
        """Stop taking requests, finish the queued ones (drain), stop the workers."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout)

    # Two workers share the model. The encoder takes what the scheduler picks, encodes and prefills it into a batch
    # of its own; the decoder joins such batches to the running one between steps. Encoding a segment is big
    # matrix work and a decoder step is many small ops that leave the second core mostly idle, so the two overlap.
    # All the state below is guarded by self._wake.

    def _idle(self) -> bool:
        return not (len(self._scheduler) or self._retry or self._preparing or self._ready or self._decoding)

    def _in_flight(self) -> list[_Running]:
        return self._retry + self._preparing + [a for _, group in self._ready for a in group] + self._decoding

    def _encode_loop(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._closed and self._idle():
                        return
                    flight = self._in_flight()
                    room = self.runner.config.max_batch - len(flight)
                    final_busy = any(a.request.final for a in flight)
                    retry, self._retry = self._retry, []
                    taken, shed = self._scheduler.schedule(room, final_busy) if room > 0 else ([], [])
                    self._drop(shed)
                    admitted = [_Running(i, req, self._futures.pop(i)) for i, req, _ in taken]
                    self._lags(taken)
                    if retry or admitted:
                        break
                    # nothing to take: woken by a request, by room in the batch, or when partial credit is back
                    self._wake.wait(timeout=self._scheduler.wake_in(final_busy) if room > 0 else None)
                # False: its caller cancelled it while it was queued
                admitted = [a for a in admitted if a.future.set_running_or_notify_cancel()]
                self._preparing = retry + admitted
                # other streams wait or decode: pauses and finals extend their kept encodings (_preview)
                streams = {r.stream for r in self._scheduler.requests()} | {a.request.stream for a in flight}
                busy = len(streams | {a.request.stream for a in admitted}) > 1
                previews = [self._preview(a.request, busy) for a in admitted]
                for a, kept in zip(admitted, previews):
                    a.kept = kept is not None
                # The decoder's only input is this worker's output: idle now, it stays idle through this encode,
                # which may then use its cores too.
                self.runner.share_cores(1 if not (self._decoding or self._ready) else len(self._threads))
            t0 = time.perf_counter()
            again = [([a for a in retry if a.encoder == mode], mode, None) for mode in ("trim", "full")]
            started = [new for group, encoder, kept in (*again, (admitted, None, previews))
                       if group and (new := self._start(group, encoder, kept)) is not None]
            spent = time.perf_counter() - t0
            with self._wake:
                self._preparing = []  # a request that could not start has its future failed
                self._ready += started
                if admitted:
                    self._record(admitted, spent)
                    self._scheduler.charge([a.request for a in admitted], spent)
                self._wake.notify_all()

    def _decode_loop(self) -> None:
        self.runner.share_cores(len(self._threads))
        batch: Batch | None = None
        running: dict[int, _Running] = {}
        while True:
            with self._wake:
                while not (self._ready or running):
                    if self._closed and self._idle():
                        return
                    self._wake.wait()
                ready, self._ready = self._ready, []
                self._decoding = list(running.values()) + [a for _, group in ready for a in group]
            for new, group in ready:
                running.update((a.rid, a) for a in group)
                if batch is None:
                    batch = new
                else:
                    try:
                        batch.extend(new)
                    except Exception as e:
                        batch = _fail(running, e)
            retry: list[_Running] = []
            t0 = time.perf_counter()
            stepped = False  # stays so when joining failed the whole batch
            if batch is not None and batch.rows:
                stepped = True
                try:
                    finished = self.runner.step(batch)
                except Exception as e:
                    finished, batch = [], _fail(running, e)
                for rid, result in finished:
                    a = running.pop(rid)  # type: ignore[call-overload]
                    trimmed = a.encoder != "full" and self.runner.config.encoder == "trim"
                    if result.looped and a.request.urgent and trimmed:
                        # Whisper falls back to sampling when a decode loops; we fall back to the segment encoded in
                        # full when it extended a kept encoding (an approximation), else to its 30 s window. Not for
                        # a preview: it shows what came before the loop, and the encode would hold up the urgent
                        # requests behind it (ahead of the queue; the window's is 0.5-0.7 s of a core at 16 streams).
                        retry.append(replace(a, encoder="trim" if a.kept and a.encoder is None else "full"))
                    elif not a.future.done():
                        if batch is not None and not a.request.urgent:
                            _redraft(batch, running, a.request, result.tokens)
                        a.future.set_result(self.runner.finish(result, a.request.options, a.request.audio))
                if batch is not None and not batch.rows:
                    batch = None  # drained: its caches (spare rows included) go, the next admission sizes its own
            spent = time.perf_counter() - t0
            with self._wake:
                self._decoding = list(running.values())
                self._retry += retry  # back to the encoder, ahead of the queue
                self.stats = replace(self.stats, steps=self.stats.steps + stepped, decode_s=self.stats.decode_s + spent)
                self._wake.notify_all()

    def _preview(self, req: Request, busy: bool) -> Preview | None:
        """The kept encoding of `req`'s stream to extend, or None to encode it in full. A partial's always (it starts
        one). A pause's or a final's only when `busy` (other streams wait or decode): the kept positions only
        approximate the full encode (engine/preview.py), so an engine with time to spare encodes them in full, as
        offline; a busy one extends the state (a final only one that holds positions its audio extends) and a final
        keeps it, as the next segment's decodes, led by this one's audio, extend it."""
        if req.urgent:
            kept = self._previews.get(req.stream)
            if not busy or (req.final and not (kept is not None and kept.encoder.length and kept.extends(req.audio))):
                if req.final:  # its segment is over: what its partials kept goes
                    self._previews.pop(req.stream, None)
                return None
        state = self._previews.pop(req.stream, None) or Preview()
        self._previews[req.stream] = state  # most recently used last
        held = sum(len(p.audio) for p in self._previews.values())
        while held > MAX_KEPT_S * SAMPLE_RATE and len(self._previews) > 1:
            held -= len(self._previews.pop(next(iter(self._previews))).audio)
        return state

    def _start(self, group: list[_Running], encoder: str | None,
               previews: list[Preview | None] | None = None) -> tuple[Batch, list[_Running]] | None:
        """Encode and prefill `group` -> its batch and the requests in it; a request that cannot start fails alone."""
        try:
            batch = self.runner.start([a.request.audio for a in group], [a.request.options for a in group],
                                      [a.rid for a in group], encoder, previews)
            return batch, group
        except Exception as e:
            if len(group) == 1:
                group[0].future.set_exception(e)
                return None
            parts = [self._start([a], encoder, [p]) for a, p in zip(group, previews or [None] * len(group))]
            ok = [p for p in parts if p is not None]
            if not ok:
                return None
            for b, _ in ok[1:]:
                ok[0][0].extend(b)
            return ok[0][0], [a for _, started in ok for a in started]

    def _record(self, admitted: list[_Running], seconds: float) -> None:
        s, size = self.stats, len(self._in_flight())
        self.stats = replace(s, batches=s.batches + 1, segments=s.segments + len(admitted),
                             audio_s=s.audio_s + sum(len(a.request.audio) for a in admitted) / SAMPLE_RATE,
                             encode_s=s.encode_s + seconds, last_batch=size, batch_sizes=(s.batch_sizes + [size])[-256:])


def _redraft(batch: Batch, running: dict[int, _Running], preview: Request, tokens: tuple[int, ...]) -> None:
    """A preview's reading is newer than the one the rows of its stream decoding audio that begins with its own
    were given (a pause's decode starts beside the partial in flight): they verify it as their drafts from now on."""
    audio = preview.audio
    keys = {rid for rid, a in running.items() if a.request.stream == preview.stream
            and len(a.request.audio) >= len(audio) and np.array_equal(a.request.audio[: len(audio)], audio)}
    if keys:
        batch.redraft(keys, tokens)


def _fail(running: dict[int, _Running], error: Exception) -> None:
    """The batch is lost, not the worker: fail every row in it, empty `running` -> no batch."""
    for a in running.values():
        a.future.set_exception(error)
    running.clear()


@dataclass
class _Running:
    rid: int
    request: Request
    future: concurrent.futures.Future
    encoder: str | None = None  # None: the configured mode; a retry: "trim" (no kept encoding), "full" (30 s window)
    kept: bool = False  # it extended its stream's kept encoding (Engine._preview)
