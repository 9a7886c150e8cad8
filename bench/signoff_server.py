"""A `signoff serve` subprocess for benchmarks: its own Redis prefix, its port, a clean stop.

Apart from the Cerbos comparison so the benchmarks that need only signoff (and their quick
modes in the test suite) do not import what Cerbos and cedarpy need.
"""

from __future__ import annotations

import os
import select
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis

REPO = Path(__file__).resolve().parent.parent
HASH_KEY = "bench-secret-bench-secret-bench-secret-0123"


@dataclass
class ServedProcess:
    """A server subprocess a benchmark started (signoff, the echo floor): its port, a stop."""

    proc: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ready_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line `proc` prints within `timeout` s ("" when none, or when it exited)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@dataclass
class SignoffServer(ServedProcess):
    """A running `signoff serve` with its own Redis key prefix."""

    prefix: str
    redis_url: str

    def stop(self) -> None:
        """Stop the server and delete every Redis key under its prefix."""
        super().stop()
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


def start_signoff(
    rules: Path,
    audit: bool = True,
    *extra: str,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> SignoffServer:
    """`signoff serve` on `rules` with `extra` options, on a free loopback port; waits for its
    ready line. `env` overrides its environment (e.g. OTEL_TRACES_EXPORTER)."""
    prefix = f"signoff:bench:{uuid.uuid4().hex[:12]}:"
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    variables = {
        **os.environ,
        "SIGNOFF_HASH_KEY": HASH_KEY,
        "SIGNOFF_REDIS_PREFIX": prefix,
        "SIGNOFF_JWKS": "",
        "SIGNOFF_LOG_LEVEL": "WARNING",
        "SIGNOFF_AUDIT": "on" if audit else "off",
        # The gRPC service is what is measured; its HTTP gateway would take port 8080, which
        # another server on the machine may hold.
        "SIGNOFF_HTTP_ADDRESS": "off",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-m",
            "signoff.cli",
            "serve",
            "--address",
            "127.0.0.1:0",
            "--rules",
            str(rules),
            *extra,
        ],
        env=variables,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    server = SignoffServer(proc, 0, prefix, redis_url)
    line = ready_line(proc, timeout)
    if not line.startswith("signoff listening on "):
        server.stop()
        raise RuntimeError(f"signoff serve did not start in {timeout} s: {line!r}")
    server.port = int(line.split()[3].rsplit(":", 1)[1])
    return server
