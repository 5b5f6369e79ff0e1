"""The layering the design fixes: importing any gateway module loads no torch (the engine is loaded only when a
server or command builds one), and vad/ and engine/ never import gateway/."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_imports_no_torch():
    import gateway

    names = [m.name for m in pkgutil.walk_packages(gateway.__path__, "gateway.")]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)
    code += "print(sorted(m for m in ('torch', 'engine.runner', 'engine.service') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", f"importing {len(names)} gateway modules loaded {out.strip()}"


def test_engine_and_vad_never_import_gateway():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("engine", "vad") for p in (ROOT / pkg).rglob("*.py")
                 if "gateway" in "".join(l for l in p.read_text().splitlines() if l.lstrip().startswith(("import ", "from ")))]
    assert offenders == []
