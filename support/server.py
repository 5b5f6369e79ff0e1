"""A real `livecaptions serve` process on a free port (CPU, int8, base model), for tests and benchmarks."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIVECAPTIONS = str(Path(sys.executable).parent / "livecaptions")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`livecaptions serve` on a free port, CPU int8 base model."""

    def __init__(self, log: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()  # a port again: the same server restarted, as clients see it
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([LIVECAPTIONS, "serve", "--port", str(self.port), "--model", "base", "--device", "cpu",
                                      "--compute-type", "int8", "--log-level", "warning", *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if get(self.http + "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextmanager
def serving(log: Path, *extra: str) -> Iterator[Server]:
    server = Server(log, *extra)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
