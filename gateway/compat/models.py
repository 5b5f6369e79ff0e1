"""Model names clients of other vendors send, mapped to the one engine model this server runs.

People switch to us without changing client code, so the hosted APIs' model names are accepted as aliases of the
served model; any other name is an UnknownModel (a 400 at the API). The served model answers to its configured
name (`base`, `tiny.en`) and, when it is a folder, to the folder's name."""
from __future__ import annotations

from pathlib import PurePath

ALIASES = (
    "stepaudio-2.5-asr",  # StepFun SSE and realtime
    "step-asr-1.1-stream",  # StepFun's older streaming model name
    "stepaudio-2.5-asr-stream",  # what StepFun's realtime clients name the model
    "whisper-1",  # OpenAI transcriptions and translations
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
)


class UnknownModel(ValueError):
    """A model name this server does not serve; the message lists the ones it does."""


def served_names(model: str) -> list[str]:
    """The names the configured engine model answers to: its own (a folder's name first), then the aliases."""
    own = list(dict.fromkeys(n for n in (PurePath(model).name, model) if n))
    return own + [a for a in ALIASES if a not in own]


def resolve(name: str | None, model: str) -> str:
    """A client's model name -> the configured engine model `model`; None or "" means the served model."""
    if not name or name in served_names(model):
        return model
    raise UnknownModel(f"model {name!r} is not served here; use one of: {', '.join(served_names(model))}")
