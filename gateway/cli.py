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
    p.add_argument("--threads", type=int, default=int(env("LIVECAPTIONS_THREADS", "0")),
                   help="CPU threads per engine worker (0: all cores; when serving, half each for its two workers)")
    p.add_argument("--encoder", default=env("LIVECAPTIONS_ENCODER", "trim"), choices=("trim", "full"),
                   help="trim: encode each segment's true length (default); full: pad to 30 s like Whisper")
    p.add_argument("--zh-script", default="simplified", choices=("simplified", "traditional", "as-is"))
    p.add_argument("--mtp-heads", default=env("LIVECAPTIONS_MTP_HEADS"), help="MTP heads file (default: the model's shipped heads)")


def make_runner(args: argparse.Namespace):
    from engine.runner import ModelRunner
    from engine.messages import EngineConfig

    return ModelRunner(EngineConfig(**{k: getattr(args, k) for k in ENGINE_FLAGS}))


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.live:
        return cmd_transcribe_live(args)
    from engine.messages import DecodeOptions
    from gateway.media import AudioError
    from gateway.offline import transcribe_file

    options = DecodeOptions(language=None if args.language == "auto" else args.language, task=args.task, prompt=args.prompt,
                            drafts=None if args.drafts == "none" else "mtp",
                            word_timestamps=args.word_timestamps or args.subtitles is not None)
    runner = make_runner(args)
    if args.drafts == "mtp" and not runner.has_mtp:  # asked for by name: say why it will not happen
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
        elif args.subtitles:
            from dataclasses import asdict

            from gateway.subtitles import to_srt, to_vtt

            write = to_srt if args.subtitles == "srt" else to_vtt
            print(write([asdict(s) for s in result.segments], args.line_chars), end="", flush=True)
        else:
            print(result.text, flush=True)
    return 1 if failed else 0


def cmd_train_mtp(args: argparse.Namespace) -> int:
    from training.train_mtp import run

    args.mtp_heads = "none"  # the base model alone makes the labels
    return run(args, make_runner(args))


def cmd_transcribe_live(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from gateway.live import run
    from gateway.printer import Printer, summary
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

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        printer.on_gone = task.cancel  # the reader left (`| head`): stop the session
        await run(runner, audio, Path(path).name or "live", config, args.speed, printer)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        if printer.gone:
            return 141  # as a Unix tool's SIGPIPE exit
        raise
    if args.progress or sys.stderr.isatty():
        print(summary(printer), file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.messages import EngineConfig
    from gateway.auth import hash_key
    from gateway.config import ServeConfig
    from gateway.serve import run

    config = ServeConfig(engine=EngineConfig(**{k: getattr(args, k) for k in ENGINE_FLAGS}), host=args.host,
                         port=args.port, language=args.language, redis_url=args.redis_url or None,
                         redis_prefix=args.redis_prefix, max_frame_bytes=args.max_frame_bytes,
                         idle_timeout_s=args.idle_timeout, history_len=args.history_len, log_level=args.log_level,
                         history_ttl_s=args.history_ttl, history_streams=args.history_streams,
                         api_keys=tuple(hash_key(k) for k in args.api_keys), token_secret=args.token_secret,
                         allowed_origins=tuple(args.allowed_origins), allow_anonymous=args.allow_anonymous,
                         allowed_hosts=tuple(args.allowed_hosts),
                         max_streams_per_key=args.max_streams_per_key, max_session_s=args.max_session,
                         max_body_bytes=args.max_body_bytes, max_audio_s=args.max_audio_s)
    return run(config)


def cmd_hash_key(args: argparse.Namespace) -> int:
    from gateway.auth import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        raise ValueError("no key given")
    print(hash_key(key))
    return 0


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def cmd_listen(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from gateway.client import ListenError, file_source, listen, mic_source
    from gateway.media import SAMPLE_RATE, AudioError
    from gateway.printer import Printer, summary

    if (args.file is None) == (not args.mic):
        raise ValueError("give a FILE or --mic (not both)")
    printer = Printer(args.json)
    sent = [0, 0.0]  # samples sent, when the source ended: the printer's live audio clock

    async def counted(source):  # type: ignore[no-untyped-def]
        async for chunk in source:
            sent[0] += len(chunk)
            yield chunk
        sent[1] = time.monotonic()

    def clock() -> float:
        played = sent[0] / SAMPLE_RATE
        return played + (time.monotonic() - sent[1]) * (args.speed or 1) if sent[1] else played

    printer.clock, printer.speed = clock, args.speed

    async def main() -> None:
        async for event in listen(args.url, counted(source), stream=args.stream, language=args.language,
                                  partials=not args.no_partials, api_key=args.api_key, token=args.token):
            await printer(event)

    try:
        source = mic_source() if args.mic else file_source(args.file, args.speed)
        asyncio.run(main())
    except (ListenError, AudioError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(summary(printer), file=sys.stderr)
    return 0


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
    t.add_argument("--word-timestamps", action="store_true",
                   help="with --json: each segment's words with their start and end (from the cross-attention)")
    t.add_argument("--subtitles", choices=("srt", "vtt"), default=None,
                   help="print subtitles instead of text, cues cut at word times into lines of --line-chars")
    t.add_argument("--line-chars", type=int, default=42, help="with --subtitles: characters per cue at most (default 42)")
    t.add_argument("--progress", action="store_true", help="progress on stderr even when it is not a terminal")
    t.add_argument("--live", action="store_true",
                   help="play the file (one) as a live stream: partial and final captions as they come, with their lag; "
                        "with --json, one caption event per line")
    t.add_argument("--speed", type=speed, default=1.0, help="with --live: times real time (default 1; 0: as fast as possible)")
    t.add_argument("--drafts", default=None, choices=("mtp", "none"),
                   help="mtp: multi-token prediction with the model's heads (same output, fewer decoder passes; the "
                        "default when the model has heads); none: one token per decoder pass")
    t.set_defaults(func=cmd_transcribe)

    m = sub.add_parser("train-mtp", help="train multi-token-prediction heads for a model by self-distillation")
    add_engine_args(m)
    m.add_argument("--utterances", type=int, default=1500, help="synthetic utterances to make (default 1500)")
    m.add_argument("--head", default="audio", choices=("audio", "decoder"),
                   help="audio: one CTC head on the encoder output that guesses the whole transcript (default, what "
                        "ships); decoder: K heads on the decoder's state, each guessing one token further")
    m.add_argument("--heads", type=int, default=4, help="with --head decoder: heads K, drafts per decoder step (default 4)")
    m.add_argument("--epochs", type=int, default=None, help="training epochs (default: 8 audio, 20 decoder)")
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
    s.add_argument("--history-ttl", type=float, default=float(env("LIVECAPTIONS_HISTORY_TTL", "86400")),
                   help="seconds a stream's history is kept after its last event (default 86400)")
    s.add_argument("--history-streams", type=int, default=int(env("LIVECAPTIONS_HISTORY_STREAMS", "1000")),
                   help="without Redis: streams whose history is kept, the least recently active dropped first "
                   "(default 1000)")
    s.add_argument("--log-level", default=env("LIVECAPTIONS_LOG_LEVEL", "info"),
                   choices=("critical", "error", "warning", "info", "debug"))
    a = s.add_argument_group("auth (no keys: open, loopback only)")
    a.add_argument("--api-key", action="append", default=_list(env("LIVECAPTIONS_API_KEYS")), dest="api_keys",
                   metavar="KEY", help="an API key or its sha256:<hex> hash (`livecaptions hash-key`); repeatable; "
                   "LIVECAPTIONS_API_KEYS: comma-separated")
    a.add_argument("--token-secret", default=env("LIVECAPTIONS_TOKEN_SECRET"),
                   help="secret that signs tokens (default: derived from the keys, the same on every instance)")
    a.add_argument("--allowed-origin", action="append", default=_list(env("LIVECAPTIONS_ALLOWED_ORIGINS")),
                   dest="allowed_origins", metavar="ORIGIN",
                   help="a browser origin allowed besides the server's own, e.g. https://studio.example; * for any")
    a.add_argument("--allowed-host", action="append", default=_list(env("LIVECAPTIONS_ALLOWED_HOSTS")),
                   dest="allowed_hosts", metavar="NAME",
                   help="without keys, a Host name served besides localhost/127.0.0.1/::1 (a local proxy's name)")
    a.add_argument("--allow-anonymous", action="store_true", default=env("LIVECAPTIONS_ALLOW_ANONYMOUS") == "1",
                   help="serve without keys on a non-loopback --host (behind an auth proxy or on a trusted network)")
    lim = s.add_argument_group("limits (0: unlimited)")
    lim.add_argument("--max-streams-per-key", type=int, default=int(env("LIVECAPTIONS_MAX_STREAMS_PER_KEY", "100")))
    lim.add_argument("--max-session", type=float, default=float(env("LIVECAPTIONS_MAX_SESSION", "0")),
                     help="seconds an ingest session may last (default 0: unlimited)")
    lim.add_argument("--max-body-bytes", type=int, default=int(env("LIVECAPTIONS_MAX_BODY_BYTES", str(100 * 2**20))),
                     help="HTTP request body limit (default 100 MiB)")
    lim.add_argument("--max-audio-s", type=float, default=float(env("LIVECAPTIONS_MAX_AUDIO_S", "14400")),
                     help="audio seconds per HTTP transcription request (default 14400)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("listen", help="stream a file or the microphone to a server and print its captions")
    c.add_argument("file", nargs="?", metavar="FILE", help="any container FFmpeg reads, played as a live source")
    c.add_argument("--mic", action="store_true", help="the microphone instead of a file (needs `sounddevice`)")
    c.add_argument("--url", default=env("LIVECAPTIONS_URL", "ws://127.0.0.1:8000"), help="the server (default %(default)s)")
    c.add_argument("--speed", type=speed, default=1.0, help="times real time for a file (default 1; 0: as fast as possible)")
    c.add_argument("--stream", default=None, help="stream id, so viewers can subscribe (default: the server picks)")
    c.add_argument("--language", default=None, help="ISO code or auto (default: the server's)")
    c.add_argument("--no-partials", action="store_true", help="finals only")
    c.add_argument("--api-key", default=env("LIVECAPTIONS_API_KEY"), help="sent as Authorization: Bearer")
    c.add_argument("--token", default=None, help="a token from POST /v1/tokens instead of a key")
    c.add_argument("--json", action="store_true", help="print the events as JSON lines")
    c.set_defaults(func=cmd_listen)

    h = sub.add_parser("hash-key", help="print the sha256 hash of an API key, to store instead of the key")
    h.add_argument("key", nargs="?", help="the key (default: read one line from stdin)")
    h.set_defaults(func=cmd_hash_key)
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
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit either
        return 141


if __name__ == "__main__":
    sys.exit(main())
