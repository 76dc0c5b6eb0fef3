"""Start ``threadstore serve --transport http`` as a real subprocess on a free loopback port, for
the security and load tests; stopped (SIGTERM, then SIGKILL) when the context exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from threadstore.testing import free_port


@dataclass
class HttpServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextmanager
def http_server(
    url: str, *, env: dict[str, str] | None = None, extra: list[str] | None = None
) -> Iterator[HttpServer]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="threadstore-http-", suffix=".log")[1])
    full_env = {**os.environ, "THREADSTORE_FALLBACK": "fail", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "threadstore.cli", "--url", url, "serve",
             "--transport", "http", "--port", str(port), "--log-level", "WARNING", *(extra or [])],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
        )  # fmt: skip
    server = HttpServer(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}): {server.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not listen: {server.output()}") from None
                time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.unlink(missing_ok=True)
