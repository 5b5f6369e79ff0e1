"""Whisper's byte-level BPE from `tokenizer.json` (the `tokenizers` library), plus its special tokens by name."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers


@dataclass(frozen=True)
class Tokenizer:
    bpe: tokenizers.Tokenizer = field(repr=False)
    multilingual: bool
    eot: int  # <|endoftext|>
    sot: int  # <|startoftranscript|>
    sot_prev: int  # <|startofprev|>: the initial prompt follows it
    no_speech: int  # <|nospeech|> (<|nocaptions|> in English-only vocabularies)
    no_timestamps: int
    transcribe: int
    translate: int
    languages: dict[str, int]  # language code -> its token, in vocabulary order

    @classmethod
    def from_file(cls, path: Path, multilingual: bool) -> Tokenizer:
        bpe = tokenizers.Tokenizer.from_file(str(path))
        tid = bpe.token_to_id

        def special(*names: str) -> int:
            for name in names:
                if tid(name) is not None:
                    return tid(name)
            raise ValueError(f"{path}: no {names[0]} token: not a Whisper tokenizer")

        sot, translate = special("<|startoftranscript|>"), special("<|translate|>")
        langs = {}
        for i in range(sot + 1, translate):
            m = re.fullmatch(r"<\|([a-z]{2,3})\|>", bpe.id_to_token(i) or "")
            if m:
                langs[m.group(1)] = i
        return cls(bpe, multilingual, special("<|endoftext|>"), sot, special("<|startofprev|>"),
                   special("<|nospeech|>", "<|nocaptions|>"), special("<|notimestamps|>"), special("<|transcribe|>"),
                   translate, langs)

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.bpe.decode([i for i in ids if i < self.eot])

    def check_language(self, language: str | None) -> None:
        """ValueError unless the model can be told `language` (None: detect; an English-only model takes any)."""
        if language is not None and self.multilingual and language not in self.languages:
            raise ValueError(f"unknown language {language!r}; known: {', '.join(self.languages)}")

    def language_of(self, token: int) -> str:
        return next(code for code, t in self.languages.items() if t == token)

    def sot_sequence(self, language: str | None, task: str = "transcribe") -> list[int]:
        """The tokens after <|startoftranscript|>, up to <|notimestamps|> (no language/task for English-only models)."""
        if not self.multilingual:
            return [self.no_timestamps]
        return [self.languages[language or "en"], self.translate if task == "translate" else self.transcribe, self.no_timestamps]
