"""Installs Cerbos from the npm registry into bench/.tools and runs it on a policy directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

VERSION = "0.55.0"
PACKAGE = "@cerbos/cerbos-linux-x64"
TOOLS = Path(__file__).resolve().parent / ".tools"
SERVICE = "cerbos.svc.v1.CerbosService"


def install(tools: Path = TOOLS) -> Path:
    """The cerbos binary, installed with npm on first use; returns its path."""
    prefix = tools / f"cerbos-{VERSION}"
    binary = prefix / "node_modules" / PACKAGE / "cerbos-linux-x64"
    if not _version_ok(binary):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install Cerbos")
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-save",
                "--no-package-lock",
                "--no-audit",
                "--no-fund",
                f"{PACKAGE}@{VERSION}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not _version_ok(binary):
            raise RuntimeError(f"npm install {PACKAGE}@{VERSION} failed:\n{done.stderr}")
    return binary


def _version_ok(binary: Path) -> bool:
    if not binary.is_file():
        return False
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout.split()[:1] == [VERSION]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def compile_policies(binary: Path, policy_dir: Path) -> None:
    """Raises RuntimeError with Cerbos's report when the policies do not compile."""
    done = subprocess.run(
        [binary, "compile", "--skip-tests", str(policy_dir)],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cerbos compile {policy_dir} failed:\n{done.stdout}{done.stderr}")


def _env() -> dict[str, str]:
    return {**os.environ, "CERBOS_NO_TELEMETRY": "1"}


@dataclass
class Server:
    """A running `cerbos server`."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    workdir: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "cerbos.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(policy_dir: Path, binary: Path | None = None, timeout: float = 30.0) -> Server:
    """`cerbos server` on `policy_dir` (compiled first), gRPC and HTTP on free loopback ports."""
    binary = binary or install()
    compile_policies(binary, policy_dir)
    workdir = Path(tempfile.mkdtemp(prefix="cerbos-bench-"))
    grpc_port, http_port = free_port(), free_port()
    config = {
        "server": {
            "httpListenAddr": f"127.0.0.1:{http_port}",
            "grpcListenAddr": f"127.0.0.1:{grpc_port}",
        },
        "storage": {
            "driver": "disk",
            "disk": {"directory": str(policy_dir), "watchForChanges": False},
        },
        "audit": {"enabled": False},
        "telemetry": {"disabled": True},
    }
    config_file = workdir / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = (workdir / "cerbos.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "server",
            f"--config={config_file}",
            "--log-level=warn",
            f"--debug-listen-addr=127.0.0.1:{free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    log.close()
    server = Server(proc, grpc_port, http_port, workdir)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        print(server.log.read_text(errors="replace")[-4000:])
        server.stop()
        raise
    return server


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"cerbos server exited with {server.proc.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cerbos gRPC not ready on {server.target} in {timeout} s")
            time.sleep(0.1)


def main() -> None:
    """Install Cerbos and print where it is."""
    binary = install()
    print(f"cerbos {VERSION}: {binary}")


if __name__ == "__main__":
    main()
