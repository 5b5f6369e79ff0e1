"""A live caption session: one stream's audio -> segmenter -> engine -> caption events, in order. No network code.

    session = CaptionSession("room-1", engine, SessionConfig(language="en"), emit=send)  # send: async (Event) -> None
    await session.feed(pcm)   # 16 kHz mono float32 chunks of any size, as they arrive
    await session.flush()     # optional: end the current utterance now (a "push to talk" release)
    await session.close()     # end of stream: waits for every final, then session.ended

Events go to `emit` one at a time, in `seq` order (an `emit` that blocks holds the session back: back-pressure).
Per segment: speech.started; caption.partial while it grows (at most one partial decode running per session: a
partial that comes due while the one before still waits in the engine's queue replaces it there, with the newer
audio; one that comes due while it runs waits, and only the newest waiting one is kept); speech.stopped when the
segmenter ends it; caption.final when its decode returns. When the speaker pauses (the segmenter's speech-paused,
pause_ms after the last word), the segment is decoded at once, beside any partial in flight, over exactly the audio
its final will hold if the pause lasts (shown as a partial); when the segment then ends there, that result is the final
(the engine's output does not depend on batching or drafts, so it is the same transcript), out the moment the
endpoint is heard instead of a decode later. A partial already in flight when its segment ends is still shown
if it returns before the final is in (a preview while the final decodes; under load often the only one), never
after. Finals go out in segment order whatever order the engine returns them in. A segment that follows the one
before it closely is decoded after that one's final is in, led by its audio and tokens (CONTEXT_GAP_S), so a
sentence finalised in pieces at its pauses reads as it would whole. A segment whose final text is
empty (noise, breath: the engine judged it silence) gets no caption.final, only its speech.stopped. A failed final
becomes an `error` event in the final's place; a failed partial is only logged. Either way the session goes on.

Latency: `clock` is the seconds of audio fed so far; `lag(event)` (call it from `emit`) is how far that clock is
past the end of the event's audio, and `latency` keeps a running summary of it per caption type.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.messages import UNSPACED_LANGUAGES, DecodeOptions, Transcript
from engine.scheduler import Cancelled, Overloaded, Superseded
from gateway import events as ev
from gateway.media import SAMPLE_RATE
from gateway.offline import separator, word_dicts
from vad import events as vad
from vad.config import SegmenterConfig
from vad.segmenter import Segmenter

if TYPE_CHECKING:  # the engine's service holds torch: the gateway gets one handed in, never imports it
    from engine.service import Engine

log = logging.getLogger("livecaptions.session")

Emit = Callable[[ev.Event], Awaitable[None]]
_WORD = re.compile(r"\S+")
# A segment is decoded after the one before it when that one ended at most CONTEXT_GAP_S earlier and is at most
# CONTEXT_MAX_S long: its audio leads the new audio and its final's tokens are forced as the transcript's start, so a
# sentence cut at a short pause reads as it would whole (docs/performance.md, "Live latency").
CONTEXT_GAP_S = 0.8
CONTEXT_MAX_S = 10.0
WINDOW_S = 30.0  # the longest segment the engine takes
SHORT_PIECE_S = 2.0  # an utterance shorter than this ends at the segmenter's longer pause (SegmenterConfig)
PAUSE_LEAD_MS = 300


def stable_prefix(previous: str, current: str, language: str | None = None) -> str:
    """The part of `current` that `previous` agrees with: their longest common prefix in whole words (characters for
    languages written without spaces), as a prefix of `current`. A word still being spoken ("coun" -> "country")
    differs, so only words both drafts finished count."""
    if language in UNSPACED_LANGUAGES:
        n = 0
        while n < min(len(previous), len(current)) and previous[n] == current[n]:
            n += 1
        return current[:n].rstrip()
    end = 0
    for a, b in zip(_WORD.finditer(previous), _WORD.finditer(current)):
        if a.group() != b.group():
            break
        end = b.end()
    return current[:end]


@dataclass(frozen=True)
class SessionConfig:
    language: str | None = None  # ISO code, or None to detect per segment
    prompt: str | None = None  # initial prompt for every decode: names, jargon, spelling
    task: str = "transcribe"  # or "translate" (to English)
    partials: bool = True  # False: finals only (saves the engine for other streams)
    # ms of silence that end an utterance and make its text final. A sentence cut at a shorter pause loses nothing:
    # the next piece is decoded after it (CONTEXT_GAP_S).
    endpoint_ms: int = 500
    # ms of silence that end the speaker's turn (turn.ended, after the turn's finals; at least endpoint_ms): longer
    # than the pauses inside a sentence (docs/performance.md, "End of turn").
    turn_ms: int = 700
    # ms of new speech between partials. At most one partial decode runs per stream, and a queued one is replaced by
    # the next with newer audio, so a busy engine makes fewer and none is stale (docs/performance.md, "Live latency").
    partial_interval_ms: int = 250
    # True: a segment that held no words still gets a caption.final (empty text), for protocols that answer every
    # turn they announced (gateway/compat: a realtime item is completed, a Deepgram turn is final, even if silent)
    empty_finals: bool = False
    words: bool = False  # True: finals carry their words' times (the engine aligns each final: a few % more)

    def __post_init__(self) -> None:
        if self.language is not None and not re.fullmatch(r"[a-z]{2,3}", self.language):
            raise ValueError(f"language must be an ISO code such as 'en', or None to detect, not {self.language!r}")
        if self.turn_ms < SegmenterConfig.post_roll_ms:
            raise ValueError(f"turn_ms must be at least {SegmenterConfig.post_roll_ms}, got {self.turn_ms}")
        self.segmenter()  # the VAD validates the durations
        self.decode_options()  # and the engine the task

    def segmenter(self) -> SegmenterConfig:
        # the pause's decode starts PAUSE_LEAD_MS before the endpoint (at the post-roll at the earliest), so the final
        # is ready when the endpoint is heard
        pause_ms = max(SegmenterConfig.post_roll_ms, min(SegmenterConfig.pause_ms, self.endpoint_ms - PAUSE_LEAD_MS))
        return SegmenterConfig(sample_rate=SAMPLE_RATE, endpoint_ms=self.endpoint_ms,
                               partial_interval_ms=self.partial_interval_ms, pause_ms=pause_ms,
                               short_segment_s=SHORT_PIECE_S, turn_ms=max(self.turn_ms, self.endpoint_ms))

    def decode_options(self) -> DecodeOptions:
        # "both": the previous partial's tokens where they still match, the MTP heads' drafts elsewhere
        return DecodeOptions(language=self.language, task=self.task, prompt=self.prompt, drafts="both",
                             word_timestamps=self.words)


@dataclass
class Latency:
    """Running lag of one caption type behind the audio clock (no per-event history: sessions can run for hours)."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, lag_s: float) -> None:
        self.count, self.total_s, self.max_s = self.count + 1, self.total_s + lag_s, max(self.max_s, lag_s)

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0


@dataclass
class _Segment:
    """A segment whose final is not out yet: open (end None), then decoding, then decoded (result set) and waiting
    for the finals of earlier segments."""

    id: int
    start: float
    end: float | None = None
    tokens: tuple[int, ...] = ()  # the latest partial's tokens: drafts for the next decode
    text: str = ""  # the latest partial's text: `stable` is judged against it
    result: Transcript | Exception | None = None  # its final
    lead: float = 0.0  # seconds of the previous segment's audio its final's decode began with (_request)
    shown: float = 0.0  # end of the newest partial shown
    # the decode of a pause: (absolute sample it ends at, options, transcript), the final if the segment ends there
    paused: tuple[int, DecodeOptions, Transcript] | None = None
    decoded: asyncio.Event = field(default_factory=asyncio.Event)  # set with `result`


@dataclass
class _Turn:
    """The turn being spoken, as far as its finals are out."""

    start: float | None = None  # its first segment's start
    end: float = 0.0  # the end of its latest segment out
    text: str = ""
    language: str | None = None  # of the latest final's text
    ends: list[tuple[int, bool]] = field(default_factory=list)  # (last segment, forced) of turns over, finals pending


@dataclass(frozen=True, eq=False)
class _Piece:
    """A segment whose final is in, to lead the decodes of the segment after it."""

    id: int
    end: float
    audio: np.ndarray
    tokens: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class _Due:
    """A partial waiting for the one in flight to return."""

    segment: int
    end: float
    audio: np.ndarray
    stop: int | None = None  # a pause: the absolute sample its audio ends at (the final's end if the pause lasts)


def _writable(audio: np.ndarray) -> np.ndarray:
    """A private float32 copy: segmenter audio is read-only, and torch warns when it wraps a read-only array."""
    return np.array(audio, dtype=np.float32)


class CaptionSession:
    """One stream's captions. Drive it from one task of one event loop (feed, flush, close in turn)."""

    def __init__(self, stream_id: str, engine: Engine, config: SessionConfig = SessionConfig(), *, emit: Emit) -> None:
        self.stream_id, self.engine, self.config = stream_id, engine, self._checked(config, engine)
        self.latency = {kind: Latency() for kind in (ev.CaptionPartial.type, ev.CaptionFinal.type)}
        self._emit_cb = emit
        self._options = config.decode_options()
        self._segmenter = Segmenter(config.segmenter())
        self._offset = 0  # samples fed to segmenters before the current one (flush() starts a new one)
        self._base = 0  # session segment id of the current segmenter's segment 0
        self._next_segment = 0
        self._fed = 0  # samples fed in all
        self._seq = 0
        self._lock = asyncio.Lock()  # one emission at a time, so seq order is delivery order
        self._previous: _Piece | None = None  # the latest segment whose final is in
        self._language: str | None = None  # of the latest transcript: the one a detecting decode tries first
        self._segments: dict[int, _Segment] = {}  # by id, so in segment order: those whose final is not out yet
        self._open: _Segment | None = None  # the one being spoken
        self._partial: asyncio.Task | None = None  # the partial in flight (decoding, then emitting)
        self._due: _Due | None = None
        self._pause: tuple[int, asyncio.Task] | None = None  # the open segment's latest pause decode: (stop, task)
        self._turn = _Turn()
        self._tasks: set[asyncio.Task] = set()
        self._failure: BaseException | None = None
        self._state = "new"  # new -> live -> ended

    @property
    def clock(self) -> float:
        """Seconds of audio fed so far: the audio clock that latency is measured against."""
        return self._fed / SAMPLE_RATE

    def lag(self, event: ev.Event) -> float:
        """How far the audio clock is past the end of what `event` covers; called from `emit`, its latency."""
        end = getattr(event, "end", None)
        if end is None:
            end = getattr(event, "start", self.clock)
        return round(self.clock - end, 3)

    @property
    def ended(self) -> bool:
        return self._state == "ended"

    async def error(self, code: str, message: str) -> None:
        """An `error` event from the stream's transport (a refused frame, a timeout), numbered with the captions."""
        await self._emit(ev.Error, code=code, message=message)

    async def configured(self) -> None:
        """session.configured: the settings of every decode requested from now on (after `reconfigure`)."""
        c = self.config
        await self._emit(ev.SessionConfigured, language=c.language or "auto", prompt=c.prompt, partials=c.partials)

    async def __aenter__(self) -> CaptionSession:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def start(self) -> None:
        """Emit session.started (feed() does it when not called)."""
        if self._state == "new":
            self._state = "live"
            await self._emit(ev.SessionStarted, sample_rate=SAMPLE_RATE, language=self.config.language or "auto",
                             model=self.engine.model_name)

    async def feed(self, pcm: np.ndarray) -> None:
        """Append 16 kHz mono float32 samples in [-1, 1]; emits what they complete before it returns."""
        pcm = np.asarray(pcm)
        if pcm.dtype != np.float32 or pcm.ndim != 1:
            raise ValueError(f"a session takes 1-D float32 16 kHz PCM, got {pcm.dtype} of shape {pcm.shape}")
        await self._live()
        self._fed += len(pcm)
        await self._handle(self._segmenter.feed(pcm))

    async def flush(self, wait: bool = False) -> None:
        """End the current utterance now, as if the speaker paused; `wait`: return only once its final is out."""
        await self._live()
        await self._handle(self._segmenter.flush())
        self._offset, self._base = self._fed, self._next_segment
        self._segmenter = Segmenter(self.config.segmenter())
        if wait:
            await self._drain()

    @staticmethod
    def _checked(config: SessionConfig, engine: Engine) -> SessionConfig:
        """`config`, if the engine's model knows its language."""
        engine.check_language(config.language)
        return config

    def reconfigure(self, *, language: str | None | object = ..., prompt: str | None | object = ...,
                    partials: bool | object = ...) -> SessionConfig:
        """Change the language (None: detect), prompt or partials for every decode requested from now on (the
        utterance being spoken included; decodes already queued keep their options) -> the new config. Raises
        ValueError, leaving the session as it was, for a value its config would refuse."""
        changes = {k: v for k, v in (("language", language), ("prompt", prompt), ("partials", partials)) if v is not ...}
        config = self._checked(replace(self.config, **changes), self.engine)  # replace validates the rest
        self.config, self._options = config, config.decode_options()
        if not config.partials:
            self._due = None
        return config

    async def close(self) -> None:
        """End of stream: end the open utterance, deliver every final, then session.ended. Idempotent."""
        if self._state == "ended":
            return
        await self._live()
        await self._handle(self._segmenter.flush())
        await self._drain()
        self._state = "ended"
        await self._emit(ev.SessionEnded, end=self.clock)

    async def abort(self) -> None:
        """End now, dropping undelivered captions (the client is gone): cancels this stream's queued decodes."""
        if self._state != "live":
            self._state = "ended"  # never started: nothing to tell anyone
            return
        self._state = "ended"
        self.engine.cancel_stream(self.stream_id)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failure is None:
            try:
                await self._emit(ev.SessionEnded, end=self.clock)
            except Exception:  # the receiver is likely what failed; aborting must not raise for it
                log.debug("session %s: session.ended not delivered", self.stream_id, exc_info=True)

    # -- internals ----------------------------------------------------------------------------------------------

    async def _live(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"session {self.stream_id!r} failed: {self._failure!r}") from self._failure
        if self._state == "ended":
            raise RuntimeError(f"session {self.stream_id!r} has ended")
        await self.start()

    async def _drain(self) -> None:
        """Wait until every requested final has been emitted (and the partial in flight, if any, has returned)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failure is not None:
            raise RuntimeError(f"session {self.stream_id!r} failed: {self._failure!r}") from self._failure

    def _seconds(self, sample: int) -> float:
        return (self._offset + sample) / SAMPLE_RATE

    async def _handle(self, events: list[vad.Event]) -> None:
        for e in events:
            segment = self._base + e.index
            if isinstance(e, vad.SpeechStarted):
                self._next_segment = segment + 1
                self._open = self._segments[segment] = _Segment(segment, self._seconds(e.start))
                await self._emit(ev.SpeechStarted, segment=segment, start=self._open.start)
            elif isinstance(e, vad.PartialDue):
                if self.config.partials and self._open is not None and self._open.id == segment:
                    self._due = _Due(segment, self._seconds(e.end), e.audio)
                    # the one before still queued in the engine: this one replaces it there, with newer audio
                    if self._partial is None or self.engine.waiting(self.stream_id):
                        self._start_partial()
            elif isinstance(e, vad.SpeechPaused):  # decoded at once, beside any partial: it may be the final
                if self._open is not None and self._open.id == segment:
                    stop, self._due = self._offset + e.end, None  # a waiting partial has no speech the pause lacks
                    due = _Due(segment, self._seconds(e.end), e.audio, stop)
                    self._pause = (stop, self._spawn(self._run_pause(due, self._open.tokens)))
            elif isinstance(e, vad.SpeechEnded):
                seg = self._segments[segment]
                seg.end, self._open, self._due = self._seconds(e.end), None, None  # its final needs no more previews
                await self._emit(ev.SpeechStopped, segment=segment, end=seg.end)
                stop = self._offset + e.end
                pause = self._pause[1] if self._pause is not None and self._pause[0] == stop else None
                self._pause = None
                if pause is not None:  # the decode of this very audio: it becomes the final
                    self.engine.promote(self.stream_id)
                self._spawn(self._final(seg, e.audio, stop, pause))
            elif isinstance(e, vad.TurnEnded):
                async with self._lock:
                    self._turn.ends.append((segment, e.forced))
                    await self._send_turns()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task is self._partial:  # also when it was cancelled before it ever ran
            self._partial = None
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()  # an emit failed: the next call on the session raises it
            log.error("session %s failed", self.stream_id, exc_info=self._failure)

    def _start_partial(self) -> None:
        due, self._due = self._due, None
        assert due is not None and self._open is not None
        self._partial = self._spawn(self._run_partial(due, self._open.tokens))  # tokens of the partial before

    async def _run_partial(self, due: _Due, previous: tuple[int, ...]) -> None:
        mine = asyncio.current_task()
        try:
            await self._show(due, (await self._decode_partial(due, previous))[1])
        finally:
            if self._partial is mine:  # else a newer partial replaced it in the queue and is in flight now
                self._partial = None
        if self._partial is None and self._due is not None and self._state != "ended":
            self._start_partial()

    async def _run_pause(self, due: _Due, previous: tuple[int, ...]) -> None:
        options, t = await self._decode_partial(due, previous, pause=True)
        seg = self._segments.get(due.segment)
        if t is not None and seg is not None:
            seg.paused = (due.stop, options, t)
        await self._show(due, t)

    async def _show(self, due: _Due, t: Transcript | None) -> None:
        """Emit a partial's transcript, if partials are on, its segment's final is not in and nothing newer was
        shown (a pause's decode and the partial before it run side by side)."""
        if t is None or not t.text or not self.config.partials:
            return
        async with self._lock:
            seg = self._segments.get(due.segment)
            # Still worth showing while its final is being decoded; once the final is in, never.
            if seg is not None and seg.result is None and due.end > seg.shown:
                stable = stable_prefix(seg.text, t.text, self.config.language or t.result.language)
                seg.tokens, seg.text, seg.shown = t.result.tokens, t.text, due.end
                await self._send(ev.CaptionPartial, segment=due.segment, text=t.text, stable=stable,
                                 start=seg.start, end=due.end)

    def _request(self, segment: int, audio: np.ndarray) -> tuple[np.ndarray, DecodeOptions]:
        """The audio and options of a decode of `segment`'s audio: led by the segment before it when that one's
        final is in, it ended at most CONTEXT_GAP_S before and both fit in the engine's window."""
        options, p, seg = self._options, self._previous, self._segments.get(segment)
        if p is None or seg is None or p.id != segment - 1 or seg.start - p.end > CONTEXT_GAP_S \
                or len(p.audio) + len(audio) > WINDOW_S * SAMPLE_RATE:
            return _writable(audio), options
        return np.concatenate([p.audio, audio]), replace(options, prefix=p.tokens)

    async def _decode_partial(self, due: _Due, previous: tuple[int, ...],
                              pause: bool = False) -> tuple[DecodeOptions, Transcript | None]:
        audio, options = self._request(due.segment, due.audio)
        if not pause:  # a partial's words are never shown
            options = replace(options, word_timestamps=False)
        # due when the next partial would come, a pause's decode when its endpoint would
        cfg = self._segmenter.config
        slack_ms = cfg.endpoint_ms - cfg.pause_ms if pause else cfg.partial_interval_ms
        seg = self._segments.get(due.segment)
        try:
            t = await self.engine.transcribe(audio, options, stream=self.stream_id, final=False, pause=pause,
                                             previous=previous, previous_language=self._language,
                                             slack_s=slack_ms / 1000, first=seg is not None and not seg.shown)
            self._language = t.result.language
            return options, t
        except (Superseded, Overloaded, Cancelled) as e:
            log.debug("session %s: partial of segment %d dropped: %s", self.stream_id, due.segment, e)
        except Exception:  # a preview is not worth a session: log it, the final will still come
            log.warning("session %s: partial of segment %d failed", self.stream_id, due.segment, exc_info=True)
        return options, None

    async def _final(self, seg: _Segment, audio: np.ndarray, stop: int, pause: asyncio.Task | None) -> None:
        """Decode and emit `seg`'s final (audio up to absolute sample `stop`), unless the decode of its pause
        covered exactly that audio with the same options: then that is the final (`pause`: that decode in flight)."""
        if pause is not None:
            await asyncio.gather(pause, return_exceptions=True)
        if (before := self._segments.get(seg.id - 1)) is not None:  # its final leads this one's decode (_request)
            await before.decoded.wait()
        try:
            led, options = self._request(seg.id, audio)
            seg.lead = (len(led) - len(audio)) / SAMPLE_RATE
            if seg.paused is not None and seg.paused[:2] == (stop, options):
                seg.result = seg.paused[2]
            else:  # the last partial's tokens are drafts: the verified output is the same, found sooner
                seg.result = await self.engine.transcribe(led, options, stream=self.stream_id, final=True,
                                                          previous=seg.tokens, previous_language=self._language)
            self._language = seg.result.result.language
        except Exception as e:  # not CancelledError: abort() means nobody wants the final any more
            log.warning("session %s: final of segment %d failed", self.stream_id, seg.id, exc_info=True)
            seg.result = e
        if isinstance(seg.result, Transcript) and seg.result.text and len(audio) <= CONTEXT_MAX_S * SAMPLE_RATE \
                and (self._previous is None or seg.id > self._previous.id):
            self._previous = _Piece(seg.id, float(seg.end), _writable(audio), seg.result.result.tokens)
        seg.decoded.set()
        async with self._lock:
            # Emit every final that is ready and has no earlier segment still decoding before it.
            while self._segments and (head := next(iter(self._segments.values()))).result is not None:
                del self._segments[head.id]
                await self._send_final(head)
                await self._send_turns()

    async def _send_turns(self) -> None:
        """turn.ended for each turn over whose finals are all out (a turn without words only with empty_finals)."""
        turn = self._turn
        while turn.ends and (not self._segments or turn.ends[0][0] < next(iter(self._segments))):
            last, forced = turn.ends.pop(0)
            if turn.start is not None and (turn.text or self.config.empty_finals):
                await self._send(ev.TurnEnded, segment=last, text=turn.text, start=turn.start, end=turn.end,
                                 forced=forced)
            self._turn = turn = _Turn(ends=turn.ends)

    async def _send_final(self, seg: _Segment) -> None:
        turn = self._turn
        turn.start, turn.end = seg.start if turn.start is None else turn.start, float(seg.end)
        if isinstance(seg.result, Transcript) and seg.result.text:
            language = seg.result.result.language
            turn.text += separator(turn.language if turn.text else None, language) + seg.result.text
            turn.language = language
        if isinstance(seg.result, Exception):
            await self._send(ev.Error, code="final_failed", segment=seg.id,
                             message=f"segment {seg.id} could not be transcribed: {seg.result}")
        elif seg.result is not None and (seg.result.text or self.config.empty_finals):  # empty: no speech heard
            r = seg.result.result
            await self._send(ev.CaptionFinal, segment=seg.id, text=seg.result.text, start=seg.start, end=seg.end,
                             language=r.language, no_speech_prob=r.no_speech_prob,
                             decode={"forwards": r.forwards, "tokens": r.emitted}, words=self._words(seg))

    def _words(self, seg: _Segment) -> list[dict[str, Any]] | None:
        """The final's words in stream seconds, if the stream asked for them."""
        if not self.config.words or not isinstance(seg.result, Transcript):
            return None
        return word_dicts(seg.result.result.words, seg.start - seg.lead, (seg.start, float(seg.end)))

    async def _emit(self, cls: type, **fields: Any) -> None:
        async with self._lock:
            await self._send(cls, **fields)

    async def _send(self, cls: type, **fields: Any) -> None:
        """Number and deliver one event; the caller holds the lock."""
        event = cls(stream=self.stream_id, seq=self._seq, **fields)
        self._seq += 1
        if event.type in self.latency:
            self.latency[event.type].add(self.lag(event))
        await self._emit_cb(event)
