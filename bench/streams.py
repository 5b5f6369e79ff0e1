"""Concurrent live streams into one real `livecaptions serve` process: caption latency, batching, CPU, memory.

    .venv/bin/python bench/streams.py --streams 16 [--model base] [--duration 75] [--json]
    .venv/bin/python bench/streams.py --sweep 1,4,8,16
    .venv/bin/python bench/streams.py --offline ../shared/speech [--json]

Live (--streams N, or --sweep N1,N2,...: one server, one run per N): N WebSocket clients on loopback each stream
the clips of ../shared/speech (every stream starts at another clip and loops over them, with 2-3.5 s pauses of
silence between clips and a 0-3 s silent lead-in, all seeded) as 16 kHz s16le in --frame-ms frames at real-time
pace, for --duration seconds of audio each, then {"type": "close"}. The audio a client sends was "captured" at
t0 + its audio time (t0: the stream's start). Each clip placed in a stream is an utterance: its speech start and
last word come from the audio itself (first and last 20 ms frame over -40 dBFS, as the checks find them); its span
runs from 0.5 s before the one to 0.5 s after the other. A final belongs to the utterance whose span holds its
midpoint (start+end)/2, a partial to the one whose span holds its start, a turn.ended to the one whose span holds
its end. Per utterance (those whose last word ends >= 1.5 s before the end of the run; empty captions ignored):

  final latency    receipt of its last final - (t0 + its last word): what a user waits after speaking (the
                   endpointing silence, --endpointing-ms or the server's 500 ms, then the decode).
  first word       receipt of its first caption, partial or final - (t0 + its speech start).
  turn latency     receipt of its turn.ended (the last, if a pause split it) - (t0 + its last word): the turn's
                   silence (the server's 700 ms) and whatever its finals still needed.
  WER / CER        its finals joined with spaces vs the clip's reference; corpus en WER and zh CER (support.speech)
                   over all utterances of all streams, one without a final counting as all deletions.

and per event: partial latency, receipt of caption.partial - (t0 + its end, how far into the segment the preview
heard); decode latency, receipt of caption.final - receipt of its segment's speech.stopped (the decode alone).

A stream kept real time when its client never fell more than 0.5 s behind its sending schedule (the server reads
what it is sent), its session ended within 10 s of the close, and its lag did not grow: the least-squares slope of
its finals' lag behind their segment ends (receipt - (t0 + end)) over the run, times the run's span, is under 1 s.
Finals of segments that end less than 1.5 s before the end of the run are left out of that slope, as their
utterances are out of the latencies: the close ends every stream's open segment at once, a burst of finals that
says nothing about keeping pace.
`realtime` is true when every stream kept real time. Server CPU (% of one core, mean and max of 1 s samples) and
RSS (max) come from psutil on the server process; engine batch sizes from the livecaptions_engine_batch_size
histogram of /metrics (difference over the run); queue depth from livecaptions_engine_queue_depth (max of 1 s
samples); GPU utilisation from nvidia-smi when there is one. `--streams N --json` ends with one JSON line per N:
streams, utterances, p50/p95_final_latency_s, p50/p95_first_word_s, p50/p95_turn_latency_s, wer_en, cer_zh,
p50/p95_partial_latency_s, p50/p95_final_decode_s, realtime, rss_mb, cpu_pct and more.

Offline (--offline DIR): every audio file of DIR (languages from DIR/manifest.tsv when there is one, else
detected), decoded to 16 kHz before timing. Ours: each file cut at silence into <= 30 s pieces
(gateway.offline.split, as `livecaptions transcribe` does), all pieces of all files batched through one
engine.runner.ModelRunner (longest first, --batch per batch, default the runner's). Peer: faster-whisper's
BatchedInferencePipeline (its own VAD chunking, batch_size --batch or 16, greedy, no timestamps) on the same model
files (engine.models.resolve: the bundled CTranslate2 folder) with int8 on CPU. Both warm up once, untimed, in
this process; wall time covers features, encoder, decoder and text. The table gives audio seconds per wall second
and the ratio to faster-whisper, with WER/CER when DIR has a manifest.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench.machine import describe  # noqa: E402
from support.speech import SPEECH, Clip, clips, error_rate  # noqa: E402

RATE = 16000  # Hz, s16le mono on the wire
GROWTH_S = 1.0  # lag growth over a run beyond which a stream did not keep real time
BEHIND_S = 0.5  # a client this far behind its sending schedule: the server did not take the audio in time
END_TIMEOUT_S = 10.0  # close -> session.ended
MARGIN_S = 0.5  # an utterance's span: its speech start - MARGIN_S .. its last word + MARGIN_S
CUT_S = 1.5  # an utterance whose last word is closer than this to the end of the run is not counted
FRAME = RATE // 50  # 20 ms, for speech_span
FINAL, PARTIAL, TURN = "caption.final", "caption.partial", "turn.ended"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".webm")


# -- live streams -----------------------------------------------------------------------------------------------

def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """Seconds where the words are: the first and the last 20 ms frame louder than -40 dBFS (the checks' rule)."""
    frames = audio[:len(audio) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    loud = np.nonzero(20 * np.log10(np.sqrt((frames ** 2).mean(1)) + 1e-9) > -40)[0]
    return (float(loud[0] * FRAME / RATE), float((loud[-1] + 1) * FRAME / RATE)) if len(loud) else (0.0, 0.0)


@dataclass(frozen=True)
class Utterance:
    """One clip placed in a stream: where its speech starts and its last word ends, in stream seconds."""

    clip: int  # index into the clips (its language and reference)
    start: float
    end: float

    def holds(self, t: float) -> bool:
        """`t` (stream s) falls in this utterance's span, give or take MARGIN_S."""
        return self.start - MARGIN_S <= t <= self.end + MARGIN_S


def program(clip_audio: list[np.ndarray], spans: list[tuple[float, float]], index: int,
            duration_s: float) -> tuple[bytes, list[Utterance]]:
    """Stream `index`'s audio: a seeded silent lead-in, then the clips from clip `index` on, looped, with pauses;
    and the utterances placed in it (`spans`: speech_span of each clip)."""
    rng = random.Random(index)
    parts = [np.zeros(int(rng.uniform(0, 3) * RATE), np.float32)]
    total, k, utterances = len(parts[0]), index, []
    while total < duration_s * RATE:
        clip, (start, end) = clip_audio[k % len(clip_audio)], spans[k % len(clip_audio)]
        utterances.append(Utterance(k % len(clip_audio), total / RATE + start, total / RATE + end))
        pause = np.zeros(int(rng.uniform(2.0, 3.5) * RATE), np.float32)
        parts += [clip, pause]
        total += len(clip) + len(pause)
        k += 1
    audio = np.concatenate(parts)[:int(duration_s * RATE)]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), utterances


@dataclass(frozen=True)
class Heard:
    """An event a client received: caption.final, caption.partial or turn.ended."""

    type: str
    arrival: float  # s after t0
    start: float  # stream s
    end: float
    text: str


@dataclass
class StreamResult:
    heard: list[Heard] = field(default_factory=list)  # in order of arrival
    decodes: list[float] = field(default_factory=list)  # speech.stopped -> caption.final, s
    behind_s: float = 0.0  # the furthest the client fell behind its sending schedule
    ended_s: float | None = None  # close -> session.ended; None: not within END_TIMEOUT_S
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0  # audio sent

    def of(self, kind: str) -> list[Heard]:
        return [h for h in self.heard if h.type == kind]

    @property
    def growth_s(self) -> float:
        """Least-squares slope of the finals' lag behind their segment ends over audio time, times the span: how
        much the lag grew (the finals of segments cut by the end of the run, CUT_S, left out)."""
        if len(finals := [h for h in self.of(FINAL) if h.end + CUT_S <= self.duration_s]) < 3:
            return 0.0
        x, y = np.array([(h.end, h.arrival - h.end) for h in finals]).T
        if np.ptp(x) == 0:
            return 0.0
        return float(np.polyfit(x, y, 1)[0] * np.ptp(x))

    @property
    def realtime(self) -> bool:
        return self.behind_s < BEHIND_S and self.ended_s is not None and self.growth_s < GROWTH_S


@dataclass(frozen=True)
class Followed:
    """What a stream's client saw of one utterance; latencies in s, None when nothing of that kind came."""

    utterance: Utterance
    text: str  # its finals, joined with spaces
    final_s: float | None  # last final - its last word
    first_word_s: float | None  # first caption with text - its speech start
    turn_s: float | None  # its (last) turn.ended - its last word


def follow(u: Utterance, result: StreamResult) -> Followed:
    """The finals (by midpoint), partials (by start) and turn ends (by end) in `u`'s span, and their delays."""
    finals = [h for h in result.of(FINAL) if h.text.strip() and u.holds((h.start + h.end) / 2)]
    partials = [h for h in result.of(PARTIAL) if h.text.strip() and u.holds(h.start)]
    turns = [h for h in result.of(TURN) if u.holds(h.end)]
    late = lambda hs, at: max(h.arrival for h in hs) - at if hs else None  # noqa: E731
    first = min(h.arrival for h in finals + partials) - u.start if finals or partials else None
    return Followed(u, " ".join(h.text for h in finals), late(finals, u.end), first, late(turns, u.end))


async def run_stream(url: str, pcm: bytes, frame_ms: int) -> StreamResult:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    out = StreamResult(duration_s=len(pcm) / (2 * RATE))
    loop = asyncio.get_running_loop()
    step = RATE * 2 * frame_ms // 1000
    async with connect(url, max_queue=None) as ws:
        stopped: dict[int, float] = {}  # segment -> receipt of its speech.stopped
        ended = asyncio.Event()
        t0 = loop.time()

        async def receive() -> None:
            async for message in ws:
                now, e = loop.time(), json.loads(message)
                kind = e["type"]
                if kind in (FINAL, PARTIAL, TURN):
                    out.heard.append(Heard(kind, now - t0, e["start"], e["end"], e["text"]))
                if kind == FINAL and e["segment"] in stopped:
                    out.decodes.append(now - stopped.pop(e["segment"]))
                elif kind == "speech.stopped":
                    stopped[e["segment"]] = now
                elif kind == "error":
                    out.errors.append(e["code"])
                elif kind == "session.ended":
                    ended.set()

        receiver = asyncio.create_task(receive())
        try:
            for sent in range(step, len(pcm) + step, step):
                due = t0 + min(sent, len(pcm)) / (2 * RATE)  # a frame goes out once all of it has been "captured"
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                out.behind_s = max(out.behind_s, loop.time() - due)
                await ws.send(pcm[sent - step:sent])
            closed = loop.time()
            await ws.send(json.dumps({"type": "close"}))
            await asyncio.wait_for(ended.wait(), END_TIMEOUT_S)
            out.ended_s = loop.time() - closed
        except TimeoutError:
            pass  # ended_s stays None: not in real time
        except ConnectionClosed as e:  # the server ended the stream early: counted as an error, not a crash
            out.errors.append(f"closed {e.rcvd.code if e.rcvd else 'abnormally'}")
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    return out


def scrape(url: str) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def gpu_utilisation() -> float | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True)
    values = [float(v) for v in done.stdout.split()] if done.returncode == 0 else []
    return statistics.mean(values) if values else None


@dataclass
class Monitor:
    """1 s samples of the server process and its engine while a run goes on."""

    cpu: list[float] = field(default_factory=list)  # server process, % of one core
    system: list[float] = field(default_factory=list)  # whole machine, % of all cores
    client: list[float] = field(default_factory=list)  # this process (the clients), % of one core
    rss_mb: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    gpu: list[float] = field(default_factory=list)

    async def run(self, proc: psutil.Process, url: str, stop: asyncio.Event) -> None:
        me = psutil.Process()
        proc.cpu_percent(), me.cpu_percent(), psutil.cpu_percent()  # start the counters
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
            self.cpu.append(proc.cpu_percent())
            self.client.append(me.cpu_percent())
            self.system.append(psutil.cpu_percent())
            self.rss_mb.append(proc.memory_info().rss / 2**20)
            metrics = await asyncio.to_thread(scrape, url)  # also makes the server fold new batches into its histogram
            self.queue.append(metrics.get("livecaptions_engine_queue_depth", 0.0))
            if (g := await asyncio.to_thread(gpu_utilisation)) is not None:
                self.gpu.append(g)


def batch_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean and p50/p95 (bucket upper bounds) of the engine batch sizes between two scrapes."""
    name = "livecaptions_engine_batch_size"
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
    buckets = sorted((float(m[1]), after[k] - before.get(k, 0.0)) for k in after
                     if (m := re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', k)))

    def quantile(q: float) -> float:
        for le, n in buckets:
            if n >= q * count:
                return le
        return float("nan")

    return {"batches": count, "batch_mean": round(total / count, 2) if count else 0.0,
            "batch_p50": quantile(0.5) if count else 0.0, "batch_p95": quantile(0.95) if count else 0.0}


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


async def measure(url: str, proc: psutil.Process, n: int, programs: list[tuple[bytes, list[Utterance]]],
                  references: list[Clip], args: argparse.Namespace) -> dict:
    query = "language=auto&partials=true" + (f"&endpointing_ms={args.endpointing_ms}" if args.endpointing_ms else "")
    before = scrape(url)
    monitor, stop = Monitor(), asyncio.Event()
    watching = asyncio.create_task(monitor.run(proc, url, stop))
    t0 = time.perf_counter()
    results = await asyncio.gather(*(run_stream(f"{url.replace('http', 'ws', 1)}/v1/listen?stream=bench-{n}-{i}&{query}",
                                                programs[i][0], args.frame_ms) for i in range(n)))
    wall = time.perf_counter() - t0
    stop.set()
    await watching
    after = scrape(url)
    followed = [follow(u, r) for r, (_, utterances) in zip(results, programs) for u in utterances
                if u.end + CUT_S <= args.duration]
    finals = [f.final_s for f in followed if f.final_s is not None]
    first = [f.first_word_s for f in followed if f.first_word_s is not None]
    turns = [f.turn_s for f in followed if f.turn_s is not None]
    partials = [h.arrival - h.end for r in results for h in r.of(PARTIAL)]
    said = [references[f.utterance.clip] for f in followed]
    texts, languages, spoken = [f.text for f in followed], [c.language for c in said], [c.reference for c in said]
    decodes = [lat for r in results for lat in r.decodes]
    return {
        "streams": n, "duration_s": args.duration, "wall_s": round(wall, 1), "model": args.model,
        "endpointing_ms": args.endpointing_ms,  # None: the server's default
        "p50_final_latency_s": pct(finals, 50), "p95_final_latency_s": pct(finals, 95),
        "p50_partial_latency_s": pct(partials, 50), "p95_partial_latency_s": pct(partials, 95),
        "p50_first_word_s": pct(first, 50), "p95_first_word_s": pct(first, 95),
        "p50_turn_latency_s": pct(turns, 50), "p95_turn_latency_s": pct(turns, 95),
        "p50_final_decode_s": pct(decodes, 50), "p95_final_decode_s": pct(decodes, 95),
        "wer_en": score(texts, languages, spoken, "en"), "cer_zh": score(texts, languages, spoken, "zh"),
        "utterances": len(followed),
        "utterances_without_final": len(followed) - len(finals), "utterances_without_turn": len(followed) - len(turns),
        "finals": sum(len(r.of(FINAL)) for r in results), "partials": len(partials),
        "realtime": all(r.realtime for r in results), "realtime_streams": sum(r.realtime for r in results),
        "lag_growth_max_s": round(max(r.growth_s for r in results), 3),
        "behind_max_s": round(max(r.behind_s for r in results), 3),
        "end_max_s": None if any(r.ended_s is None for r in results) else round(max(r.ended_s for r in results), 3),
        "errors": sorted({c for r in results for c in r.errors}),
        **batch_stats(before, after),
        "queue_depth_max": max(monitor.queue, default=0.0),
        "cpu_pct": round(statistics.mean(monitor.cpu), 1) if monitor.cpu else None,
        "cpu_pct_max": round(max(monitor.cpu), 1) if monitor.cpu else None,
        "system_cpu_pct": round(statistics.mean(monitor.system), 1) if monitor.system else None,
        "client_cpu_pct": round(statistics.mean(monitor.client), 1) if monitor.client else None,
        "rss_mb": round(max(monitor.rss_mb), 1) if monitor.rss_mb else None,
        "gpu_pct": round(statistics.mean(monitor.gpu), 1) if monitor.gpu else None,
    }


def live_table(rows: list[dict]) -> str:
    fmt = "{:>7} {:>9} {:>9} {:>11} {:>14} {:>8} {:>9} {:>10} {:>10} {:>8} {:>6} {:>8}"
    lines = [fmt.format("streams", "final p50", "final p95", "partial p95", "first word p95", "turn p95", "WER/CER %",
                        "decode p95", "batch mean", "server %", "RSS MB", "realtime")]
    s = lambda v, f=".2f": "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(fmt.format(r["streams"], s(r["p50_final_latency_s"]), s(r["p95_final_latency_s"]),
                                s(r["p95_partial_latency_s"]), s(r["p95_first_word_s"]), s(r["p95_turn_latency_s"]),
                                f"{s(r['wer_en'], '.1f')}/{s(r['cer_zh'], '.1f')}", s(r["p95_final_decode_s"]),
                                f"{r['batch_mean']:.1f}", f"{r['cpu_pct'] or 0:.0f}", f"{r['rss_mb'] or 0:.0f}",
                                f"{r['realtime_streams']}/{r['streams']}"))
    return "\n".join(lines)


def live(args: argparse.Namespace, counts: list[int]) -> None:
    from gateway.media import decode_file
    from support.server import Server

    references = clips(SPEECH)
    clip_audio = [decode_file(c.path) for c in references]
    spans = [speech_span(a) for a in clip_audio]
    programs = [program(clip_audio, spans, i, args.duration) for i in range(max(counts))]
    log = Path(tempfile.mkdtemp(prefix="bench-streams-")) / "serve.log"  # kept: the server's log, if it fails
    # Server's CPU/int8 defaults overridden by the flags that follow (the last occurrence of a flag wins); every
    # client is the same anonymous caller, so the per-key stream limit is lifted: this measures capacity.
    server = Server(log, "--model", args.model, "--device", args.device, "--compute-type", args.compute_type,
                    "--threads", str(args.threads), "--max-streams-per-key", "0")
    rows = []
    try:
        server.wait_ready(timeout=600)
        proc = psutil.Process(server.proc.pid)
        for n in counts:
            print(f"[bench.streams] {n} stream(s), {args.duration:g} s of audio each ...", file=sys.stderr, flush=True)
            rows.append(asyncio.run(measure(server.http, proc, n, programs, references, args)))
            r = rows[-1]
            print(f"[bench.streams] {n}: final p95 {r['p95_final_latency_s']} s, turn p95 {r['p95_turn_latency_s']} s "
                  f"over {r['utterances']} utterances ({r['utterances_without_final']} without a final), "
                  f"realtime {r['realtime_streams']}/{n}", file=sys.stderr, flush=True)
            time.sleep(2)  # let the last finals settle before the next N
    finally:
        server.stop()
    print(f"# machine: {describe()}; model {args.model}, device {args.device}, compute {args.compute_type}; "
          f"{args.duration:g} s of audio per stream, {args.frame_ms} ms frames, endpointing "
          f"{args.endpointing_ms or 'the server default'} ms; latencies in s; WER/CER % = en WER / zh CER of the "
          f"finals; server % = CPU of the server process (100 = one core)")
    print(f"# command: python bench/streams.py {' '.join(sys.argv[1:])}")
    print(live_table(rows))
    kept = [r["streams"] for r in rows if r["realtime"]]
    print(f"largest N kept in real time: {max(kept) if kept else 'none'}")
    if args.json:
        for r in rows:
            print(json.dumps(r))


# -- offline throughput -----------------------------------------------------------------------------------------

@dataclass
class OfflineRow:
    engine: str
    files: int
    segments: int
    audio_s: float
    wall_s: float
    wer: float | None  # English, %, when DIR has a manifest
    cer: float | None  # Chinese, %

    @property
    def speed(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_s / self.wall_s


def score(texts: list[str], languages: list[str | None], references: list[str | None], language: str) -> float | None:
    pairs = [(r, t) for t, lang, r in zip(texts, languages, references) if lang == language and r is not None]
    return round(error_rate(pairs, language), 2) if pairs else None


def ours(audios: list[np.ndarray], languages: list[str | None], args: argparse.Namespace) -> tuple[OfflineRow, list[str]]:
    from engine.messages import DecodeOptions
    from engine.runner import ModelRunner
    from engine.messages import EngineConfig
    from gateway.offline import split

    runner = ModelRunner(EngineConfig(model=args.model, device=args.device, compute_type=args.compute_type,
                                      threads=args.threads))
    batch = args.batch or runner.config.max_batch
    pieces = [(i, a[s:e]) for i, a in enumerate(audios) for s, e in split(a)]
    order = sorted(range(len(pieces)), key=lambda k: -len(pieces[k][1]))  # longest first: less padding per batch
    options = [DecodeOptions(language=lang) for lang in languages]
    runner.transcribe([pieces[order[0]][1]], [options[pieces[order[0]][0]]])  # warm-up
    texts: list[list[str]] = [[] for _ in audios]
    t0 = time.perf_counter()
    out = {}
    for b in range(0, len(order), batch):
        ks = order[b:b + batch]
        for k, t in zip(ks, runner.transcribe([pieces[k][1] for k in ks], [options[pieces[k][0]] for k in ks])):
            out[k] = t.text
    wall = time.perf_counter() - t0
    for k, (i, _) in enumerate(pieces):  # back in file order
        if out[k]:
            texts[i].append(out[k])
    joined = [("" if lang in ("zh", "ja") else " ").join(t) for t, lang in zip(texts, languages)]
    return OfflineRow(f"ours {runner.device} {runner.compute_type}, all batched", len(audios), len(pieces), sum(map(len, audios)) / RATE, wall, None, None), joined


def faster_whisper(audios: list[np.ndarray], languages: list[str | None],
                   args: argparse.Namespace) -> tuple[OfflineRow, list[str]]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from bench.engine import _to_simplified
    from engine.models import resolve

    model = WhisperModel(str(resolve(args.model)), device="cpu", compute_type="int8",
                         cpu_threads=args.threads or os.cpu_count() or 0)
    pipeline = BatchedInferencePipeline(model)
    post = _to_simplified()

    def run(audio: np.ndarray, language: str | None) -> tuple[str, int]:
        segments, info = pipeline.transcribe(audio, language=language, batch_size=args.batch or 16, beam_size=1,
                                             without_timestamps=True)
        texts = [post(s.text.strip(), language or info.language) for s in segments]  # the generator does the work
        return ("" if (language or info.language) in ("zh", "ja") else " ").join(t for t in texts if t), len(texts)

    run(audios[0], languages[0])  # warm-up
    t0 = time.perf_counter()
    done = [run(a, lang) for a, lang in zip(audios, languages)]
    wall = time.perf_counter() - t0
    row = OfflineRow("faster-whisper int8 batched", len(audios), sum(n for _, n in done), sum(map(len, audios)) / RATE,
                     wall, None, None)
    return row, [t for t, _ in done]


def offline(args: argparse.Namespace) -> None:
    from gateway.media import decode_file

    folder = Path(args.offline)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise SystemExit(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {folder}")
    manifest = {c.path.name: c for c in clips(folder)} if (folder / "manifest.tsv").exists() else {}
    languages = [manifest[p.name].language if p.name in manifest else None for p in files]
    references = [manifest[p.name].reference if p.name in manifest else None for p in files]
    audios = [decode_file(str(p)) for p in files]
    rows = []
    for name, run in (("ours", ours), ("faster-whisper", faster_whisper)):
        print(f"[bench.streams] offline: {name} ...", file=sys.stderr, flush=True)
        row, texts = run(audios, languages, args)
        row.wer, row.cer = score(texts, languages, references, "en"), score(texts, languages, references, "zh")
        rows.append(row)
    peer = rows[-1]
    print(f"# machine: {describe('faster-whisper')}; model {args.model}; {len(files)} files from {folder}; "
          f"audio decoded before timing; one warm-up each")
    print(f"# command: python bench/streams.py {' '.join(sys.argv[1:])}")
    fmt = "{:<36} {:>5} {:>8} {:>8} {:>7} {:>11} {:>7} {:>8} {:>6} {:>6}"
    print(fmt.format("engine", "files", "segments", "audio s", "wall s", "audio s/s", "RTF", "vs fw", "WER %", "CER %"))
    for r in rows:
        print(fmt.format(r.engine, r.files, r.segments, f"{r.audio_s:.1f}", f"{r.wall_s:.2f}", f"{r.speed:.1f}",
                         f"{r.wall_s / r.audio_s:.4f}", f"{r.speed / peer.speed:.2f}x",
                         "-" if r.wer is None else f"{r.wer:.1f}", "-" if r.cer is None else f"{r.cer:.1f}"))
    if args.json:
        for r in rows:
            print(json.dumps({**asdict(r), "audio_s_per_s": round(r.speed, 2), "rtf": round(r.wall_s / r.audio_s, 4),
                              "vs_faster_whisper": round(r.speed / peer.speed, 3), "model": args.model}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench/streams.py", description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--streams", type=int, default=None, help="N concurrent live streams (default 4)")
    mode.add_argument("--sweep", default=None, help="comma-separated N values, e.g. 1,4,8,16: one run each")
    mode.add_argument("--offline", metavar="DIR", default=None, help="offline throughput of DIR's audio files")
    ap.add_argument("--model", default="base")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--compute-type", default="auto", choices=("auto", "float32", "bfloat16", "float16", "int8"))
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of the engine (0: all cores)")
    ap.add_argument("--duration", type=float, default=75.0, help="seconds of audio per stream and run (default 75)")
    ap.add_argument("--frame-ms", type=int, default=50, help="audio per WebSocket frame (default 50 ms)")
    ap.add_argument("--endpointing-ms", type=int, default=None,
                    help="silence that ends an utterance, passed as ?endpointing_ms= (default: the server's)")
    ap.add_argument("--batch", type=int, default=0, help="offline: segments per batch (0: each engine's default)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per run (the last line)")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.frame_ms <= 0 or args.threads < 0 or args.batch < 0:
        ap.error("--duration, --frame-ms must be > 0; --threads, --batch >= 0")
    if args.offline:
        return offline(args)
    counts = [int(n) for n in args.sweep.split(",")] if args.sweep else [args.streams or 4]
    if min(counts) < 1:
        ap.error("stream counts must be >= 1")
    live(args, counts)


if __name__ == "__main__":
    main()
