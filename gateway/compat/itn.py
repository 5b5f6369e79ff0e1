"""Spoken form for `enable_itn: false`: numbers as they are said, in the transcript's language.

Whisper writes the written form (digits, `%`, punctuation): that is inverse text normalisation (ITN) on, the
default of StepFun's API and ours. With ITN off a client asks for what was said: numbers spelled out by maintained
libraries, cn2an for Chinese (it also reads dates, decimals and percentages) and num2words for the other languages
it knows. A language neither library knows keeps its digits."""
from __future__ import annotations

import re
from decimal import Decimal

import cn2an
from num2words import CONVERTER_CLASSES, num2words

CN2AN_LANGUAGES = ("zh", "yue")
# A number as Whisper writes it: optional sign, thousands separators, decimals, an English ordinal suffix, percent.
NUMBER = re.compile(r"(?<![\w.,])(-?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(\s?%)?(?!\.?\d|\w)")
PERCENT = {"en": "percent", "de": "Prozent", "fr": "pour cent", "es": "por ciento", "it": "per cento",
           "pt": "por cento", "nl": "procent"}  # num2words has no percent; where we lack the word, "%" stays


def spoken(text: str, language: str | None) -> str:
    """`text` with its numbers spelled out in `language` (an ISO code)."""
    if language in CN2AN_LANGUAGES:
        return cn2an.transform(text, "an2cn")
    if language not in CONVERTER_CLASSES:
        return text
    return NUMBER.sub(lambda m: _say(m, language), text)


def _say(m: re.Match[str], language: str) -> str:
    sign, whole, decimals, ordinal, percent = m.groups()
    value = Decimal(sign + whole.replace(",", "") + (f".{decimals}" if decimals else ""))
    if ordinal and language == "en" and not decimals:
        words = num2words(int(value), lang=language, to="ordinal")
    else:
        words = num2words(value, lang=language)
    if percent:
        words += f" {PERCENT[language]}" if language in PERCENT else percent
    return words
