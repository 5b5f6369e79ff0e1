"""What goes in and out of the engine: configuration, per-segment decode options, results. No torch here, so
the gateway can hold, build and pass these without loading the model's libraries."""
from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16000  # Hz: every audio array the engine takes is 16 kHz mono float32
UNSPACED_LANGUAGES = ("zh", "ja", "yue", "th", "lo", "my", "km", "bo")  # written without spaces between words
DRAFT_SOURCES = ("mtp", "previous", "both", None)
LANGUAGE_AUTO = None

DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = ("auto", "float32", "bfloat16", "float16", "int8")
ENCODER_MODES = ("trim", "full")  # trim: encode the segment's true length; full: pad to Whisper's 30 s window
ZH_SCRIPTS = ("simplified", "traditional", "as-is")
AUDIO_ATTENTION = ("auto", "float32", "bfloat16")  # auto: bfloat16 for int8 on a CPU with AMX, else float32


@dataclass(frozen=True)
class EngineConfig:
    model: str = "base"  # bundled name (base, tiny.en) or a model folder
    device: str = "auto"  # cuda when available, else cpu
    compute_type: str = "auto"  # int8 on CPU, float16 on CUDA (as faster-whisper defaults)
    threads: int = 0  # CPU threads for torch (per engine worker); 0: all cores, or half each for the service's two
    encoder: str = "trim"  # see ENCODER_MODES; trim + 2 s is as accurate as full (docs/engine.md)
    trim_pad_s: float = 2.0  # silence after a trimmed segment: without it the decoder does not hear speech end
    zh_script: str = "simplified"  # Chinese output script: Whisper often writes traditional characters
    max_batch: int = 16  # segments per encoder/decoder batch
    mtp_heads: str | None = None  # MTP heads file; None: the shipped/beside-the-model heads if any; "none": no heads
    n_drafts: int | None = None  # MTP drafts per step (default: one per head)
    draft_min_prob: float = 0.3  # a head's draft below this probability ends the row's drafts for the step
    audio_attention: str = "auto"  # dtype of attention over the audio on the CPU (AUDIO_ATTENTION)

    def __post_init__(self) -> None:
        for name, allowed in (("device", DEVICES), ("compute_type", COMPUTE_TYPES), ("encoder", ENCODER_MODES),
                              ("zh_script", ZH_SCRIPTS), ("audio_attention", AUDIO_ATTENTION)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.threads < 0 or self.max_batch < 1 or not 0 <= self.trim_pad_s <= 30:
            raise ValueError("threads must be >= 0, max_batch >= 1 and trim_pad_s in 0..30")


MAX_PROMPT_CHARS = 4096  # a longer prompt is refused: the decoder keeps only its last 223 tokens anyway


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None = LANGUAGE_AUTO  # ISO code, or None to detect from the language-token logits
    task: str = "transcribe"  # or "translate" (to English)
    prompt: str | None = None  # initial prompt: earlier text, hotwords; biases spelling and style
    max_new_tokens: int = 224  # per-segment cap (Whisper's sample length: half the text context)
    no_speech_threshold: float = 0.6  # with a low avg log-prob, a higher no-speech probability means "silence"
    logprob_threshold: float = -1.0
    repeat_tokens: int = 24  # a tail that repeats one phrase over this many tokens is a loop: cut it (0: off)
    compression_ratio_threshold: float = 2.4  # text that gzips better than this is a loop (checked while decoding)
    drafts: str | None = "mtp"  # draft source: "mtp" (heads, when loaded), "previous", "both", None; output is the same
    previous: tuple[int, ...] = ()  # tokens of the previous hypothesis of this audio (a partial): drafts to verify
    # the language it was read in: when detecting, the prompt is fed in that language and the detection checks it
    # (the same language as without it; one decoder forward fewer when it holds)
    previous_language: str | None = None
    # text tokens the transcript starts with, forced and not returned: those of audio the segment begins with (a
    # live stream's previous piece, decoded again before the new one, as faster-whisper's `prefix`)
    prefix: tuple[int, ...] = ()
    word_timestamps: bool = False  # time each word from the cross-attention (engine/alignment.py)

    def __post_init__(self) -> None:
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', not {self.task!r}")
        if not 1 <= self.max_new_tokens <= 448:
            raise ValueError("max_new_tokens must be in 1..448")
        if self.drafts not in DRAFT_SOURCES:
            raise ValueError(f"drafts must be one of {DRAFT_SOURCES}, not {self.drafts!r}")
        if self.prompt is not None and len(self.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt has {len(self.prompt)} characters, at most {MAX_PROMPT_CHARS} are taken "
                             "(the model reads only its last 223 tokens)")


@dataclass
class WordTiming:
    """One word of a transcript and when it was said (engine/alignment.py)."""

    word: str  # with its leading space, as decoded
    start: float  # seconds from the start of the decoded audio
    end: float
    probability: float  # the mean of its tokens' probabilities
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class DecodeResult:
    tokens: tuple[int, ...]  # text tokens, without the prompt and the end-of-text token
    text: str  # the tokens decoded, as the model wrote them
    language: str
    language_prob: float  # 1.0 when the language was given
    no_speech_prob: float  # probability of <|nospeech|> at the start-of-transcript position
    avg_logprob: float
    compression_ratio: float  # of the text: gzip ratio, high for loops
    looped: bool  # the repetition guard cut a loop
    forwards: int  # decoder forward passes this segment took part in (prefill included)
    emitted: int  # tokens the decoder produced (text tokens + end of text)
    words: tuple[WordTiming, ...] = ()  # with word_timestamps: seconds from the start of the decoded audio

    def silent(self, opts: DecodeOptions) -> bool:
        """Whisper's rule: no speech when <|nospeech|> is likely and the text itself is improbable."""
        return self.no_speech_prob > opts.no_speech_threshold and self.avg_logprob < opts.logprob_threshold


@dataclass(frozen=True)
class Transcript:
    text: str  # post-processed: stripped, Chinese script converted, empty when the segment is silence
    result: DecodeResult  # tokens and counters of the decode
