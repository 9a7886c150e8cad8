"""Starlette vs FastAPI for the HTTP gateway: requests/s and server CPU per request, same load.

The same tiny AuthZEN-like endpoint (POST /access/v1/evaluation: parse the JSON body, call a
trivial decision function, answer JSON) is written twice: on Starlette as signoff's gateway
does it (read the body, check the shape by hand), and on FastAPI as its users would (pydantic
request and response models). Each runs under uvicorn in its own subprocess on a free loopback
port with the gateway's uvicorn settings; N client threads with keep-alive connections drive
one, then the other (A B A B), and the medians of the rounds are compared. Server CPU is the
server process's utime + stime over each round. `--quick` runs two short rounds (for the test
that keeps this script working). FastAPI comes from the `bench` extra, never a runtime need.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.http_vs_grpc import _free_port, _round

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FRAMEWORKS = ("starlette", "fastapi")
PATH = "/access/v1/evaluation"
STARTUP_SECONDS = 20.0

ALLOWED = {
    "subject": {"type": "user", "id": "alice@acme.io", "properties": {"roles": ["analyst"]}},
    "action": {"name": "read", "properties": {"row_limit": 20}},
    "resource": {"type": "customer_table", "id": "crm.customers", "properties": {"tenant": "acme"}},
    "context": {"environment": "prod"},
}
DENIED = {**ALLOWED, "action": {"name": "delete"}}


def decide(roles: list[str], action: str, resource_type: str) -> bool:
    """The trivial decision both apps call, so only the framework differs."""
    return action == "read" and resource_type == "customer_table" and "analyst" in roles


# Starlette, the way the gateway reads a body: bytes -> json -> checks by hand.


class _BadInput(Exception):
    pass


def _entity(body: dict[str, Any], name: str, *keys: str) -> dict[str, Any]:
    entity = body.get(name)
    if not isinstance(entity, dict) or not all(isinstance(entity.get(k), str) for k in keys):
        raise _BadInput(name)
    return entity


async def _starlette_evaluate(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            raise _BadInput("body")
        subject = _entity(body, "subject", "type", "id")
        action = _entity(body, "action", "name")
        resource = _entity(body, "resource", "type", "id")
    except (ValueError, _BadInput) as exc:
        return JSONResponse({"error": {"code": "invalid_argument", "field": str(exc)}}, 400)
    roles = (subject.get("properties") or {}).get("roles") or []
    decision = decide(roles, action["name"], resource["type"])
    return JSONResponse({"decision": decision, "context": {"subject": subject["id"]}})


def starlette_app() -> Starlette:
    return Starlette(routes=[Route(PATH, _starlette_evaluate, methods=["POST"])])


# FastAPI, the way its users write it: pydantic models in and out.


class Subject(BaseModel):
    type: str
    id: str
    properties: dict[str, Any] = {}


class Action(BaseModel):
    name: str
    properties: dict[str, Any] = {}


class Resource(BaseModel):
    type: str
    id: str
    properties: dict[str, Any] = {}


class Evaluation(BaseModel):
    subject: Subject
    action: Action
    resource: Resource
    context: dict[str, Any] = {}


class Decision(BaseModel):
    decision: bool
    context: dict[str, Any]


def fastapi_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post(PATH)
    async def evaluate(body: Evaluation) -> Decision:
        roles = body.subject.properties.get("roles") or []
        decision = decide(roles, body.action.name, body.resource.type)
        return Decision(decision=decision, context={"subject": body.subject.id})

    return app


@contextmanager
def served(framework: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One uvicorn process serving `framework`'s app; yields it and its base URL."""
    port = _free_port()
    # The gateway's uvicorn settings (gateway_server.py): no lifespan, no access log.
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.http_frameworks:{framework}_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "off",
        "--no-access-log",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    # `python -m` puts the working directory on sys.path, so the factory's module is found.
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"{framework} server exited: {err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{framework} server did not start") from None
                time.sleep(0.05)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.communicate(timeout=STARTUP_SECONDS)


def check_answers(url: str) -> None:
    """The allowed request is true, the denied one false, a malformed one a 4xx."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        answers = [client.post(PATH, json=body) for body in (ALLOWED, DENIED, {"subject": 1})]
    got = [a.json().get("decision") if a.status_code == 200 else a.status_code for a in answers]
    if got[:2] != [True, False] or not 400 <= answers[2].status_code < 500:
        raise RuntimeError(f"{url} answered {got}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    rounds, seconds, threads = (
        (2, 0.4, 2) if args.quick else (args.rounds, args.seconds, args.threads)
    )
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in FRAMEWORKS}
    clients: list[httpx.Client] = []
    with served("starlette") as (star, star_url), served("fastapi") as (fast, fast_url):
        servers = {"starlette": (star.pid, star_url), "fastapi": (fast.pid, fast_url)}
        try:

            def caller(url: str) -> Callable[[], Callable[[], bool]]:
                def make() -> Callable[[], bool]:
                    client = httpx.Client(base_url=url, timeout=10.0)
                    clients.append(client)
                    return lambda: client.post(PATH, json=ALLOWED).json()["decision"] is True

                return make

            for pid, url in servers.values():
                check_answers(url)
                _round(pid, 1, 0.3, caller(url))  # warm up before measuring
            for _ in range(rounds):
                for name, (pid, url) in servers.items():
                    samples[name].append(_round(pid, threads, seconds, caller(url)))
        finally:
            for c in clients:
                c.close()
    result: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "threads": threads}
    for name, rows in samples.items():
        result[name] = {
            "requests_per_s": statistics.median(r["per_s"] for r in rows),
            "server_cpu_us_per_request": statistics.median(r["cpu_us"] for r in rows),
        }
    result["fastapi_over_starlette_cpu"] = (
        result["fastapi"]["server_cpu_us_per_request"]
        / result["starlette"]["server_cpu_us_per_request"]
    )
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "http_frameworks.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
