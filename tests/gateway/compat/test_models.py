"""The model names the README promises are the ones the server answers to (gateway/compat/models.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.compat.models import ALIASES, UnknownModel, resolve, served_names

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_alias_and_each_resolves_to_the_served_model():
    listed = re.search(r"Model names: (.+?) all mean the served model", README.read_text(), re.S)
    assert listed is not None
    names = re.findall(r"`([^`]+)`", listed.group(1))
    assert set(ALIASES) <= set(names) and set(names) - set(ALIASES) == {"base"}
    assert all(resolve(name, "base") == "base" for name in names) and served_names("base")[0] == "base"
    with pytest.raises(UnknownModel, match="use one of"):
        resolve("nova-3", "base")
