"""Debian's nginx as an unprivileged process in front of test servers, configured from deploy/nginx.conf."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from tests.gateway.servers import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEMPLATE = DEPLOY / "nginx.conf"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")

# What the nginx image's nginx.conf provides around conf.d, with every path under our own prefix: no root needed.
MAIN = """worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    include livecaptions.conf;
}
"""


def render(template: str, values: dict[str, str]) -> str:
    """envsubst limited to `values`' names, as the nginx image's entrypoint does: nginx's $variables stay."""
    missing = set(PLACEHOLDER.findall(template)) - set(values)
    if missing:
        raise KeyError(f"no value for {', '.join(sorted(missing))}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class Nginx:
    """nginx in the foreground on a free port, proxying to `replicas` (host:port each) with deploy/nginx.conf."""

    def __init__(self, workdir: Path, replicas: list[str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        values = {"NGINX_PORT": str(self.port)} | {f"LIVECAPTIONS_REPLICA_{i}": r for i, r in enumerate(replicas, 1)}
        (workdir / "livecaptions.conf").write_text(render(TEMPLATE.read_text(), values))
        (workdir / "nginx.conf").write_text(MAIN)
        self.log_path = workdir / "nginx.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", ""))

    def _cmd(self, *extra: str) -> list[str]:
        binary = self.binary()
        assert binary is not None
        return [binary, "-p", f"{self.workdir}/", "-c", str(self.workdir / "nginx.conf"), "-e", "stderr", *extra]

    def check(self) -> None:
        """`nginx -t`: the rendered configuration is valid."""
        subprocess.run(self._cmd("-t"), check=True, capture_output=True)

    def start(self, timeout: float = 10) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self._cmd("-g", "daemon off;"), stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets/SSE would hold up a graceful one
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
