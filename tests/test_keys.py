"""The key hierarchy: purpose keys derived apart from the root, each replaceable on its own."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from signoff.approvals.digest import digest_key, request_digest
from signoff.audit.chain import Hasher, audit_key
from signoff.engine.model import Context, Principal, PrincipalKind, Request, Resource
from signoff.errors import ConfigError
from signoff.keys import KeySources, derive, load

ROOT = b"signoff-unit-test-root-secret-0123456789"
REQUEST = Request(
    Principal("ivan", PrincipalKind.HUMAN),
    "grant_role",
    Resource("iam_role", "prod-db-admin"),
    Context(environment="prod", time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    payload={"grantee": "bob@acme.io"},
)


def test_the_masking_key_cannot_reproduce_a_digest_nor_an_audit_mac() -> None:
    keys = KeySources(root=ROOT).resolve()
    assert keys.masking != ROOT
    assert keys.audit == audit_key(ROOT)
    assert keys.digest == digest_key(ROOT)
    real_digest = request_digest(REQUEST, keys.digest)
    real_mac = Hasher(keys.audit).record("0" * 64, b"{}")
    for guess in (keys.masking, digest_key(keys.masking), audit_key(keys.masking)):
        assert request_digest(REQUEST, guess) != real_digest
        assert Hasher(guess).record("0" * 64, b"{}") != real_mac


def test_each_purpose_has_its_own_key() -> None:
    assert len({derive(ROOT, p) for p in ("masking", "audit", "digest")}) == 3


def test_a_purpose_key_set_on_its_own_replaces_only_that_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIGNOFF_HASH_KEY", ROOT.decode())
    monkeypatch.setenv("SIGNOFF_MASKING_KEY", "11" * 32)
    audit_file = tmp_path / "audit.key"
    audit_file.write_text("22" * 32 + "\n")
    keys = load("", {"audit": str(audit_file)}).resolve()
    assert keys.masking == b"\x11" * 32
    assert keys.audit == b"\x22" * 32
    assert keys.digest == digest_key(ROOT)


def test_with_every_purpose_key_set_no_root_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNOFF_HASH_KEY", raising=False)
    for n, purpose in enumerate(("MASKING", "AUDIT", "DIGEST")):
        monkeypatch.setenv(f"SIGNOFF_{purpose}_KEY", f"{n}{n}" * 32)
    sources = load("")
    assert not sources.needs_root()
    assert sources.resolve().digest == b"\x22" * 32


@pytest.mark.parametrize(("value", "problem"), [("xyz", "hex"), ("ab" * 31, "at least 32")])
def test_a_bad_purpose_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("SIGNOFF_DIGEST_KEY", value)
    with pytest.raises(ConfigError, match=f"SIGNOFF_DIGEST_KEY must be.*{problem}"):
        load("")
