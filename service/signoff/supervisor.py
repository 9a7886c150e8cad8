"""`signoff serve --processes N`: N serving processes sharing one address, and their parent.

Python runs one thread at a time per process, so a single process uses about one core however
many worker threads it has. The parent starts N `signoff serve` children that each listen on
the same address with SO_REUSEPORT, and the kernel spreads connections over them. The parent
holds no gRPC, Redis or OpenTelemetry objects: children are started as fresh interpreters, not
forked from a process holding gRPC state, which gRPC does not survive.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

log = logging.getLogger("signoff.supervisor")
READY_TIMEOUT = 120.0
STOP_GRACE = 10.0


def _reserve(address: str) -> tuple[socket.socket, str]:
    """Bind (not listen) to `address` with SO_REUSEPORT, resolving port 0 to a free port.

    The socket stays bound until the children listen, so no other program can take the port
    in between; a bound socket that does not listen receives no connections.
    """
    host, _, port = address.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((bare or "0.0.0.0", int(port)))  # noqa: S104 (an empty host means all)
    except (OSError, ValueError) as exc:
        sock.close()
        raise OSError(f"cannot listen on {address}: {exc}") from None
    return sock, f"{host}:{sock.getsockname()[1]}"


def supervise(
    address: str,
    child_env: Mapping[str, str],
    processes: int,
    own: Sequence[Mapping[str, str]] = (),
) -> int:
    """Run `processes` serving children until SIGTERM/SIGINT or until one of them exits.
    `child_env` is each child's environment: the parent's resolved options, as variables;
    `own[i]`, when given, adds what child i alone gets (e.g. its metrics port)."""
    try:
        reservation, address = _reserve(address)
    except OSError as exc:
        print(f"signoff: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[subprocess.Popen[str]] = []

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        for child in children:  # each reloads its own bundle from the same files
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    # Ignored until every child is ready: an ignored signal stays ignored across exec, so a
    # SIGHUP during start-up cannot kill a child before it installs its own handler.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    env = {**child_env, "SIGNOFF_ADDRESS": address}
    children += [
        subprocess.Popen(
            [sys.executable, "-m", "signoff.cli", "serve"],
            env={**env, **(own[i] if i < len(own) else {})},
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        ready = [_ready_line(child) for child in children]
        if not all(ready):
            failed = next(c for c, line in zip(children, ready, strict=True) if not line)
            return _stop_all(children, failed.poll() or 1)
        reservation.close()
        print(f"{ready[0].rstrip()}; {processes} processes", flush=True)
        for child in children:
            # Anything a child prints later (e.g. a console span exporter) must not fill its
            # pipe, or its writes would block the threads serving requests.
            threading.Thread(target=_relay, args=(child,), daemon=True).start()
        signal.signal(signal.SIGHUP, on_hangup)
        while not stop.wait(0.5):
            for child in children:
                code = child.poll()
                if code is not None:
                    log.error("serving process %d exited with %d; stopping", child.pid, code)
                    return _stop_all(children, code or 1)
        return _stop_all(children, 0)
    finally:
        reservation.close()


def _relay(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()


def _ready_line(child: subprocess.Popen[str]) -> str:
    """The child's ready line, or "" if it exited or stayed silent for READY_TIMEOUT."""
    assert child.stdout is not None
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(child.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(READY_TIMEOUT)
    line = found[0] if found else ""
    return line if line.startswith("signoff listening on ") else ""


def _stop_all(children: list[subprocess.Popen[str]], code: int) -> int:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.0, deadline - time.monotonic()))
        if child.poll() is None:
            log.error(
                "serving process %d did not stop within %.0f s; killing it", child.pid, STOP_GRACE
            )
            child.kill()
            child.wait()
    return code
