"""The AuthZEN interop Todo scenario: every public decision file entry, over the real HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.http.gateway_support import Gateway, running_gateway

EXAMPLE = REPO / "examples" / "authzen-todo"
# Copies of openid/authzen interop/ decision files authorization-api-1_0-01 and -02.
FILES = sorted((EXAMPLE / "decisions").glob("decisions-authorization-api-1_0-*.json"))


def _cases(kind: str) -> list[Any]:
    cases = []
    for path in FILES:
        for i, case in enumerate(json.loads(path.read_text(encoding="utf-8")).get(kind, [])):
            cases.append(pytest.param(case, id=f"{path.stem[-2:]}-{kind}-{i}"))
    return cases


@pytest.fixture(scope="module")
def todo() -> Iterator[Gateway]:
    with running_gateway(EXAMPLE / "rules") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(todo: Gateway) -> Iterator[httpx.Client]:
    with todo.client() as client:
        yield client


def test_both_public_decision_files_are_present() -> None:
    assert [p.name[-7:] for p in FILES] == ["01.json", "02.json"]
    assert len(_cases("evaluation")) == 80
    assert len(_cases("evaluations")) == 3


@pytest.mark.parametrize("case", _cases("evaluation"))
def test_every_evaluation_matches_the_interop_decision(client: httpx.Client, case: Any) -> None:
    answer = client.post("/access/v1/evaluation", json=case["request"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] is case["expected"], answer.json()["context"]


@pytest.mark.parametrize("case", _cases("evaluations"))
def test_every_batch_matches_the_interop_decisions(client: httpx.Client, case: Any) -> None:
    answer = client.post("/access/v1/evaluations", json=case["request"])
    assert answer.status_code == 200, answer.text
    got = [{"decision": item["decision"]} for item in answer.json()["evaluations"]]
    assert got == case["expected"]
