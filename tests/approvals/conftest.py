"""Fixtures for the approval security tests: one dev IdP per run, a fresh server per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from signoff.identity import Authenticator
from tests.approvals.support import DevIdP, Server, lab_files, serve
from tests.conftest import WriteRules
from tests.server.harness import NIGHT

MakeServer = Callable[..., Server]


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> DevIdP:
    return DevIdP.create(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="session")
def authn(idp: DevIdP) -> Authenticator:
    return idp.authenticator()


@pytest.fixture
def make_server(authn: Authenticator) -> Iterator[MakeServer]:
    """Start servers (see `serve`) that stop, and drop their keys, when the test ends."""
    with ExitStack() as stack:

        def make(rules: Path | None = None, **options: Any) -> Server:
            options.setdefault("auth", authn)
            return stack.enter_context(serve(rules, **options))

        yield make


@pytest.fixture
def day(make_server: MakeServer) -> Server:
    """The bundled rules by day: ivan's prod grant needs two security approvers."""
    return make_server()


@pytest.fixture
def night(make_server: MakeServer) -> Server:
    """The bundled rules at night: the export bot's export needs one data steward."""
    return make_server(now=NIGHT)


@pytest.fixture(scope="session")
def lab_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab bundle (see support.LAB_POLICIES), written once."""
    root = tmp_path_factory.mktemp("lab")
    for name, text in lab_files().items():
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def lab(make_server: MakeServer, lab_rules: Path) -> Server:
    return make_server(lab_rules)


@pytest.fixture
def write_lab(write_rules: WriteRules) -> Callable[..., Path]:
    """Write a variant of the lab bundle (windows, staging quorum) and return its directory."""

    def write(**variant: Any) -> Path:
        return write_rules(lab_files(**variant))

    return write
