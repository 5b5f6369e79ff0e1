"""The layering the design fixes: importing any gateway module loads no torch (the engine is loaded only when a
server or command builds one); vad/ and engine/ never import gateway/; nothing that serves imports training/ (only
the CLI, the composition root, runs it); and the gateway reaches the engine only through the Engine's face, never
its runner."""
from __future__ import annotations

import pkgutil
import re
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
                 if "gateway" in imports(p)]
    assert offenders == []


def imports(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines() if line.lstrip().startswith(("import ", "from ")))


def test_nothing_that_serves_imports_training():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("engine", "vad", "gateway") for p in (ROOT / pkg).rglob("*.py")
                 if "training" in imports(p) and p != ROOT / "gateway" / "cli.py"]
    assert offenders == []


def test_the_gateway_uses_the_engine_through_its_face():
    """Model name, languages, token counts and batch size come from the Engine (engine/service.py), not its runner."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "gateway").rglob("*.py")
                 if re.search(r"engine\.runner\.\w", p.read_text())]
    assert offenders == []


def test_tests_and_benchmarks_share_support_not_each_other():
    """tests/ and bench/ both use support/; bench never imports tests, and only tests/bench (which tests the
    benchmarks) imports bench."""
    bench = [str(p.relative_to(ROOT)) for p in (ROOT / "bench").rglob("*.py") if re.search(r"\btests\b", imports(p))]
    tests = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
             if re.search(r"\bbench\b", imports(p)) and (ROOT / "tests" / "bench") not in p.parents]
    assert bench == [] and tests == []


def test_gateway_modules_import_no_circle():
    """ingest -> compat/deepgram -> compat/relay -> ingest was one: the live-stream plumbing is gateway/stream.py
    now, and the route picks the protocol. Imports inside functions count too."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
                deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("gateway")}
        graph[name] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def circle(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for m in sorted(graph) if (c := circle(m))]
    assert circles == [], circles[0]
