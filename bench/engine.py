"""End-to-end speed, memory and accuracy of this engine against CTranslate2 and faster-whisper on ../shared/speech.

    .venv/bin/python -m bench.engine [--model base|tiny.en] [--repeat N] [--threads T] [--quiet S] [--json]

Every clip of /work/shared/speech/manifest.tsv (English clips only for tiny.en) is transcribed one clip at a time
with its manifest language given. Audio is decoded to 16 kHz before timing; a clip over 30 s is split with
gateway.offline.split and its pieces go through as one batch. Each configuration runs in a fresh subprocess
(this script with the hidden flag --one), so its peak RSS (ru_maxrss: model load included) is its own. It makes
one untimed warm-up pass over one clip of each language, then times the whole set --repeat times: each clip's
fastest pass counts, and before each timed clip it waits (up to --quiet s) for an idle CPU. Timed per clip:
features + encoder + decoder + text post-processing, i.e. all work from samples to text. The CPU that other
processes used during the passes that count is reported on stderr, in the header and in the JSON (others_pct,
% of one core): above ~10 the figures are noisy.

Configurations:
  engine-<int8|float32|bfloat16>-<trim|full>  engine.runner.ModelRunner, greedy; * marks the CPU default (int8 + trim)
  ct2-<int8|float32>   ctranslate2.models.Whisper.generate, greedy (beam 1, suppress_blank, max_length 448) on
                       engine.audio.log_mel_spectrogram padded to 3000 frames, prompt [sot, lang, transcribe,
                       notimestamps]; feature computation is timed too
  fw-int8              faster_whisper.WhisperModel.transcribe (beam 1, temperature 0, no previous-text
                       conditioning, no timestamps, no VAD) on the whole clip: it windows long audio itself

Columns: audio s (total), wall s (sum of each clip's fastest pass), RTF = wall / audio, latency = mean wall ms
per decoded segment (wall / number of split pieces), peak RSS MB, WER % over English clips, CER % over Chinese
clips (peer output is converted to simplified Chinese as the engine's is: the score compares models, not scripts),
and "vs ct2-int8" = ct2-int8 wall / this wall (> 1: faster than CTranslate2 int8). The ct2 lines' RSS includes
torch (about 200 MB), which they import for engine.audio's features; fw-int8 computes its own in numpy.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import psutil

from bench.machine import describe
from support.speech import Clip, clips, error_rate

Transcribe = Callable[[np.ndarray, list[np.ndarray], str], str]  # (whole clip, its <= 30 s pieces, language) -> text
PEERS = ("ct2-int8", "ct2-float32", "fw-int8")
ENGINES = tuple(f"engine-{c}-{e}" for c in ("int8", "float32", "bfloat16") for e in ("trim", "full"))
DEFAULT = "engine-int8-trim"
BASELINE = "ct2-int8"


@dataclass
class Row:
    config: str
    audio_s: float
    wall_s: float
    segments: int
    rss_mb: float
    wer: float | None  # English, %
    cer: float | None  # Chinese, %
    others_pct: float = 0.0  # CPU other processes used while timing, % of one core: > ~10 means noisy figures

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s

    @property
    def latency_ms(self) -> float:
        return 1000 * self.wall_s / self.segments


def _to_simplified() -> Callable[[str, str], str]:
    import opencc

    cc = opencc.OpenCC("t2s")
    return lambda text, language: cc.convert(text) if language == "zh" else text


def engine_transcriber(config: str, model: str, threads: int) -> Transcribe:
    from engine.messages import DecodeOptions
    from engine.runner import ModelRunner
    from engine.messages import EngineConfig

    _, compute, encoder = config.split("-")
    cfg = EngineConfig(model=model, device="cpu", compute_type=compute, encoder=encoder, threads=threads)
    runner = ModelRunner(cfg)

    def run(audio: np.ndarray, pieces: list[np.ndarray], language: str) -> str:
        out = runner.transcribe(pieces, DecodeOptions(language=language))
        return ("" if language in ("zh", "ja") else " ").join(t.text for t in out if t.text)

    return run


def ct2_transcriber(compute: str, model: str, threads: int) -> Transcribe:
    import ctranslate2
    import torch

    from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
    from engine.models import resolve
    from engine.tokenizer import Tokenizer

    folder = resolve(model)
    whisper = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type=compute, intra_threads=threads)
    tok = Tokenizer.from_file(folder / "tokenizer.json", multilingual=whisper.is_multilingual)
    post = _to_simplified()

    def run(audio: np.ndarray, pieces: list[np.ndarray], language: str) -> str:
        mel = torch.stack([log_mel_spectrogram(p, whisper.n_mels, padding=N_SAMPLES)[:, :N_FRAMES] for p in pieces])
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))
        prompt = [tok.sot, *tok.sot_sequence(language)]
        results = whisper.generate(features, [prompt] * len(pieces), beam_size=1, suppress_blank=True, max_length=448)
        texts = [post(tok.decode(r.sequences_ids[0]).strip(), language) for r in results]
        return ("" if language in ("zh", "ja") else " ").join(t for t in texts if t)

    return run


def fw_transcriber(compute: str, model: str, threads: int) -> Transcribe:
    from faster_whisper import WhisperModel

    from engine.models import resolve

    fw = WhisperModel(str(resolve(model)), device="cpu", compute_type=compute, cpu_threads=threads)
    post = _to_simplified()

    def run(audio: np.ndarray, pieces: list[np.ndarray], language: str) -> str:
        segments, _ = fw.transcribe(audio, language=language, beam_size=1, temperature=0,
                                    condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
        texts = [post(s.text.strip(), language) for s in segments]  # the generator does the work
        return ("" if language in ("zh", "ja") else " ").join(t for t in texts if t)

    return run


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def wait_quiet(max_s: float) -> None:
    """Wait (at most max_s) for half a second in which the whole CPU is under 10 % busy: on a shared machine
    other processes' bursts would land in the timings."""
    end = time.monotonic() + max_s
    while time.monotonic() < end and psutil.cpu_percent(interval=0.5) > 10:
        pass


def measure(config: str, model: str, repeat: int, threads: int, quiet_s: float) -> Row:
    """One configuration, in this process: load, warm up, time `repeat` passes over the clips, score."""
    from gateway.media import decode_file
    from gateway.offline import split

    todo: list[Clip] = [c for c in clips() if not model.endswith(".en") or c.language == "en"]
    audios = [decode_file(c.path) for c in todo]
    pieces = [[a[s:e] for s, e in split(a)] for a in audios]
    kind, compute = config.split("-")[:2]
    run = {"engine": lambda: engine_transcriber(config, model, threads),
           "ct2": lambda: ct2_transcriber(compute, model, threads),
           "fw": lambda: fw_transcriber(compute, model, threads)}[kind]()
    for lang in dict.fromkeys(c.language for c in todo):  # warm-up: one clip of each language, untimed
        i = next(i for i, c in enumerate(todo) if c.language == lang)
        run(audios[i], pieces[i], lang)
    best = [(float("inf"), 0.0)] * len(todo)  # per clip: (fastest wall s, CPU s other processes used meanwhile)
    texts = [""] * len(todo)
    for _ in range(repeat):  # greedy decoding is deterministic: every pass gives the same text
        for i, (clip, audio, parts) in enumerate(zip(todo, audios, pieces)):
            wait_quiet(quiet_s)
            cpu0, mine0, t0 = psutil.cpu_times(), _own_cpu(), time.perf_counter()
            texts[i] = run(audio, parts, clip.language)
            wall, cpu1 = time.perf_counter() - t0, psutil.cpu_times()
            busy = sum(cpu1) - sum(cpu0) - (cpu1.idle - cpu0.idle) - (cpu1.iowait - cpu0.iowait)
            best[i] = min(best[i], (wall, max(0.0, busy - (_own_cpu() - mine0))))
    wall_s = sum(w for w, _ in best)
    others = 100 * sum(o for _, o in best) / wall_s

    def score(lang: str) -> float | None:
        pairs = [(c.reference, t) for c, t in zip(todo, texts) if c.language == lang]
        return round(error_rate(pairs, lang), 2) if pairs else None

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return Row(config, round(sum(len(a) for a in audios) / 16000, 3), round(wall_s, 3), sum(map(len, pieces)),
               round(rss_mb, 1), score("en"), score("zh"), round(others, 1))


def table(rows: list[Row]) -> str:
    base = next((r.wall_s for r in rows if r.config == BASELINE), None)
    fmt = "{:<20} {:>7} {:>7} {:>6} {:>10} {:>6} {:>5} {:>5} {:>11} {:>8}"
    lines = [fmt.format("configuration", "audio s", "wall s", "RTF", "latency ms", "RSS MB", "WER %", "CER %",
                        "vs ct2-int8", "others %")]
    pct = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        lines.append(fmt.format(r.config + (" *" if r.config == DEFAULT else ""), f"{r.audio_s:.1f}", f"{r.wall_s:.2f}",
                                f"{r.rtf:.3f}", f"{r.latency_ms:.0f}", f"{r.rss_mb:.0f}", pct(r.wer), pct(r.cer),
                                f"{base / r.wall_s:.2f}x" if base else "-", f"{r.others_pct:.0f}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="base", choices=("base", "tiny.en"))
    ap.add_argument("--repeat", type=int, default=1, help="timed passes; each clip's fastest counts")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for every configuration (0: library default)")
    ap.add_argument("--quiet", type=float, default=30.0, metavar="S",
                    help="before each timed clip, wait up to S s for an idle CPU (0: don't wait)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per configuration")
    ap.add_argument("--one", choices=PEERS + ENGINES, help=argparse.SUPPRESS)  # child: measure one, print its JSON
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.threads < 0:
        ap.error("--repeat must be >= 1 and --threads >= 0")
    if args.one:
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")  # torch's deprecation, per load
        print(json.dumps(asdict(measure(args.one, args.model, args.repeat, args.threads, args.quiet))))
        return
    common = ["--model", args.model, "--repeat", str(args.repeat), "--threads", str(args.threads),
              "--quiet", str(args.quiet)]
    rows: list[Row] = []
    for config in PEERS + ENGINES:
        print(f"[bench.engine] {config} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench.engine", "--one", config, *common],
                              stdout=subprocess.PIPE, text=True, check=True)
        rows.append(Row(**json.loads(done.stdout.strip().splitlines()[-1])))
        r = rows[-1]
        print(f"[bench.engine] {config}: wall {r.wall_s:.2f} s, RTF {r.rtf:.3f} ({time.perf_counter() - t0:.0f} s "
              f"with load and warm-up); other processes used {r.others_pct:.0f}% of a core"
              + ("  <- NOISY: rerun on an idle machine" if r.others_pct > 10 else ""), file=sys.stderr, flush=True)
    print(f"# machine: {describe('ctranslate2', 'faster-whisper')}")
    print(f"# command: python -m bench.engine {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"# model {args.model}, {rows[0].segments} segments, threads {args.threads or 'default'}, each clip's "
          f"fastest of {args.repeat} pass(es); * = engine default on CPU; others % = CPU that other processes used "
          f"while timing (% of a core)")
    print(table(rows))
    default, base = (next(r for r in rows if r.config == c) for c in (DEFAULT, BASELINE))
    print(f"\n{DEFAULT} vs {BASELINE}, end to end: {base.wall_s / default.wall_s:.2f}x "
          f"({default.wall_s:.2f} s vs {base.wall_s:.2f} s wall, RTF {default.rtf:.3f} vs {base.rtf:.3f})")
    if args.json:
        for r in rows:
            print(json.dumps({**asdict(r), "rtf": round(r.rtf, 4), "latency_ms": round(r.latency_ms, 1),
                              "vs_ct2_int8": round(base.wall_s / r.wall_s, 3), "default": r.config == DEFAULT,
                              "model": args.model}))


if __name__ == "__main__":
    main()
