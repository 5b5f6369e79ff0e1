"""The segmenter alone on the live benchmark's streams: when each utterance's pause and endpoint are heard, and the
CPU a stream's VAD costs.

    .venv/bin/python bench/vad.py [--streams 16] [--duration 75] [--json]

Each stream is bench/streams.py's program (the clips of ../shared/speech with seeded pauses and lead-in), fed to
one Segmenter (the server's defaults, gateway.session.SessionConfig) in 50 ms chunks, as the server reads them.
Per utterance, seconds after its last word (the last 20 ms frame over -40 dBFS, bench/streams.py):

  pause      the SpeechPaused whose audio its SpeechEnded then has: the moment its final's decode can start
  endpoint   its SpeechEnded: the moment its final can be out, if that decode is done
  audio end  where its segment's audio ends

by language, plus the pauses in all and those whose audio no segment ended with (the speaker went on: their decode
was not the final). CPU: the
segmenter's own thread time per 10 ms frame, and webrtcvad's alone on the same frames (the peer: every frame
must pass it), as a ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

import numpy as np  # noqa: E402
import webrtcvad  # noqa: E402

from bench.machine import describe  # noqa: E402
from bench.streams import CUT_S, RATE, program, speech_span  # noqa: E402
from support.speech import SPEECH, clips  # noqa: E402

CHUNK = RATE // 20  # 50 ms, bench/streams.py's default frame


def run(streams: int, duration_s: float) -> dict:
    from gateway.media import decode_file
    from gateway.session import SessionConfig
    from vad import events as vad
    from vad.segmenter import Segmenter, to_int16

    speech = clips(SPEECH)
    audio = [decode_file(c.path) for c in speech]
    spans = [speech_span(a) for a in audio]
    config = SessionConfig().segmenter()
    heard: dict[str, list[tuple[float, float, float]]] = {}
    pauses = finals = 0
    cpu = peer = 0.0
    frames = 0
    for k in range(streams):
        pcm, utterances = program(audio, spans, k, duration_s)
        x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        segmenter, events = Segmenter(config), []
        t0 = time.thread_time()
        for i in range(0, len(x), CHUNK):
            events += [((i + CHUNK) / RATE, e) for e in segmenter.feed(x[i:i + CHUNK])]
        cpu += time.thread_time() - t0
        frames += len(x) // config.frame_samples
        detector, pcm16 = webrtcvad.Vad(config.aggressiveness), to_int16(x)
        t0 = time.thread_time()
        for i in range(0, len(pcm16) - config.frame_samples + 1, config.frame_samples):
            detector.is_speech(pcm16[i:i + config.frame_samples].tobytes(), RATE)
        peer += time.thread_time() - t0
        paused = {(e.index, e.end) for _, e in events if isinstance(e, vad.SpeechPaused)}
        pauses += sum(isinstance(e, vad.SpeechPaused) for _, e in events)
        finals += sum(isinstance(e, vad.SpeechEnded) and (e.index, e.end) in paused for _, e in events)
        for u in utterances:
            if u.end + CUT_S > duration_s:
                continue
            ended = [(t, e) for t, e in events
                     if isinstance(e, vad.SpeechEnded) and u.holds((e.start + e.end) / 2 / RATE)]
            if not ended:
                continue
            at, end = ended[-1]
            pause = [t for t, e in events
                     if isinstance(e, vad.SpeechPaused) and (e.index, e.end) == (end.index, end.end)]
            heard.setdefault(speech[u.clip].language, []).append(
                (pause[0] - u.end if pause else float("nan"), at - u.end, end.end / RATE - u.end))
    out = {"streams": streams, "duration_s": duration_s, "pauses": pauses, "pauses_not_final": pauses - finals,
           "us_per_frame": round(1e6 * cpu / frames, 1), "webrtcvad_us_per_frame": round(1e6 * peer / frames, 1)}
    for language, rows in sorted(heard.items()):
        r = np.array(rows)
        for n, name in enumerate(("pause", "endpoint", "audio_end")):
            v = r[:, n][~np.isnan(r[:, n])]
            out[f"{language}_{name}_p50_s"] = round(float(np.median(v)), 3) if len(v) else None
            out[f"{language}_{name}_p90_s"] = round(float(np.percentile(v, 90)), 3) if len(v) else None
        out[f"{language}_utterances"] = len(rows)
        out[f"{language}_without_pause"] = int(np.isnan(r[:, 0]).sum())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--duration", type=float, default=75.0, help="seconds of audio per stream (default 75)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line (the last line)")
    args = ap.parse_args()
    r = run(args.streams, args.duration)
    print(f"# {describe('webrtcvad-wheels')}; {args.streams} streams x {args.duration:g} s")
    print(f"{'language':>8} {'utterances':>10} {'pause p50/p90 s':>16} {'endpoint p50/p90 s':>19} "
          f"{'audio end p50/p90 s':>20}")
    for language in sorted({k.split("_")[0] for k in r if k.endswith("_utterances")}):
        cols = [f"{r[f'{language}_{n}_p50_s']}/{r[f'{language}_{n}_p90_s']}"
                for n in ("pause", "endpoint", "audio_end")]
        print(f"{language:>8} {r[f'{language}_utterances']:>10} {cols[0]:>16} {cols[1]:>19} {cols[2]:>20}")
    print(f"pause decodes {r['pauses']}, of which not a final {r['pauses_not_final']}; CPU per 10 ms frame "
          f"{r['us_per_frame']} us, webrtcvad alone {r['webrtcvad_us_per_frame']} us "
          f"({r['us_per_frame'] / r['webrtcvad_us_per_frame']:.1f}x)")
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
