"""Checkpoints -> (ModelDimensions, state dict of engine/model.py): CTranslate2 `model.bin` and Hugging Face folders.

CTranslate2 binary format (version 6, as ctranslate2/specs/model_spec.py writes it), little endian:
    u32 version | str spec name | u32 spec revision | u32 n_variables
    n_variables x (str name | u8 rank | u32 dims[rank] | u8 dtype id | u32 n_bytes | bytes)
    u32 n_aliases | n_aliases x (str alias | str target)
where str = u16 length (including a trailing NUL) + UTF-8 bytes + NUL.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.model import ModelDimensions

CT2_VERSION = 6
CT2_DTYPES = [torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16]  # by type id


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: the message says which file and why."""


@dataclass(frozen=True)
class Checkpoint:
    dims: ModelDimensions
    state: dict[str, torch.Tensor] = field(repr=False)
    suppress_ids: tuple[int, ...] = ()  # never generated (non-speech symbols, task tokens)
    suppress_ids_begin: tuple[int, ...] = ()  # not generated as the first token (blank, end of text)
    alignment_heads: tuple[tuple[int, int], ...] = ()  # (decoder layer, head) whose attention follows the speech


def read_ct2_variables(path: Path) -> dict[str, torch.Tensor]:
    """Every variable of a CTranslate2 model.bin, aliases resolved, int8 weights dequantised."""
    data = memoryview(Path(path).read_bytes())
    off = 0

    def take(fmt: str):
        nonlocal off
        vals = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def text() -> str:
        nonlocal off
        n = take("H")
        s = bytes(data[off : off + n - 1]).decode()
        off += n
        return s

    try:
        version = take("I")
        if version != CT2_VERSION:
            raise CheckpointError(f"{path}: CTranslate2 binary version {version}, this reader supports {CT2_VERSION}")
        spec, _revision = text(), take("I")
        if spec != "WhisperSpec":
            raise CheckpointError(f"{path}: a {spec!r} model, not a Whisper model")
        variables: dict[str, torch.Tensor] = {}
        for _ in range(take("I")):
            name, rank = text(), take("B")
            shape = [take("I") for _ in range(rank)]
            dtype, n_bytes = CT2_DTYPES[take("B")], take("I")
            raw = data[off : off + n_bytes]
            off += n_bytes
            variables[name] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape) if n_bytes else torch.empty(shape, dtype=dtype)
        for _ in range(take("I")):
            alias, target = text(), text()
            variables[alias] = variables[target]
    except (struct.error, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt CTranslate2 model file ({e})") from e
    for name in [n for n in variables if n.endswith("weight") and n + "_scale" in variables]:
        w, scale = variables[name], variables[name + "_scale"].float()
        if w.dtype == torch.int8:  # CTranslate2 int8: w_q = round(w * scale), one scale per output row
            variables[name] = w.float() / scale.reshape(-1, *([1] * (w.dim() - 1)))
    return variables


def _block_map(src: str, dst: str, cross: bool) -> dict[str, str]:
    """Our block parameter names -> CTranslate2 names (LayerNorm gamma/beta are weight/bias)."""
    m = {"attn_ln": "self_attention/layer_norm", "qkv": "self_attention/linear_0", "attn_out": "self_attention/linear_1",
         "mlp_ln": "ffn/layer_norm", "mlp.0": "ffn/linear_0", "mlp.2": "ffn/linear_1"}
    if cross:
        m |= {"cross_ln": "attention/layer_norm", "cross_q": "attention/linear_0", "cross_kv": "attention/linear_1",
              "cross_out": "attention/linear_2"}
    out = {}
    for ours, theirs in m.items():
        w, b = ("gamma", "beta") if theirs.endswith("layer_norm") else ("weight", "bias")
        out[f"{dst}.{ours}.weight"] = f"{src}/{theirs}/{w}"
        out[f"{dst}.{ours}.bias"] = f"{src}/{theirs}/{b}"
    return out


def ct2_names(n_enc: int, n_dec: int) -> dict[str, str]:
    """Our parameter names -> CTranslate2 WhisperSpec variable names."""
    names = {"encoder.conv1.weight": "encoder/conv1/weight", "encoder.conv1.bias": "encoder/conv1/bias",
             "encoder.conv2.weight": "encoder/conv2/weight", "encoder.conv2.bias": "encoder/conv2/bias",
             "encoder.positional_embedding": "encoder/position_encodings/encodings",
             "encoder.ln_post.weight": "encoder/layer_norm/gamma", "encoder.ln_post.bias": "encoder/layer_norm/beta",
             "decoder.token_embedding.weight": "decoder/embeddings/weight",
             "decoder.positional_embedding": "decoder/position_encodings/encodings",
             "decoder.ln.weight": "decoder/layer_norm/gamma", "decoder.ln.bias": "decoder/layer_norm/beta"}
    for i in range(n_enc):
        names |= _block_map(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    for i in range(n_dec):
        names |= _block_map(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    return names


def load_ct2(model_dir: Path) -> Checkpoint:
    """A CTranslate2 Whisper folder: model.bin + config.json (suppress lists)."""
    model_dir = Path(model_dir)
    v = read_ct2_variables(model_dir / "model.bin")
    n_enc = sum(1 for n in v if n.startswith("encoder/layer_") and n.endswith("ffn/linear_0/weight"))
    n_dec = sum(1 for n in v if n.startswith("decoder/layer_") and n.endswith("ffn/linear_0/weight"))
    names = ct2_names(n_enc, n_dec)
    missing = [t for t in names.values() if t not in v]
    if missing:
        raise CheckpointError(f"{model_dir}/model.bin lacks Whisper variables, e.g. {missing[:3]}")
    state = {ours: v[theirs].float() for ours, theirs in names.items()}
    emb, conv1 = state["decoder.token_embedding.weight"], state["encoder.conv1.weight"]
    dims = ModelDimensions(
        n_mels=conv1.shape[1], n_audio_ctx=state["encoder.positional_embedding"].shape[0], n_audio_state=conv1.shape[0],
        n_audio_head=int(v["encoder/num_heads"]), n_audio_layer=n_enc, n_vocab=emb.shape[0],
        n_text_ctx=state["decoder.positional_embedding"].shape[0], n_text_state=emb.shape[1],
        n_text_head=int(v["decoder/num_heads"]), n_text_layer=n_dec)
    config = _read_json(model_dir / "config.json")
    return Checkpoint(dims, state, tuple(config.get("suppress_ids", ())), tuple(config.get("suppress_ids_begin", ())),
                      tuple((int(layer), int(head)) for layer, head in config.get("alignment_heads", ())))


def hf_names(n_enc: int, n_dec: int) -> dict[str, list[str | None]]:
    """Our parameter names -> the Hugging Face Whisper tensors concatenated (dim 0) to make them.
    None stands for a bias Whisper does not have (the key projection's): zeros."""
    m: dict[str, list[str | None]] = {
        "encoder.conv1.weight": ["model.encoder.conv1.weight"], "encoder.conv1.bias": ["model.encoder.conv1.bias"],
        "encoder.conv2.weight": ["model.encoder.conv2.weight"], "encoder.conv2.bias": ["model.encoder.conv2.bias"],
        "encoder.positional_embedding": ["model.encoder.embed_positions.weight"],
        "encoder.ln_post.weight": ["model.encoder.layer_norm.weight"], "encoder.ln_post.bias": ["model.encoder.layer_norm.bias"],
        "decoder.token_embedding.weight": ["model.decoder.embed_tokens.weight"],
        "decoder.positional_embedding": ["model.decoder.embed_positions.weight"],
        "decoder.ln.weight": ["model.decoder.layer_norm.weight"], "decoder.ln.bias": ["model.decoder.layer_norm.bias"]}
    for side, n, cross in (("encoder", n_enc, False), ("decoder", n_dec, True)):
        for i in range(n):
            ours, hf = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
            parts = {"attn_ln": ["self_attn_layer_norm"], "qkv": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                     "attn_out": ["self_attn.out_proj"], "mlp_ln": ["final_layer_norm"], "mlp.0": ["fc1"], "mlp.2": ["fc2"]}
            if cross:
                parts |= {"cross_ln": ["encoder_attn_layer_norm"], "cross_q": ["encoder_attn.q_proj"],
                          "cross_kv": ["encoder_attn.k_proj", "encoder_attn.v_proj"], "cross_out": ["encoder_attn.out_proj"]}
            for name, srcs in parts.items():
                m[f"{ours}.{name}.weight"] = [f"{hf}.{s}.weight" for s in srcs]
                m[f"{ours}.{name}.bias"] = [None if s.endswith("k_proj") else f"{hf}.{s}.bias" for s in srcs]
    return m


def load_hf(model_dir: Path) -> Checkpoint:
    """A Hugging Face Whisper folder: config.json + model.safetensors (+ generation_config.json)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    cfg = _read_json(model_dir / "config.json")
    gen = _read_json(model_dir / "generation_config.json") if (model_dir / "generation_config.json").exists() else {}
    try:
        dims = ModelDimensions(
            n_mels=cfg["num_mel_bins"], n_audio_ctx=cfg["max_source_positions"], n_audio_state=cfg["d_model"],
            n_audio_head=cfg["encoder_attention_heads"], n_audio_layer=cfg["encoder_layers"], n_vocab=cfg["vocab_size"],
            n_text_ctx=cfg["max_target_positions"], n_text_state=cfg["d_model"],
            n_text_head=cfg["decoder_attention_heads"], n_text_layer=cfg["decoder_layers"])
    except KeyError as e:
        raise CheckpointError(f"{model_dir}/config.json lacks {e}: not a Whisper config") from e
    tensors = load_file(str(model_dir / "model.safetensors"))
    state = {}
    for ours, srcs in hf_names(dims.n_audio_layer, dims.n_text_layer).items():
        present = [tensors[s] for s in srcs if s is not None and s in tensors]
        if len(present) != sum(s is not None for s in srcs):
            raise CheckpointError(f"{model_dir}/model.safetensors lacks {[s for s in srcs if s and s not in tensors][:2]}")
        like = present[0]
        state[ours] = torch.cat([tensors[s] if s else torch.zeros_like(like) for s in srcs]).float()
    pick = lambda key: tuple(gen.get(key) or cfg.get(key) or ())  # noqa: E731
    return Checkpoint(dims, state, pick("suppress_tokens"), pick("begin_suppress_tokens"))


def load_checkpoint(model_dir: Path) -> Checkpoint:
    model_dir = Path(model_dir)
    if (model_dir / "model.bin").exists():
        return load_ct2(model_dir)
    if (model_dir / "model.safetensors").exists():
        return load_hf(model_dir)
    raise CheckpointError(f"{model_dir}: neither a CTranslate2 model (model.bin) nor a Hugging Face one (model.safetensors)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
