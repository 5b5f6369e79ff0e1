"""Languages as the vendors name them: Whisper's codes -> the English names OpenAI's `verbose_json` reports
(`"language": "english"`), and a vendor's language tag -> our ISO code."""
from __future__ import annotations

import re

_TABLE = """en english|zh chinese|de german|es spanish|ru russian|ko korean|fr french|ja japanese|pt portuguese|
tr turkish|pl polish|ca catalan|nl dutch|ar arabic|sv swedish|it italian|id indonesian|hi hindi|fi finnish|
vi vietnamese|he hebrew|uk ukrainian|el greek|ms malay|cs czech|ro romanian|da danish|hu hungarian|ta tamil|
no norwegian|th thai|ur urdu|hr croatian|bg bulgarian|lt lithuanian|la latin|mi maori|ml malayalam|cy welsh|
sk slovak|te telugu|fa persian|lv latvian|bn bengali|sr serbian|az azerbaijani|sl slovenian|kn kannada|
et estonian|mk macedonian|br breton|eu basque|is icelandic|hy armenian|ne nepali|mn mongolian|bs bosnian|
kk kazakh|sq albanian|sw swahili|gl galician|mr marathi|pa punjabi|si sinhala|km khmer|sn shona|yo yoruba|
so somali|af afrikaans|oc occitan|ka georgian|be belarusian|tg tajik|sd sindhi|gu gujarati|am amharic|
yi yiddish|lo lao|uz uzbek|fo faroese|ht haitian creole|ps pashto|tk turkmen|nn nynorsk|mt maltese|
sa sanskrit|lb luxembourgish|my myanmar|bo tibetan|tl tagalog|mg malagasy|as assamese|tt tatar|haw hawaiian|
ln lingala|ha hausa|ba bashkir|jw javanese|su sundanese|yue cantonese"""
_TAG = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]+)*")  # BCP-47: "en", "en-US", "zh-Hans-CN"
NAMES = dict(entry.strip().split(" ", 1) for entry in _TABLE.split("|"))


def name_of(code: str) -> str:
    """'en' -> 'english'; a code Whisper does not list stays as it is."""
    return NAMES.get(code, code)


def iso_language(tag: str | None) -> str | None:
    """A vendor's language tag -> our ISO code, None for detection ("", "auto", "multi"); ValueError if malformed."""
    if not tag or tag.lower() in ("auto", "multi"):
        return None
    if not (m := _TAG.fullmatch(tag)):
        raise ValueError(f"language must be a code such as 'en' or 'en-US', got {tag!r}")
    return m.group(1).lower()
