"""MTP benchmark: greedy vs MTP drafts vs previous-hypothesis drafts vs CTranslate2 greedy, per bundled model.

    .venv/bin/python -m bench.mtp [--model base|tiny.en|all] [--compute-type int8] [--mtp-heads FILE] [--json]

On every clip of ../shared/speech (real speech, never used in training; tiny.en: English clips), one clip at a
time, language given. Decode time is the decoder phase alone (features, encoder and the audio head's guess
excluded); end-to-end RTF is all of it over audio seconds. Previous-hypothesis drafts are measured on simulated partials:
each clip's audio grows by 0.5 s and each partial is decoded with the tokens of the partial before it as drafts.
The CTranslate2 line decodes the same weights at int8 (its greedy generate, 30 s window: its only mode).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.machine import describe
from support.speech import clips
from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
from engine.messages import DecodeOptions
from engine.runner import ModelRunner
from engine.messages import EngineConfig
from gateway.media import decode_file
from gateway.offline import split

PARTIAL_STEP_S = 0.5


@dataclass
class Row:
    name: str
    segments: int = 0
    forwards: int = 0
    tokens: int = 0
    decode_s: float = 0.0
    total_s: float = 0.0
    audio_s: float = 0.0

    def line(self, base: "Row", peer: "Row | None") -> str:
        acc = self.tokens / max(self.forwards, 1)
        rtf = self.total_s / max(self.audio_s, 1e-9)
        vs_greedy = base.decode_s / max(self.decode_s, 1e-9)
        vs_peer = f"{peer.total_s / self.total_s:6.2f}x" if peer and self.total_s else "     -"
        ms = 1000 * self.total_s / max(self.segments, 1)
        return (f"{self.name:<28} {self.segments:>5} {self.forwards:>8} {self.tokens:>7} {acc:>8.2f} {1000 * self.decode_s:>9.0f}"
                f" {vs_greedy:>7.2f}x {rtf:>7.4f} {ms:>8.0f} {vs_peer:>8}")


def segments_of(model: str) -> list[tuple[np.ndarray, str]]:
    out = []
    for c in clips():
        if model.endswith(".en") and c.language != "en":
            continue
        audio = decode_file(c.path)
        out += [(audio[s:e], c.language) for s, e in split(audio)]
    return out


def run_ours(runner: ModelRunner, segs, name: str, drafts: str | None, partials: bool = False) -> Row:
    row = Row(name)
    for audio, lang in segs:
        ends = np.arange(PARTIAL_STEP_S, len(audio) / 16000 + 1e-9, PARTIAL_STEP_S) if partials else [len(audio) / 16000]
        previous: tuple[int, ...] = ()
        for end in ends:
            piece = audio[: int(end * 16000)]
            if len(piece) < 1600:
                continue
            opts = DecodeOptions(language=lang, drafts=drafts, previous=previous)
            t0 = time.perf_counter()
            with torch.inference_mode():
                cross, guesses = runner.cross([piece], runner.config.encoder, [opts])  # the audio head's guess too
                t1 = time.perf_counter()
                res = runner.decoder.decode(cross, [opts], guesses)[0]
            t2 = time.perf_counter()
            previous = res.tokens
            row.segments += 1
            row.forwards += res.forwards
            row.tokens += res.emitted
            row.decode_s += t2 - t1
            row.total_s += t2 - t0
            row.audio_s += len(piece) / 16000
    return row


def run_ct2(model: str, runner: ModelRunner, segs) -> Row | None:
    try:
        import ctranslate2
    except ImportError:
        return None
    from engine.models import resolve

    peer = ctranslate2.models.Whisper(str(resolve(model)), device="cpu", compute_type="int8", intra_threads=torch.get_num_threads())
    tok = runner.tokenizer
    row = Row("CTranslate2 int8 greedy")
    for i, (audio, lang) in enumerate([segs[0]] + segs):  # the first is a warm-up
        t0 = time.perf_counter()
        mel = log_mel_spectrogram(audio[:N_SAMPLES], runner.model.dims.n_mels, N_SAMPLES)[:, :N_FRAMES]
        res = peer.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy())),
                            [[tok.sot, *tok.sot_sequence(lang)]], beam_size=1, max_length=448)[0]
        if i:
            row.segments += 1
            row.tokens += len(res.sequences_ids[0]) + 1
            row.total_s += time.perf_counter() - t0
            row.audio_s += len(audio) / 16000
    row.forwards = row.tokens  # one token per decoder step
    row.decode_s = float("nan")
    return row


def bench(model: str, compute_type: str, as_json: bool, heads: str | None = None) -> None:
    runner = ModelRunner(EngineConfig(model=model, compute_type=compute_type, device="cpu", mtp_heads=heads))
    segs = segments_of(model)
    run_ours(runner, segs[:1], "warm-up", "mtp")
    rows = [run_ours(runner, segs, f"greedy ({compute_type})", None)]
    if runner.audio_head is not None:
        rows.append(run_ours(runner, segs, f"MTP audio head ({compute_type})", "mtp"))
    elif runner.decoder.mtp is not None:
        rows.append(run_ours(runner, segs, f"MTP K={runner.decoder.mtp.n_drafts} ({compute_type})", "mtp"))
    partial_greedy = run_ours(runner, segs, "partials, greedy", None, partials=True)
    partial_prev = run_ours(runner, segs, "partials, previous drafts", "previous", partials=True)
    peer = run_ct2(model, runner, segs)
    heads = runner.heads_path.name if runner.heads_path else "none"
    print(f"\n## {model}: {len(segs)} segments, {sum(len(a) for a, _ in segs) / 16000:.1f} s of audio; heads: {heads}")
    print(f"{'configuration':<28} {'segs':>5} {'forwards':>8} {'tokens':>7} {'tok/fwd':>8} {'decode ms':>9} {'vs greedy':>8}"
          f" {'RTF':>7} {'ms/seg':>8} {'vs CT2':>8}")
    for r in rows + ([peer] if peer else []):
        print(r.line(rows[0], peer))
    print(partial_greedy.line(partial_greedy, None))
    print(partial_prev.line(partial_greedy, None))
    if as_json:
        for r in rows + [partial_greedy, partial_prev] + ([peer] if peer else []):
            print(json.dumps({"model": model, **vars(r)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="all", help="base, tiny.en or all")
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mtp-heads", default=None, help="heads file (default: the model's shipped heads, if any)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# bench.mtp on {describe()}, {torch.get_num_threads()} threads")
    for model in (["base", "tiny.en"] if a.model == "all" else [a.model]):
        bench(model, a.compute_type, a.json, a.mtp_heads)


if __name__ == "__main__":
    main()
