"""Checkpoint readers: a CTranslate2 model.bin written by CTranslate2's own spec writer, and a Hugging Face folder
made from the bundled weights. Both must give the model the same tensors and the same tokens."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
from engine.checkpoint import CheckpointError, ct2_names, hf_names, load_checkpoint, read_ct2_variables
from engine.decoding import GreedyDecoder
from engine.messages import DecodeOptions
from engine.model import ModelDimensions, Whisper
from engine.models import resolve
from engine.tokenizer import Tokenizer
from tests.conftest import load_clip

ctranslate2 = pytest.importorskip("ctranslate2")
TINY = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2, n_vocab=51865,
                       n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)


def write_ct2(folder, model: Whisper, quantization: str | None) -> None:
    """Save `model` with CTranslate2's WhisperSpec writer, vocabulary and config from the bundled base model."""
    from ctranslate2.specs import whisper_spec

    spec = whisper_spec.WhisperSpec(2, 4, 2, 4)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    for ours, theirs in ct2_names(2, 2).items():
        *path, leaf = theirs.split("/")
        node = spec
        for part in path:
            head, _, idx = part.rpartition("_")  # "layer_0" is spec.layer[0] unless the spec names it linear_0
            node = getattr(node, part) if hasattr(node, part) else getattr(node, head)[int(idx)]
        setattr(node, leaf, state[ours])
    spec.decoder.projection.weight = state["decoder.token_embedding.weight"]
    base = resolve("base")
    vocab = json.loads((base / "vocabulary.json").read_text())
    spec.register_vocabulary(vocab)
    cfg = json.loads((base / "config.json").read_text())
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids", "alignment_heads"):
        setattr(spec.config, key, cfg[key])
    spec.validate()
    if quantization:
        spec.optimize(quantization=quantization)
    spec.save(str(folder))
    shutil.copyfile(base / "tokenizer.json", folder / "tokenizer.json")


@pytest.fixture(scope="module")
def random_model() -> Whisper:
    torch.manual_seed(0)
    model = Whisper(TINY)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


@pytest.mark.parametrize("quantization,tol", [(None, 0.0), ("float16", 1e-3), ("int8", 0.05)])
def test_reads_what_ctranslate2_writes(tmp_path, random_model, quantization, tol):
    write_ct2(tmp_path, random_model, quantization)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.dims == TINY
    for name, tensor in random_model.state_dict().items():
        if name == "decoder.unembed.weight":
            continue
        got = ckpt.state[name]
        assert got.shape == tensor.shape, name
        assert torch.allclose(got, tensor, atol=tol * tensor.abs().max().item() + 1e-7), name


def test_random_model_decodes_like_ctranslate2(tmp_path, random_model, speech):
    """Same file, same features: CTranslate2 and our model pick the same greedy tokens (no loop guard on either)."""
    write_ct2(tmp_path, random_model, None)
    ckpt = load_checkpoint(tmp_path)
    model = Whisper(ckpt.dims)
    model.load_state_dict(ckpt.state, strict=False)
    model.eval()
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json", multilingual=True)
    decoder = GreedyDecoder(model, tok, ckpt.suppress_ids, ckpt.suppress_ids_begin)
    peer = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32")
    for clip in speech[:3]:
        mel = log_mel_spectrogram(load_clip(clip)[:N_SAMPLES], 80, N_SAMPLES)[:, :N_FRAMES]
        with torch.inference_mode():
            audio, mask = model.encoder(mel[None])
            ours = decoder.decode(model.decoder.cross_kv(audio, mask), [DecodeOptions(language="en", max_new_tokens=20, repeat_tokens=0,
                                                                                        compression_ratio_threshold=float("inf"))])[0]
        theirs = peer.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None].numpy())),
                               [[tok.sot, *tok.sot_sequence("en")]], beam_size=1, max_length=40)[0].sequences_ids[0]
        assert list(ours.tokens) == theirs


def test_hugging_face_folder_gives_the_same_tokens(tmp_path, runners, speech):
    from safetensors.torch import save_file

    base = resolve("base")
    ckpt = load_checkpoint(base)
    d = ckpt.dims
    tensors = {}
    for ours, srcs in hf_names(d.n_audio_layer, d.n_text_layer).items():
        for name, part in zip(srcs, ckpt.state[ours].chunk(len(srcs))):
            if name is not None:
                tensors[name] = part.half().contiguous()  # HF checkpoints ship in float16 too
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"].clone()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "whisper", "num_mel_bins": d.n_mels, "max_source_positions": d.n_audio_ctx, "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head, "encoder_layers": d.n_audio_layer, "vocab_size": d.n_vocab,
        "max_target_positions": d.n_text_ctx, "decoder_attention_heads": d.n_text_head, "decoder_layers": d.n_text_layer,
        "suppress_tokens": list(ckpt.suppress_ids), "begin_suppress_tokens": list(ckpt.suppress_ids_begin)}))
    shutil.copyfile(base / "tokenizer.json", tmp_path / "tokenizer.json")

    from engine.runner import ModelRunner
    from engine.messages import EngineConfig

    hf = ModelRunner(EngineConfig(model=str(tmp_path), compute_type="float32", device="cpu"))
    ct2 = runners("base", "float32")
    audios = [load_clip(c) for c in speech[:4]]
    opts = [DecodeOptions(language=c.language) for c in speech[:4]]
    assert [t.result.tokens for t in hf.transcribe(audios, opts)] == [t.result.tokens for t in ct2.transcribe(audios, opts)]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_ct2_variables(tmp_path / "model.bin")
    (tmp_path / "model.bin").write_bytes(b"\x03\x00\x00\x00")
    with pytest.raises(CheckpointError, match="version 3"):
        read_ct2_variables(tmp_path / "model.bin")
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint(tmp_path / "nowhere")


def test_the_int8_model_is_prepared_once_and_decodes_the_same(tmp_path, speech):
    """The first start quantises and caches the prepared model beside the checkpoint; the next loads it and gives
    the same tokens and word times; a damaged cache file is prepared again, never an error."""
    from engine.messages import EngineConfig
    from engine.prepared import prepared_path
    from engine.runner import ModelRunner

    folder = tmp_path / "base"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (folder / name).symlink_to(resolve("base") / name)
    jfk = load_clip(next(c for c in speech if c.path.name == "jfk.wav"))
    options = DecodeOptions(language="en", word_timestamps=True)

    def decode() -> tuple:
        r = ModelRunner(EngineConfig(model=str(folder), device="cpu")).transcribe([jfk], options)[0].result
        return r.tokens, [(w.word, w.start, w.end) for w in r.words]

    fresh = decode()
    assert prepared_path(folder).stat().st_size > 0
    assert decode() == fresh  # from the prepared file
    prepared_path(folder).write_bytes(b"not a torch file")
    assert decode() == fresh and prepared_path(folder).stat().st_size > 1000  # prepared again
