"""The engine as a service: one worker thread owns the model; any thread or event loop submits requests.

    engine = Engine(ModelRunner(EngineConfig()))
    transcript = await engine.transcribe(audio, DecodeOptions(language="en"), stream="s1", final=True)

Each loop of the worker: schedule a batch (engine/scheduler.py decides), run it on the model runner, resolve the
requests' futures. Cancelling the awaiting task, or `cancel_stream`, frees queued entries."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from engine.decoding import DecodeOptions
from engine.runner import ModelRunner, Transcript
from engine.scheduler import Cancelled, Request, Scheduler


@dataclass
class EngineStats:
    """Counters for /metrics; read from any thread (values are replaced, never mutated in place)."""

    batches: int = 0
    segments: int = 0
    audio_s: float = 0.0
    busy_s: float = 0.0
    last_batch: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # recent batch sizes, newest last (bounded)


class Engine:
    def __init__(self, runner: ModelRunner, max_queue: int = 64):
        self.runner = runner
        self.stats = EngineStats()
        self._scheduler = Scheduler(max_queue=max_queue)
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="livecaptions-engine", daemon=True)
        self._thread.start()

    def submit(self, req: Request) -> concurrent.futures.Future:
        """Queue a request from any thread -> a future of its Transcript (or Superseded/Overloaded/Cancelled)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("engine is closed")
            rid, dropped = self._scheduler.add(req)
            self._futures[rid] = fut
            for i, reason in dropped:
                dead = self._futures.pop(i)
                if not dead.done():  # its caller may have cancelled it already
                    dead.set_exception(reason)
            self._wake.notify()
        return fut

    async def transcribe(self, audio: np.ndarray, options: DecodeOptions = DecodeOptions(), *, stream: str = "",
                         final: bool = True, previous: tuple[int, ...] = ()) -> Transcript:
        if previous:  # the previous partial's tokens: drafts to verify (engine/mtp.py)
            options = replace(options, previous=tuple(previous))
        fut = self.submit(Request(stream, audio, options, final))
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()  # a queued request is skipped when its batch is formed
            raise

    def cancel_stream(self, stream: str) -> int:
        """Drop every queued request of `stream` -> how many."""
        with self._wake:
            gone = self._scheduler.cancel(stream)
            for i in gone:
                fut = self._futures.pop(i)
                if not fut.done():
                    fut.set_exception(Cancelled(f"stream {stream!r} was cancelled"))
        return len(gone)

    @property
    def queue_depth(self) -> int:
        return len(self._scheduler)

    def close(self, timeout: float = 60) -> None:
        """Stop taking requests, finish the queued ones (drain), stop the worker."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not len(self._scheduler) and not self._closed:
                    self._wake.wait()
                if self._closed and not len(self._scheduler):
                    return
                reqs, futures = [], []
                for i, req in self._scheduler.schedule(self.runner.config.max_batch):
                    fut = self._futures.pop(i)
                    if fut.set_running_or_notify_cancel():  # False: its caller cancelled it while it was queued
                        reqs.append(req)
                        futures.append(fut)
            if reqs:
                self._run(reqs, futures)

    def _run(self, reqs: list[Request], futures: list[concurrent.futures.Future]) -> None:
        t0 = time.perf_counter()
        try:
            out = self.runner.transcribe([r.audio for r in reqs], [r.options for r in reqs])
        except Exception as e:  # a bad batch must not kill the worker; fail each request on its own
            if len(reqs) > 1:
                for r, f in zip(reqs, futures):
                    self._run([r], [f])
                return
            futures[0].set_exception(e)
            return
        for f, t in zip(futures, out):
            f.set_result(t)
        s = self.stats
        self.stats = EngineStats(s.batches + 1, s.segments + len(reqs), s.audio_s + sum(len(r.audio) for r in reqs) / 16000,
                                 s.busy_s + time.perf_counter() - t0, len(reqs), (s.batch_sizes + [len(reqs)])[-256:])
