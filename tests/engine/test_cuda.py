"""The CUDA path: float32 on the GPU picks the same greedy tokens as float32 on the CPU (same weights, same
features, batched), and float16/bfloat16 run. Skipped where no CUDA device is present (the CI machines have none;
it ran on an H100 with random weights of Whisper base's shapes: tokens identical)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.checkpoint import hf_names, load_checkpoint
from engine.messages import DecodeOptions
from engine.model import ModelDimensions, Whisper
from engine.models import resolve

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (GPU-only test)")


def test_cuda_float32_matches_cpu(tmp_path):
    from safetensors.torch import save_file

    from engine.runner import ModelRunner
    from engine.messages import EngineConfig

    d = ModelDimensions(80, 1500, 256, 4, 2, 51865, 448, 256, 4, 2)
    torch.manual_seed(0)
    model = Whisper(d)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    state = model.state_dict()
    tensors = {name: part.contiguous() for ours, srcs in hf_names(2, 2).items()
               for name, part in zip(srcs, state[ours].chunk(len(srcs))) if name}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    base = load_checkpoint(resolve("base"))
    (tmp_path / "config.json").write_text(json.dumps({
        "num_mel_bins": 80, "max_source_positions": 1500, "d_model": 256, "encoder_attention_heads": 4, "encoder_layers": 2,
        "vocab_size": 51865, "max_target_positions": 448, "decoder_attention_heads": 4, "decoder_layers": 2,
        "suppress_tokens": list(base.suppress_ids), "begin_suppress_tokens": list(base.suppress_ids_begin)}))
    shutil.copyfile(resolve("base") / "tokenizer.json", tmp_path / "tokenizer.json")
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(16000 * s)).astype(np.float32) for s in (3, 5, 8, 13)]
    opts = DecodeOptions(language="en", max_new_tokens=40, repeat_tokens=0, compression_ratio_threshold=float("inf"))
    cpu = ModelRunner(EngineConfig(model=str(tmp_path), device="cpu", compute_type="float32"))
    gpu = ModelRunner(EngineConfig(model=str(tmp_path), device="cuda", compute_type="float32"))
    assert [t.result.tokens for t in gpu.transcribe(audios, opts)] == [t.result.tokens for t in cpu.transcribe(audios, opts)]
    for ct in ("float16", "bfloat16"):
        half = ModelRunner(EngineConfig(model=str(tmp_path), device="cuda", compute_type=ct))
        assert all(len(t.result.tokens) > 0 for t in half.transcribe(audios, opts))
