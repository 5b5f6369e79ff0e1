"""The README's examples, run as a user pastes them: every shell block marked `<!-- example ... -->` runs line by
line from the project root (those marked `server` against a real `livecaptions serve`, whose address replaces
127.0.0.1:8000), exits 0 without a traceback, and the block prints what the marker's `expect` says (a regex)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.gateway.servers import serving

ROOT = Path(__file__).resolve().parents[1]
MARKED = re.compile(r'<!-- example(?P<server>: server)?(?:,|:)?\s*(?:expect "(?P<expect>[^"]*)")? -->\n```bash\n'
                    r"(?P<body>.*?)```", re.S)
EXAMPLES = [(m["body"], bool(m["server"]), m["expect"] or "")
            for m in MARKED.finditer((ROOT / "README.md").read_text())]


def commands(body: str) -> list[str]:
    """Each command of a block: a line, with backslash continuations joined; comments and blank lines skipped."""
    return [c for c in body.replace("\\\n", " ").splitlines() if c.strip() and not c.lstrip().startswith("#")]


def test_the_readme_marks_its_examples():
    assert len(EXAMPLES) >= 4 and any(server for _, server, _ in EXAMPLES)
    assert all(".." not in body for body, _, _ in EXAMPLES)  # nothing outside the clone: no test data folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("readme") / "server.log") as s:
        yield s


@pytest.mark.parametrize("body, needs_server, expect", EXAMPLES, ids=[c[0].split("\n")[0][:50] for c in EXAMPLES])
def test_example_runs_as_pasted(body, needs_server, expect, request):
    address = request.getfixturevalue("server").http.split("//")[1] if needs_server else None
    printed = ""
    for command in commands(body):
        if address:
            command = command.replace("127.0.0.1:8000", address)
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        printed += done.stdout
    assert re.search(expect, printed), printed[-2000:]
