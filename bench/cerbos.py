"""Installs Cerbos from the npm registry into bench/.tools and runs it on a policy directory.

    python -m bench.cerbos            # install, then check every workload case on Cerbos
    python -m bench.cerbos --quick    # install (cached after the first time), a few cases

The first install downloads ~96 MB (~7 s here); later runs find it in bench/.tools. Quick mode
skips the Cerbos side, saying so, only when the npm registry cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
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


class NpmUnreachable(RuntimeError):
    """Cerbos is not installed and npm cannot reach its registry."""


# npm's codes for a registry it cannot reach (DNS, refused, timed out, offline).
_UNREACHABLE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH")


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
                # From npm's cache when it holds this exact version: no download, no registry.
                "--prefer-offline",
                f"{PACKAGE}@{VERSION}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 and any(code in done.stderr for code in _UNREACHABLE):
            raise NpmUnreachable(f"npm install {PACKAGE}@{VERSION}: registry unreachable")
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


def check_cases(target: str, quick: bool) -> int:
    """Every workload case (quick: the hand-written ones and every 25th other) on the Cerbos
    at `target`, against the workload's reference answers; the number of checks made."""
    from bench import cerbos_proto, workload  # the workload also renders Cedar (cedarpy)

    cases = workload.anchors() + workload.cases()[:: 25 if quick else 1]
    wrong, checks = [], 0
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(cerbos_proto.CHECK_RESOURCES, None, None)
        for case in cases:
            request = workload.cerbos_request(case.principal, [case.resource], case.actions)
            (rid, effects), *rest = cerbos_proto.effects(
                call(request.SerializeToString(), timeout=10)
            )
            for action, want in case.expected:
                checks += 1
                got = {"EFFECT_ALLOW": workload.ALLOW, "EFFECT_DENY": workload.DENY}.get(
                    effects.get(action, ""), "missing"
                )
                if rest or rid != case.resource.id or got != want:
                    wrong.append(f"{case.name} {action}: {got}, expected {want}")
    if wrong:
        raise AssertionError(f"Cerbos answered {len(wrong)} checks wrong:\n" + "\n".join(wrong))
    return checks


def main(argv: list[str] | None = None) -> int:
    """Install Cerbos, start it on the workload's policies and check its answers; the number
    of checks (0 when quick mode skipped Cerbos because npm was unreachable)."""
    from bench import workload

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few cases: checks it runs")
    args = parser.parse_args(argv)
    try:
        binary = install()
    except NpmUnreachable as exc:
        if not args.quick:
            raise
        print(f"SKIPPED the Cerbos side: {exc}; nothing was checked")
        return 0
    print(f"cerbos {VERSION}: {binary}")
    with tempfile.TemporaryDirectory(prefix="cerbos-policies-") as tmp:
        workload.write_cerbos_policies(Path(tmp))
        with start(Path(tmp), binary) as server:
            checks = check_cases(server.target, args.quick)
    print(f"{checks} checks, every one as the workload's reference model expects")
    return checks


if __name__ == "__main__":
    main(sys.argv[1:])
