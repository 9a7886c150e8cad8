"""Serving the gateway: uvicorn in a thread beside gRPC, on a socket it can share (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from signoff.server.tls import TLSFiles

STARTUP_SECONDS = 20.0


def listen_socket(address: str, *, share_port: bool) -> socket.socket:
    """A bound socket on `address` ("host:port"; port 0 picks one). With `share_port`, the
    processes of `signoff serve --processes N` each bind the same port and the kernel spreads
    connections, as it does for gRPC; otherwise a second server on the port fails loudly."""
    host, _, port = address.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it. Without it, a response written in two parts (head,
        # then body) waits for the caller's delayed ACK: every answer took 40+ ms (measured).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if share_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare or "0.0.0.0", int(port)))  # noqa: S104 (an empty host means all)
    except (OSError, ValueError) as exc:
        sock.close()
        raise OSError(f"cannot listen on {address} (HTTP): {exc}") from None
    return sock


@dataclass
class RunningHttp:
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish within `grace` seconds, then close."""
        self.server.should_exit = True
        self.thread.join(grace + 1.0)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(2.0)


def start_http(
    app: ASGIApp,
    address: str,
    *,
    tls: TLSFiles | None = None,
    share_port: bool = False,
    grace: float = 5.0,
) -> RunningHttp:
    """Serve `app` on `address` in a daemon thread; returns once it accepts connections.
    Over TLS with `tls` (the same files as gRPC; with a client CA, every caller must present
    a certificate). Raises OSError when the address cannot be served."""
    sock = listen_socket(address, share_port=share_port)
    options: dict[str, object] = {}
    if tls is not None:
        options = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
        if tls.client_ca is not None:
            options |= {"ssl_ca_certs": str(tls.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(
        app,
        lifespan="off",
        # signoff's own log lines say what happened; uvicorn's access log would print every
        # path (and query) a caller sends.
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(grace),
        server_header=False,
        **options,  # type: ignore[arg-type]
    )
    # Run off the main thread, uvicorn leaves the signals to `signoff serve`.
    server = uvicorn.Server(config)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the starter below
            failed.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if failed or not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise OSError(f"the HTTP gateway did not start on {address}")
        time.sleep(0.01)
    return RunningHttp(server, thread, sock.getsockname()[1])
