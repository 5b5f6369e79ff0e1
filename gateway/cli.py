"""`livecaptions` command line: argument parsing and dispatch. Each command's work lives in its own module."""
from __future__ import annotations

import argparse
import json
import os
import sys

ENGINE_FLAGS = ("model", "device", "compute_type", "threads", "encoder", "zh_script", "mtp_heads")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--model", default=env("LIVECAPTIONS_MODEL", "base"), help="base, tiny.en, or a model folder (default: base)")
    p.add_argument("--device", default=env("LIVECAPTIONS_DEVICE", "auto"), choices=("auto", "cpu", "cuda"))
    p.add_argument("--compute-type", default=env("LIVECAPTIONS_COMPUTE_TYPE", "auto"),
                   choices=("auto", "float32", "bfloat16", "float16", "int8"), help="auto: int8 on CPU, float16 on CUDA")
    p.add_argument("--threads", type=int, default=int(env("LIVECAPTIONS_THREADS", "0")), help="CPU threads (0: all cores)")
    p.add_argument("--encoder", default=env("LIVECAPTIONS_ENCODER", "trim"), choices=("trim", "full"),
                   help="trim: encode each segment's true length (default); full: pad to 30 s like Whisper")
    p.add_argument("--zh-script", default="simplified", choices=("simplified", "traditional", "as-is"))
    p.add_argument("--mtp-heads", default=env("LIVECAPTIONS_MTP_HEADS"), help="MTP heads file (default: the model's shipped heads)")


def make_runner(args: argparse.Namespace):
    from engine.runner import EngineConfig, ModelRunner

    return ModelRunner(EngineConfig(**{k: getattr(args, k) for k in ENGINE_FLAGS}))


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.live:
        return cmd_transcribe_live(args)
    from engine.decoding import DecodeOptions
    from gateway.media import AudioError
    from gateway.offline import transcribe_file

    options = DecodeOptions(language=None if args.language == "auto" else args.language, task=args.task, prompt=args.prompt,
                            drafts=None if args.drafts == "none" else args.drafts)
    runner = make_runner(args)
    if args.drafts in ("mtp", "both") and runner.decoder.mtp is None:
        print(f"note: no MTP heads for model {args.model!r}: decoding one token per step", file=sys.stderr)
    failed = 0
    for path in args.files:
        try:
            result = transcribe_file(runner, path, options, progress=sys.stderr.isatty() or args.progress)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
        else:
            print(result.text, flush=True)
    return 1 if failed else 0


def cmd_train_mtp(args: argparse.Namespace) -> int:
    from gateway.train_mtp import run

    args.mtp_heads = "none"  # the base model alone makes the labels
    return run(args, make_runner(args))


def cmd_transcribe_live(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from gateway.live import Printer, run, summary
    from gateway.media import AudioError, decode_file
    from gateway.offline import check_signal
    from gateway.session import SessionConfig

    if len(args.files) != 1:
        raise ValueError(f"--live plays one file, got {len(args.files)}")
    config = SessionConfig(language=None if args.language == "auto" else args.language, prompt=args.prompt, task=args.task)
    path = args.files[0]
    try:
        audio = decode_file(path)
        check_signal(audio, path)
    except AudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    runner = make_runner(args)
    runner.warm_up()  # so the first captions' lag is the decoding's, not lazy initialisation's
    printer = Printer(args.json)
    asyncio.run(run(runner, audio, Path(path).name or "live", config, args.speed, printer))
    if args.progress or sys.stderr.isatty():
        print(summary(printer), file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.runner import EngineConfig
    from gateway.config import ServeConfig
    from gateway.serve import run

    config = ServeConfig(engine=EngineConfig(**{k: getattr(args, k) for k in ENGINE_FLAGS}), host=args.host,
                         port=args.port, language=args.language, redis_url=args.redis_url or None,
                         redis_prefix=args.redis_prefix, max_frame_bytes=args.max_frame_bytes,
                         idle_timeout_s=args.idle_timeout, history_len=args.history_len, log_level=args.log_level)
    return run(config)


def speed(value: str) -> float:
    s = float(value)
    if not s >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: as fast as possible), got {value}")
    return s


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecaptions", description="Self-hosted real-time captioning.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio/video files and print the text")
    t.add_argument("files", nargs="+", metavar="FILE", help="any container FFmpeg reads: wav, flac, ogg, mp3, m4a, webm ...")
    add_engine_args(t)
    t.add_argument("--language", default="auto", help="ISO code (en, zh, ...) or auto (detect; default)")
    t.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    t.add_argument("--prompt", default=None, help="initial prompt: context or hotwords that bias spelling")
    t.add_argument("--json", action="store_true", help="one JSON object per file on its own line")
    t.add_argument("--progress", action="store_true", help="progress on stderr even when it is not a terminal")
    t.add_argument("--live", action="store_true",
                   help="play the file (one) as a live stream: partial and final captions as they come, with their lag; "
                        "with --json, one caption event per line")
    t.add_argument("--speed", type=speed, default=1.0, help="with --live: times real time (default 1; 0: as fast as possible)")
    t.add_argument("--drafts", default="mtp", choices=("mtp", "none"),
                   help="mtp: multi-token prediction with the model's heads (same output, fewer decoder passes; default)")
    t.set_defaults(func=cmd_transcribe)

    m = sub.add_parser("train-mtp", help="train multi-token-prediction heads for a model by self-distillation")
    add_engine_args(m)
    m.add_argument("--utterances", type=int, default=1500, help="synthetic utterances to make (default 1500)")
    m.add_argument("--heads", type=int, default=4, help="heads K: drafts per decoder step (default 4)")
    m.add_argument("--epochs", type=int, default=20)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--corpus", default="../shared/corpus", help="folder with zh-commonvoice.txt (Mandarin sentences)")
    m.add_argument("--work", default=".mtp-work", help="cache of labelled states and checkpoints (resumable)")
    m.add_argument("--output", default=None, help="heads file (default: engine/heads/<model sha>-<model>.safetensors)")
    m.set_defaults(func=cmd_train_mtp)

    env = os.environ.get
    s = sub.add_parser("serve", help="run the captioning service: WebSocket ingest, WebSocket/SSE captions, /metrics")
    s.add_argument("--host", default=env("LIVECAPTIONS_HOST", "127.0.0.1"))
    s.add_argument("--port", type=int, default=int(env("LIVECAPTIONS_PORT", "8000")))
    add_engine_args(s)
    s.add_argument("--language", default=env("LIVECAPTIONS_LANGUAGE", "auto"),
                   help="default language of ingest streams: ISO code or auto (default)")
    s.add_argument("--redis-url", default=env("LIVECAPTIONS_REDIS_URL"),
                   help="share captions across instances through Redis (default: in-process, one instance)")
    s.add_argument("--redis-prefix", default=env("LIVECAPTIONS_REDIS_PREFIX", "livecaptions:"))
    s.add_argument("--max-frame-bytes", type=int, default=int(env("LIVECAPTIONS_MAX_FRAME_BYTES", str(256 * 1024))))
    s.add_argument("--idle-timeout", type=float, default=float(env("LIVECAPTIONS_IDLE_TIMEOUT", "30")),
                   help="seconds without a frame before an ingest socket is closed (default 30)")
    s.add_argument("--history-len", type=int, default=int(env("LIVECAPTIONS_HISTORY_LEN", "5000")),
                   help="events kept per stream for resume and .vtt/.srt (default 5000)")
    s.add_argument("--log-level", default=env("LIVECAPTIONS_LOG_LEVEL", "info"),
                   choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.models import ModelNotFound  # the engine's own errors, reported without a traceback

    try:
        return args.func(args)
    except (ModelNotFound, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
