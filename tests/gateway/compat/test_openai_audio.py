"""OpenAI's audio API on a real server with an API key, driven by the official `openai` client unchanged but for
`base_url`: transcriptions in every response format and streamed, a browser's WebM upload, translations, the model
list; and its refusals as the client raises them."""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf
import srt
import webvtt

from support.speech import SPEECH, error_rate
from gateway.media import decode_file
from gateway.offline import transcribe_file
from tests.gateway.servers import Server, serving
from tests.gateway.test_media import encode

pytestmark = pytest.mark.timeout(300)
KEY = "oa-secret"
MAX_BODY = 2_000_000
JFK = SPEECH / "jfk.wav"
ZH = SPEECH / "aishell-BAC009S0724W0121.wav"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("openai") / "server.log", "--api-key", KEY, "--max-body-bytes", str(MAX_BODY)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.http}/v1", api_key=KEY, max_retries=0) as c:  # its sockets closed
        yield c


@pytest.fixture(scope="module")
def jfk_text(runners) -> str:
    """The CLI's offline transcript of JFK (the same engine settings as the server's)."""
    from engine.messages import DecodeOptions

    return transcribe_file(runners(), str(JFK), DecodeOptions(language="en")).text


def transcribe(client: openai.OpenAI, path: Path = JFK, **kw: object):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model=kw.pop("model", "whisper-1"), file=f, **kw)  # type: ignore[call-overload]


def translate(client: openai.OpenAI, path: Path, **kw: object):
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # this client version marks translations deprecated
        return client.audio.translations.create(model="whisper-1", file=f, **kw)  # type: ignore[call-overload]


def test_json_and_text(client, jfk_text):
    result = transcribe(client, language="en")
    assert result.text == jfk_text
    assert result.usage.type == "duration" and result.usage.seconds == 11.0
    assert transcribe(client, model="gpt-4o-transcribe", response_format="text").strip() == jfk_text  # language detected


def test_verbose_json_has_segments(client, jfk_text):
    result = transcribe(client, language="en", response_format="verbose_json", timestamp_granularities=["segment"])
    assert (result.language, result.duration, result.text) == ("english", 11.0, jfk_text)
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    assert " ".join(s.text for s in result.segments) == jfk_text
    first = result.segments[0]
    assert first.start == 0.0 and 0 < first.end <= 11.0 and first.tokens and first.temperature == 0.0
    assert first.avg_logprob < 0 and 0 <= first.no_speech_prob < 0.6 and first.compression_ratio > 0


@pytest.mark.parametrize("granularities", [["word"], ["word", "segment"]])
def test_verbose_json_words_are_timed_as_faster_whisper_times_them(client, jfk_text, granularities):
    """Word timings from the cross-attention: in order, inside the audio, joining up to the text, and each word's
    start and end within a median 50 ms of faster-whisper's word_timestamps on the same weights."""
    from faster_whisper import WhisperModel

    from engine.models import resolve

    result = transcribe(client, language="en", response_format="verbose_json", timestamp_granularities=granularities)
    words = result.words or []
    assert " ".join(w.word for w in words) == jfk_text
    assert all(0 <= w.start <= w.end <= 11.0 for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))
    assert (result.segments is not None) == ("segment" in granularities)
    peer = WhisperModel(str(resolve("base")), device="cpu", compute_type="int8")
    segments, _ = peer.transcribe(str(JFK), language="en", word_timestamps=True, beam_size=1, vad_filter=False)
    theirs = [w for s in segments for w in s.words]
    key = lambda word: re.sub(r"[^\w']", "", word.lower())  # noqa: E731 (its punctuation may differ)
    assert [key(w.word) for w in theirs] == [key(w.word) for w in words]
    gaps = [abs(a - b) for w, p in zip(words, theirs) for a, b in ((w.start, p.start), (w.end, p.end))]
    assert np.median(gaps) <= 0.05 and np.percentile(gaps, 90) <= 0.15, gaps


def test_srt_and_vtt(client, jfk_text):
    cues = list(srt.parse(transcribe(client, language="en", response_format="srt")))
    assert " ".join(c.content for c in cues) == jfk_text and cues[-1].end.total_seconds() <= 11.0
    vtt = webvtt.from_string(transcribe(client, language="en", response_format="vtt"))
    assert " ".join(c.text for c in vtt.captions) == jfk_text


def test_a_long_files_cues_are_readable_lines(client):
    """31 s of read text: cues cut at word times, none over a line (LINE_CHARS), in order, spelling the text."""
    from gateway.subtitles import LINE_CHARS

    path = SPEECH / "mit-license-read.wav"
    text = transcribe(client, path, language="en", response_format="json").text
    vtt = webvtt.from_string(transcribe(client, path, language="en", response_format="vtt"))
    assert " ".join(c.text for c in vtt.captions) == text
    assert len(vtt.captions) > 5 and all(len(c.text) <= LINE_CHARS for c in vtt.captions)
    times = [(c.start_in_seconds, c.end_in_seconds) for c in vtt.captions]
    assert all(s < e for s, e in times) and all(a[1] <= b[0] for a, b in zip(times, times[1:]))


def test_streamed_deltas_add_up_to_the_done_text(client, jfk_text):
    events = list(transcribe(client, model="gpt-4o-mini-transcribe", language="en", stream=True))
    assert [e.type for e in events][-1] == "transcript.text.done"
    deltas, done = events[:-1], events[-1]
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
    assert "".join(e.delta for e in deltas) == done.text == jfk_text
    assert done.usage.type == "tokens" and done.usage.input_token_details.audio_tokens == 550
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens > 550


def test_a_browsers_webm_upload(client, tmp_path, jfk_text):
    path = tmp_path / "recording.webm"  # what MediaRecorder makes: Opus in WebM, 48 kHz
    encode(path, decode_file(JFK), "libopus", 48000, channels=1)
    assert error_rate([(jfk_text, transcribe(client, path, language="en").text)], "en") <= 10


def test_translation_to_english(client, runners):
    """Mandarin speech comes back as the engine's English translation of it. (Whisper base translates this clip
    poorly, differently in int8 and float32: the test holds the API to the engine's words, not to a phrase.)"""
    from engine.messages import DecodeOptions

    result = translate(client, ZH)
    expected = transcribe_file(runners(), str(ZH), DecodeOptions(task="translate")).text
    assert result.text == expected and result.text.isascii() and len(result.text.split()) >= 4, (result.text, expected)


def test_models_are_the_served_one_and_its_aliases(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "base" and {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "stepaudio-2.5-asr"} <= set(ids)
    assert client.models.retrieve("whisper-1").owned_by == "livecaptions"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_refusals_are_errors_the_client_raises(server, client, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + bytes(MAX_BODY))
    zeros, hiss = tmp_path / "zeros.wav", tmp_path / "hiss.wav"  # digital silence is refused, quiet noise is not
    sf.write(zeros, np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    sf.write(hiss, np.random.default_rng(0).normal(0, 1e-3, 32000).astype(np.float32), 16000, subtype="PCM_16")
    assert transcribe(client, hiss).text == ""
    cases = [
        (dict(), zeros, openai.BadRequestError, "invalid_audio"),
        (dict(model="nope"), JFK, openai.BadRequestError, "model_not_found"),
        (dict(temperature=0.7), JFK, openai.BadRequestError, "unsupported_value"),
        (dict(response_format="json", timestamp_granularities=["word"]), JFK, openai.BadRequestError, "invalid_value"),
        (dict(response_format="verbose_json", timestamp_granularities=["letter"]), JFK, openai.BadRequestError,
         "invalid_value"),
        (dict(response_format="srt", stream=True), JFK, openai.BadRequestError, "unsupported_value"),
        (dict(), Path(__file__), openai.BadRequestError, "invalid_audio"),
        (dict(language="xx"), JFK, openai.BadRequestError, "unsupported_language"),
        (dict(prompt="livecaptions " * 400), JFK, openai.BadRequestError, "invalid_value"),  # 5200 characters
        (dict(), big, openai.APIStatusError, "body_too_large"),
    ]
    for kw, path, error, code in cases:
        with pytest.raises(error) as e:
            transcribe(client, path, **kw)
        assert e.value.body["code"] == code and e.value.body["message"], (kw, e.value.body)
    assert e.value.status_code == 413
    with openai.OpenAI(base_url=f"{server.http}/v1", api_key="wrong", max_retries=0) as wrong, \
            pytest.raises(openai.AuthenticationError):
        transcribe(wrong)
    with pytest.raises(openai.BadRequestError) as e:
        translate(client, JFK, extra_body={"language": "en"})
    assert e.value.body["param"] == "language"
