"""`livecaptions` command line: argument parsing and dispatch. Each command's work lives in its own module."""
from __future__ import annotations

import argparse
import json
import os
import sys

ENGINE_FLAGS = ("model", "device", "compute_type", "threads", "encoder", "zh_script")


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


def make_runner(args: argparse.Namespace):
    from engine.runner import EngineConfig, ModelRunner

    return ModelRunner(EngineConfig(**{k: getattr(args, k) for k in ENGINE_FLAGS}))


def cmd_transcribe(args: argparse.Namespace) -> int:
    from engine.decoding import DecodeOptions
    from gateway.media import AudioError
    from gateway.offline import transcribe_file

    options = DecodeOptions(language=None if args.language == "auto" else args.language, task=args.task, prompt=args.prompt)
    runner = make_runner(args)
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
    t.set_defaults(func=cmd_transcribe)
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
