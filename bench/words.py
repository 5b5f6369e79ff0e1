"""Word timings against faster-whisper's, on the same weights, and what they cost.

    .venv/bin/python bench/words.py [--model base] [--json]

Every clip of ../shared/speech (at most its first 30 s, one window) is decoded greedily by our ModelRunner with
and without word_timestamps, and by faster-whisper (int8, beam 1, word_timestamps=True, no VAD) on the same model
files. Words are matched in order by their letters (case and punctuation aside; Mandarin character by character,
as both split it) and each matched word's start and end compared. The table gives per clip the median and 90th
percentile |difference| of those times, the peer's words we have no match for, and the decode time (best of 5)
without and with word timings: the alignment's cost.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

import numpy as np  # noqa: E402

from bench.machine import describe  # noqa: E402
from support.speech import SPEECH, clips  # noqa: E402

MAX_S = 30.0


def key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def match(ours: list[tuple[str, float, float]], theirs: list[tuple[str, float, float]]) -> tuple[list[float], int]:
    """|start and end differences| of the peer's words found among our next three, and how many were not."""
    gaps, missing, j = [], 0, 0
    for word, start, end in theirs:
        k = next((i for i in range(j, min(j + 3, len(ours))) if ours[i][0] == word), None)
        if k is None:
            missing += 1
            continue
        gaps += [abs(ours[k][1] - start), abs(ours[k][2] - end)]
        j = k + 1
    return gaps, missing


def best_of(n: int, f) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="base")
    ap.add_argument("--json", action="store_true", help="also print one JSON line of the totals (the last line)")
    args = ap.parse_args()

    from faster_whisper import WhisperModel

    from engine.messages import DecodeOptions, EngineConfig
    from engine.models import resolve
    from engine.runner import ModelRunner
    from gateway.media import decode_file

    runner = ModelRunner(EngineConfig(model=args.model, device="cpu", zh_script="as-is"))  # the peer converts nothing
    peer = WhisperModel(str(resolve(args.model)), device="cpu", compute_type="int8")
    runner.warm_up()
    rows, all_gaps, all_missing, plain_s, timed_s = [], [], 0, 0.0, 0.0
    for clip in clips(SPEECH):
        audio = decode_file(clip.path)[: int(MAX_S * 16000)]
        lang = clip.language
        t_plain, _ = best_of(5, lambda: runner.transcribe([audio], DecodeOptions(language=lang)))
        t_timed, out = best_of(5, lambda: runner.transcribe([audio], DecodeOptions(language=lang, word_timestamps=True)))
        ours = [(key(w.word), w.start, w.end) for w in out[0].result.words]
        segments, _ = peer.transcribe(audio, language=lang, word_timestamps=True, beam_size=1, vad_filter=False)
        theirs = [(key(w.word), w.start, w.end) for s in segments for w in s.words]
        gaps, missing = match(ours, theirs)
        all_gaps += gaps
        all_missing += missing
        plain_s += t_plain
        timed_s += t_timed
        rows.append((clip.path.name, lang, len(theirs), gaps, missing, t_plain, t_timed))

    print(f"# machine: {describe('faster-whisper', 'ctranslate2')}; model {args.model}; greedy, one window per clip")
    print(f"# command: python bench/words.py --model {args.model}")
    print(f"{'clip':<34} {'lang':>4} {'words':>5} {'median ms':>9} {'p90 ms':>6} {'unmatched':>9} "
          f"{'decode s':>8} {'+words s':>8} {'cost':>6}")
    for name, lang, n, gaps, missing, t0, t1 in rows:
        med, p90 = (np.median(gaps) * 1000, np.percentile(gaps, 90) * 1000) if gaps else (float("nan"),) * 2
        print(f"{name:<34} {lang:>4} {n:>5} {med:>9.0f} {p90:>6.0f} {missing:>9} {t0:>8.3f} {t1:>8.3f} "
              f"{(t1 / t0 - 1) * 100:>5.0f}%")
    med, p90 = np.median(all_gaps) * 1000, np.percentile(all_gaps, 90) * 1000
    cost = (timed_s / plain_s - 1) * 100
    print(f"{'all':<34} {'':>4} {'':>5} {med:>9.0f} {p90:>6.0f} {all_missing:>9} {plain_s:>8.3f} {timed_s:>8.3f} "
          f"{cost:>5.0f}%")
    if args.json:
        print(json.dumps({"median_ms": round(float(med), 1), "p90_ms": round(float(p90), 1), "unmatched": all_missing,
                          "decode_s": round(plain_s, 3), "decode_words_s": round(timed_s, 3),
                          "cost_pct": round(cost, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
