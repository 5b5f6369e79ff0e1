"""Audio in: every common container decodes to the same 16 kHz mono signal; bad input is a clear AudioError."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.media import AudioError, decode_file, decode_pcm

FORMATS = [("wav", "pcm_s16le", 44100), ("flac", "flac", 48000), ("ogg", "libopus", 48000), ("mp3", "libmp3lame", 44100),
           ("m4a", "aac", 44100), ("webm", "libopus", 48000)]


def encode(path, audio16k: np.ndarray, codec: str, rate: int, channels: int = 2) -> None:
    """Write `audio16k` as a stereo file of another rate with PyAV's encoders (what a user's file would be)."""
    import av
    import soxr

    x = soxr.resample(audio16k, 16000, rate).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        fmt = stream.codec_context.codec.audio_formats[0].name
        step = stream.codec_context.frame_size or 1024
        for i in range(0, len(x), step):
            chunk = np.tile(x[i : i + step], (channels, 1))
            frame = av.AudioFrame.from_ndarray(chunk if fmt.endswith("p") else chunk.T.reshape(1, -1).copy(), format="fltp" if fmt.endswith("p") else "flt",
                                               layout="stereo" if channels == 2 else "mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("ext,codec,rate", FORMATS)
def test_containers_decode_to_the_same_signal(tmp_path, speech, ext, codec, rate):
    ref = decode_file(speech[0].path)
    path = tmp_path / f"clip.{ext}"
    encode(path, ref, codec, rate)
    got = decode_file(path)
    assert abs(len(got) - len(ref)) < 0.1 * 16000  # codec priming/padding only
    n = min(len(got), len(ref))
    lag = int(np.argmax(np.correlate(got[:16000 * 3], ref[:16000 * 3 - 2000], "valid")))  # codec delay
    a, b = got[lag : lag + n - 4000], ref[: n - 4000]
    m = min(len(a), len(b))
    assert np.corrcoef(a[:m], b[:m])[0, 1] > 0.95


def test_original_encodings_decode(speech):
    flac = decode_file(speech[0].path.parent / "original" / "jfk.flac")
    assert np.allclose(flac, decode_file(speech[0].path), atol=1e-3)
    mp3 = decode_file(speech[0].path.parent / "original" / "multilingual.mp3")
    assert 59 < len(mp3) / 16000 < 61


def test_pcm(speech):
    ref = decode_file(speech[0].path)
    s16 = (ref * 32767).astype("<i2").tobytes()
    assert np.allclose(decode_pcm(s16), ref, atol=1e-4)
    stereo48 = np.repeat(ref.astype("<f4"), 2).tobytes()  # two identical channels, 16 kHz
    assert np.allclose(decode_pcm(stereo48, "pcm_f32le", 16000, 2), ref, atol=1e-6)
    with pytest.raises(AudioError, match="whole number"):
        decode_pcm(b"\x00\x01\x02")
    with pytest.raises(AudioError, match="unsupported encoding"):
        decode_pcm(b"", "mulaw")


@pytest.mark.parametrize("content,msg", [(b"", "empty"), (b"this is not audio at all" * 50, "not a readable audio file"),
                                         (b"ID3\x03\x00\x00\x00" + b"\xff" * 100, "not a readable audio file|not an audio file")])
def test_bad_files(tmp_path, content, msg):
    path = tmp_path / "bad.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=msg):
        decode_file(path)
    with pytest.raises(AudioError, match="no such file"):
        decode_file(tmp_path / "missing.wav")


def test_truncated_mp3(tmp_path, speech):
    data = (speech[0].path.parent / "original" / "multilingual.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioError, match="not a readable audio file"):  # a cut upload is an error, not half a transcript
        decode_file(tmp_path / "cut.mp3")


@pytest.mark.parametrize("ext,codec,rate", [("mp3", "libmp3lame", 44100), ("webm", "libopus", 48000)])
def test_a_file_cut_at_a_frame_boundary_is_truncated_not_short(tmp_path, speech, ext, codec, rate):
    path = tmp_path / f"clip.{ext}"
    encode(path, decode_file(speech[0].path), codec, rate)
    data = path.read_bytes()
    with pytest.raises(AudioError, match="truncated: the file declares 11.0 s"):  # its header says how long it was
        decode_file(data[: len(data) // 2])


def test_decoding_stops_at_the_duration_limit(speech):
    from gateway.media import TooLong

    assert len(decode_file(speech[0].path, max_s=11.5)) == 11 * 16000
    with pytest.raises(TooLong, match="longer than the 5 s limit"):
        decode_file(speech[0].path, max_s=5)
    with pytest.raises(TooLong):
        decode_pcm(bytes(2 * 16000 * 6), max_s=5)
