"""Error rates against reference transcripts: WER for space-delimited languages, CER for Chinese/Japanese."""
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jiwer

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPEECH = SHARED / "speech"
CHARACTER_LANGUAGES = ("zh", "ja")


@dataclass(frozen=True)
class Clip:
    path: Path
    language: str
    duration_s: float
    reference: str


def clips(folder: Path = SPEECH) -> list[Clip]:
    """The reference speech of ../shared/speech/manifest.tsv."""
    with open(folder / "manifest.tsv", newline="") as f:
        return [Clip(folder / r["file"], r["language"], float(r["duration_s"]), r["transcript"])
                for r in csv.DictReader(f, delimiter="\t")]


def normalise(text: str, language: str) -> str:
    """Case, width and punctuation folded; Chinese/Japanese split into characters."""
    t = unicodedata.normalize("NFKC", text).lower()
    if language in CHARACTER_LANGUAGES:
        return " ".join(re.sub(r"[^\w]", "", t))
    return " ".join(re.sub(r"[^\w\s']", " ", t).split())


def error_rate(pairs: list[tuple[str, str]], language: str) -> float:
    """Corpus WER (CER for Chinese/Japanese) in percent over (reference, hypothesis) pairs."""
    refs = [normalise(r, language) for r, _ in pairs]
    hyps = [normalise(h, language) for _, h in pairs]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        return 0.0
    out = jiwer.process_words([refs[i] for i in keep], [hyps[i] or "" for i in keep])
    return 100.0 * out.wer
