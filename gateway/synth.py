"""Synthetic training speech: sentences from offline text, spoken by espeak-ng with varied voices, then noise and
level augmentation. Used to train MTP heads (self-distillation needs audio, not transcripts). Deterministic per seed.

English prose comes from what every machine has offline: Python's own docstrings and /usr/share/common-licenses;
Mandarin from the corpus folder (../shared/corpus/zh-commonvoice.txt). Never the evaluation speech."""
from __future__ import annotations

import importlib
import inspect
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.media import decode_file

EN_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us+f2", "en-us+m3", "en-gb+f3")
# espeak-ng's plain "cmn" voice reads the pinyin it looks up as English letters and digits ("ni3" -> "en-ee three");
# the pinyin voice speaks it as Mandarin.
ZH_VOICES = ("cmn-latn-pinyin", "cmn-latn-pinyin+f2", "cmn-latn-pinyin+m3")
DOC_MODULES = ("os", "re", "json", "collections", "itertools", "functools", "pathlib", "subprocess", "threading",
               "asyncio", "logging", "argparse", "dataclasses", "typing", "string", "textwrap", "datetime", "decimal",
               "fractions", "statistics", "random", "socket", "email", "http.client", "urllib.request", "csv", "zipfile",
               "tarfile", "shutil", "tempfile", "heapq", "bisect", "contextlib", "inspect", "unittest", "sqlite3")


@dataclass(frozen=True)
class Utterance:
    text: str
    language: str  # en | zh
    voice: str
    audio: np.ndarray  # 16 kHz float32, augmented


def english_sentences() -> list[str]:
    texts = []
    for name in DOC_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        texts += [inspect.getdoc(obj) or "" for _, obj in inspect.getmembers(mod) if callable(obj) or inspect.ismodule(obj)]
    texts += [p.read_text(errors="ignore") for p in Path("/usr/share/common-licenses").glob("*") if p.is_file()]
    out = set()
    for text in texts:
        for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            words = s.split()
            if 3 <= len(words) <= 30 and all(re.fullmatch(r"[A-Za-z][A-Za-z'\-]*[,.;:!?]?", w) for w in words):
                out.add(s)
    return sorted(out)


def chinese_sentences(corpus: Path) -> list[str]:
    path = corpus / "zh-commonvoice.txt"
    return sorted({line.strip() for line in path.read_text().splitlines() if 4 <= len(line.strip()) <= 40}) if path.exists() else []


def speak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True, timeout=60).stdout
    return decode_file(wav)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random level (-26..-6 dBFS peak), lead/trail silence, and white or brown noise at 10-40 dB SNR."""
    audio = audio / max(1e-6, float(np.abs(audio).max())) * 10 ** (rng.uniform(-26, -6) / 20)
    pad = [np.zeros(int(rng.uniform(0.1, 0.6) * 16000), np.float32) for _ in range(2)]
    audio = np.concatenate([pad[0], audio, pad[1]])
    noise = rng.standard_normal(len(audio)).astype(np.float32)
    if rng.random() < 0.5:  # brown: integrated white noise, DC removed
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(801) / 801, mode="same")
    power = float(np.mean(audio**2)) / 10 ** (rng.uniform(10, 40) / 10)
    noise *= np.sqrt(power / max(1e-12, float(np.mean(noise**2))))
    return np.clip(audio + noise, -1, 1).astype(np.float32)


def utterances(corpus: Path, seed: int = 0, start: int = 0, zh_share: float = 0.4):
    """Augmented synthetic utterances number start, start+1, ...: utterance i depends only on (seed, i), so a
    resumed run continues with exactly the utterances it would have made."""
    en, zh = english_sentences(), chinese_sentences(corpus)
    if not en:
        raise RuntimeError("no English sentences found offline")
    i = start
    while True:
        pick, rng = random.Random(seed * 1_000_003 + i), np.random.default_rng([seed, i])
        if zh and pick.random() < zh_share:
            text, voice, lang = "".join(pick.sample(zh, k=pick.choice((1, 1, 2)))), pick.choice(ZH_VOICES), "zh"
        else:
            text, voice, lang = " ".join(pick.sample(en, k=pick.choice((1, 1, 2)))), pick.choice(EN_VOICES), "en"
        audio = speak(text, voice, pick.randint(120, 200), pick.randint(25, 75))[: 28 * 16000]
        yield Utterance(text, lang, voice, augment(audio, rng))
        i += 1
