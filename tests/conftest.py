"""Fixtures shared by every test package: the reference speech and engine runners (loaded once per session)."""
from __future__ import annotations

import numpy as np
import pytest

from support.speech import Clip, clips


@pytest.fixture(scope="session")
def speech() -> list[Clip]:
    return clips()


@pytest.fixture(scope="session")
def runners():
    """get(model, compute_type, audio_attention) -> a CPU ModelRunner, built once per configuration for the whole
    session."""
    from engine.runner import ModelRunner
    from engine.messages import EngineConfig

    cache: dict[tuple, ModelRunner] = {}

    def get(model: str = "base", compute_type: str = "int8", audio_attention: str = "auto") -> ModelRunner:
        key = model, compute_type, audio_attention
        if key not in cache:
            cache[key] = ModelRunner(EngineConfig(model=model, compute_type=compute_type, device="cpu",
                                                  audio_attention=audio_attention))
        return cache[key]

    return get


def load_clip(clip: Clip) -> np.ndarray:
    from gateway.media import decode_file

    return decode_file(clip.path)
