"""Rule labels (the compliance impact a policy declares) reach the approval and the inbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.engine.evaluator import Engine
from signoff.errors import PolicyError
from signoff.identity import NoAuthenticator
from signoff.policy.loader import load_bundle
from tests.approvals.support import Server, lab_files, serve
from tests.http.inbox_support import SESSION_SECRET, Gateway, core_for, dev_login, gateway
from tests.http.inbox_support import staging_read as staging

STAGING_RULE = "      - id: staging-needs-a-reviewer\n"


def write(root: Path, labels: str) -> Path:
    for name, text in lab_files().items():
        text = text.replace(STAGING_RULE, STAGING_RULE.replace("\n", "") + "\n" + labels)
        (root / f"{name}.yaml").write_text(text.lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return write(tmp_path, "        labels: {compliance: [soc2, gdpr], data: [customer]}\n")


@pytest.fixture
def server(labelled: Path) -> Iterator[Server]:
    with serve(labelled, auth=NoAuthenticator()) as running:
        yield running


@pytest.fixture
def web(server: Server, labelled: Path) -> Iterator[Gateway]:
    engine = Engine(load_bundle(labelled, backend="cel-expr"))
    settings = {"dev_login": True, "session_secret": SESSION_SECRET}
    with gateway(core_for(server, engine, settings)) as running:
        yield running


def test_rule_labels_are_carried_into_the_stored_approval(server: Server) -> None:
    approval_id = server.ask(staging())
    assert server.record(approval_id).requirement["labels"] == {
        "compliance": ["gdpr", "soc2"],
        "data": ["customer"],
    }


def test_the_inbox_shows_the_compliance_impact(server: Server, web: Gateway) -> None:
    approval_id = server.ask(staging())
    with web.client() as rita:
        dev_login(rita, "rita", "reviewer")
        listed = rita.get("/inbox").text
        page = rita.get(f"/inbox/a/{approval_id}").text
    assert "compliance" in listed
    assert "gdpr, soc2" in listed
    assert 'id="labels"' in page
    assert '<code class="chip">soc2</code>' in page


@pytest.mark.parametrize(
    "labels",
    [
        "        labels: {compliance: soc2}\n",
        "        labels: {Compliance: [soc2]}\n",
        "        labels: [soc2]\n",
    ],
)
def test_malformed_labels_are_policy_problems(tmp_path: Path, labels: str) -> None:
    with pytest.raises(PolicyError, match="labels"):
        load_bundle(write(tmp_path, labels), backend="cel-expr")
