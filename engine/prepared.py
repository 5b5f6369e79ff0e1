"""A model prepared for the CPU's int8 path, cached beside its checkpoint so later starts skip the work.

Reading a CTranslate2 checkpoint converts every weight to float32 and int8 quantisation then computes each row's
scale (base on a 2-core EPYC: 0.6 s and 0.4 s of a 2.7 s start). The prepared model's state (int8 weights and
scales, the float weights left) is saved once with the checkpoint's metadata to `.prepared-int8-*.pt` in the model
folder, and loaded memory-mapped on later starts. The name carries PREPARED_VERSION and the torch version, so a
change of either prepares afresh; a file that cannot be written (a read-only folder) or read is only skipped.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from engine.checkpoint import Checkpoint
from engine.model import ModelDimensions, Whisper
from engine.quant import quantize_int8

PREPARED_VERSION = 1  # bump when the int8 scheme (engine/quant.py) or the model's parameters change

log = logging.getLogger("livecaptions.engine")


def prepared_path(folder: Path) -> Path:
    return folder / f".prepared-int8-v{PREPARED_VERSION}-torch{torch.__version__}.pt"


def save(path: Path, model: Whisper, ckpt: Checkpoint) -> None:
    """Write the int8 model's state and the checkpoint's metadata, atomically; a failure is logged, not raised."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"dims": asdict(ckpt.dims), "suppress_ids": ckpt.suppress_ids,
                    "suppress_ids_begin": ckpt.suppress_ids_begin, "alignment_heads": ckpt.alignment_heads,
                    "state": model.state_dict()}, tmp)
        tmp.replace(path)
    except OSError as e:
        log.info("prepared model not cached (%s): the next start prepares it again", e)
        tmp.unlink(missing_ok=True)


def load(path: Path, build: Callable[[ModelDimensions], Whisper]) -> tuple[Whisper, Checkpoint] | None:
    """The prepared int8 model and its checkpoint's metadata (no weights), or None if there is none usable.
    `build(dims)` makes the float model skeleton (uninitialised)."""
    try:
        saved = torch.load(path, mmap=True, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as e:  # truncated, or from another torch: prepare again
        log.info("prepared model %s unusable (%s): preparing it again", path, e)
        return None
    dims = ModelDimensions(**saved["dims"])
    model = quantize_int8(build(dims), shells=True)
    model.load_state_dict(saved["state"], assign=True)
    heads = tuple(tuple(h) for h in saved["alignment_heads"])
    return model, Checkpoint(dims, {}, tuple(saved["suppress_ids"]), tuple(saved["suppress_ids_begin"]), heads)
