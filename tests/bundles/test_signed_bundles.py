"""Signed bundles: what `bundle sign` writes loads as the directory did; anything else is refused."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signoff.bundles.keys import generate_keys, load_private_key, load_public_key
from signoff.bundles.manifest import (
    EXPIRY_WARNING_SECONDS,
    FORMAT,
    MAX_CLOCK_SKEW_SECONDS,
    Limits,
)
from signoff.bundles.signing import parse_expires_in, sign_bundle, signing_time
from signoff.bundles.source import SignedBundleSource
from signoff.bundles.verify import load_signed_bundle, open_signed_bundle
from signoff.cmd import bundle as bundle_cmd
from signoff.engine import cel
from signoff.errors import ConfigError, PolicyError
from signoff.policy.loader import load_bundle
from signoff.policy.model import policy_files
from tests.conftest import RULES, WriteRules

Member = tuple[tarfile.TarInfo, bytes]
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
HOUR = 3600
DAY = 24 * HOUR


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp directory of our own, so a test can see that nothing was left behind in it."""
    where = tmp_path / "scratch"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    yield where
    assert list(where.iterdir()) == []


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keys(tmp_path / "keys")


@pytest.fixture
def other_keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keys(tmp_path / "other-keys")


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    out = tmp_path / "bundle.tar.gz"
    sign_bundle(RULES, keys[0], out)
    return out


def read_members(path: Path) -> list[Member]:
    with tarfile.open(path, "r:gz") as tar:
        out = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            out.append((info, handle.read() if handle else b""))
        return out


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def write_tar(path: Path, members: list[Member], *, fmt: int = tarfile.USTAR_FORMAT) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)  # an edited member keeps its header, with its new size
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def repack(
    signed: Path, change: Callable[[list[Member]], list[Member]], *, fmt: int = tarfile.USTAR_FORMAT
) -> Path:
    out = signed.with_name("changed.tar.gz")
    return write_tar(out, change(read_members(signed)), fmt=fmt)


def forge(path: Path, private_key: Path, manifest: bytes, files: dict[str, bytes]) -> Path:
    """A bundle whose manifest really is signed by `private_key`, whatever it says."""
    key = load_private_key(private_key)
    members = [regular("manifest.json", manifest), regular("manifest.sig", key.sign(manifest))]
    members += [regular(f"files/{name}", data) for name, data in files.items()]
    return write_tar(path, members)


def manifest_for(files: dict[str, bytes], revision: str, **fields: object) -> bytes:
    """A canonical manifest; `fields` add to or replace its keys (None: leave the key out)."""
    entries = [
        {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in sorted(files.items())
    ]
    doc = {"files": entries, "format": FORMAT, "revision": revision, "signed_at": T0} | fields
    doc = {k: v for k, v in doc.items() if v is not None}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def edited_rules(tmp_path: Path) -> Path:
    """RULES with one comment added: another revision that loads the same."""
    rules = tmp_path / "edited-rules"
    shutil.copytree(RULES, rules)
    guardrails = rules / "guardrails.yaml"
    guardrails.write_text(guardrails.read_text() + "\n# edited\n")
    return rules


def sign_at(
    out: Path,
    private_key: Path,
    signed_at: int,
    *,
    rules: Path = RULES,
    expires_in: dt.timedelta | None = None,
) -> Path:
    sign_bundle(
        rules,
        private_key,
        out,
        signed_at=signed_at,
        expires_in=expires_in,
        clock=FakeClock(signed_at),
    )
    return out


def publish(bundle: Path, served: Path) -> None:
    served.write_bytes(bundle.read_bytes())


def source_refusal(source: SignedBundleSource, served: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        source()
    problems = caught.value.problems
    assert all(p.file == str(served) and (p.line, p.column) == (0, 0) for p in problems)
    return "\n".join(p.message for p in problems)


def refusal(tarball: Path, public_key: Path, limits: Limits | None = None) -> str:
    with pytest.raises(PolicyError) as caught:
        load_signed_bundle(tarball, public_key, limits=limits or Limits())
    problems = caught.value.problems
    assert all(p.file == str(tarball) and (p.line, p.column) == (0, 0) for p in problems)
    return "\n".join(p.message for p in problems)


def run(argv: list[str]) -> int:
    # The lead mounts this on `signoff`; a bare parser runs the same functions.
    parser = argparse.ArgumentParser(prog="signoff")
    bundle_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


# --- what signing writes ----------------------------------------------------------------------


def test_signed_bundle_loads_with_the_revision_of_the_directory(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    expected = load_bundle(RULES)

    bundle = load_signed_bundle(signed, keys[1])

    assert bundle.revision == expected.revision
    assert bundle.rule_count == expected.rule_count
    names = [p.relative_to(RULES).as_posix() for p in policy_files(RULES)]
    assert bundle.files == tuple(f"{signed}!/{name}" for name in names)


def test_sign_returns_the_revision_the_loader_computes(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    assert sign_bundle(RULES, keys[0], tmp_path / "b.tar.gz") == load_bundle(RULES).revision


def test_signing_twice_with_the_same_source_date_epoch_gives_identical_bytes(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    month = dt.timedelta(days=30)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0))
    sign_bundle(RULES, keys[0], tmp_path / "one.tar.gz", expires_in=month, clock=FakeClock(T0))
    sign_bundle(RULES, keys[0], tmp_path / "two.tar.gz", expires_in=month, clock=FakeClock(T0))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0 + 1))
    sign_bundle(RULES, keys[0], tmp_path / "later.tar.gz", expires_in=month, clock=FakeClock(T0))

    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    # The time is in the bytes: only SOURCE_DATE_EPOCH made the first two equal.
    assert (tmp_path / "one.tar.gz").read_bytes() != (tmp_path / "later.tar.gz").read_bytes()


def test_tarball_holds_manifest_signature_and_exactly_the_policy_files(signed: Path) -> None:
    members = read_members(signed)

    names = [info.name for info, _ in members]
    policies = [p.relative_to(RULES).as_posix() for p in policy_files(RULES)]
    assert names == ["manifest.json", "manifest.sig", *(f"files/{p}" for p in policies)]
    assert not any(name.endswith("_test.yaml") for name in names)  # suites are not policies
    assert all(
        (i.mtime, i.uid, i.gid, i.mode, i.uname, i.gname, i.type)
        == (0, 0, 0, 0o644, "", "", tarfile.REGTYPE)
        for i, _ in members
    )
    manifest = members[0][1]
    doc = json.loads(manifest)
    assert manifest == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert set(doc) == {"files", "format", "revision", "signed_at"}  # no expiry unless asked
    assert doc["format"] == FORMAT
    assert doc["revision"] == load_bundle(RULES).revision
    assert doc["files"] == [
        {
            "path": p,
            "size": (RULES / p).stat().st_size,
            "sha256": hashlib.sha256((RULES / p).read_bytes()).hexdigest(),
        }
        for p in policies
    ]
    assert len(members[1][1]) == 64  # the raw Ed25519 signature


def test_signing_an_invalid_rules_dir_fails_with_the_loaders_problems(
    write_rules: WriteRules, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    bad = write_rules(
        a="""
        policies:
          - id: p
            resources: [db]
            actions: [read]
            rules:
              - {id: r, effect: allow, when: "principal.rol == 'x'"}
        """,
        b="""
        policies:
          - id: p
            resources: [db]
            actions: [read]
            rules: [{id: r, effect: deny}]
        """,
    )
    with pytest.raises(PolicyError) as expected:
        load_bundle(bad)
    out = tmp_path / "bad.tar.gz"

    with pytest.raises(PolicyError) as caught:
        sign_bundle(bad, keys[0], out)

    assert caught.value.problems == expected.value.problems
    assert any("is also used in" in p.message for p in caught.value.problems)
    assert not out.exists()
    assert list(tmp_path.glob(".bad.tar.gz.*")) == []


def test_signing_a_missing_directory_fails(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(PolicyError, match="rules directory not found"):
        sign_bundle(tmp_path / "nowhere", keys[0], tmp_path / "b.tar.gz")


def test_signing_refuses_more_files_than_the_limit(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(PolicyError, match="a signed bundle holds 2"):
        sign_bundle(RULES, keys[0], tmp_path / "b.tar.gz", limits=Limits(max_files=2))


def test_signing_refuses_a_file_name_ustar_cannot_hold(
    write_rules: WriteRules, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    rules = write_rules({"x" * 120: "policies: []\n"})

    with pytest.raises(PolicyError, match="cannot go in a signed bundle"):
        sign_bundle(rules, keys[0], tmp_path / "b.tar.gz")


def test_manifest_records_the_signing_time_and_the_expiry(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    out = sign_at(tmp_path / "b.tar.gz", keys[0], T0, expires_in=dt.timedelta(days=30))

    doc = json.loads(read_members(out)[0][1])

    assert (doc["signed_at"], doc["expires_at"]) == (T0, T0 + 30 * DAY)


def test_signing_time_is_source_date_epoch_when_set_else_the_clock(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert signing_time({}, clock=lambda: T0 + 0.9) == T0
    assert signing_time({"SOURCE_DATE_EPOCH": str(T0)}, clock=lambda: 0.0) == T0

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    sign_bundle(RULES, keys[0], tmp_path / "b.tar.gz")

    assert json.loads(read_members(tmp_path / "b.tar.gz")[0][1])["signed_at"] == 1_700_000_000


@pytest.mark.parametrize("value", ["", "-1", "1.5", "1e9", " 1", "soon", "99999999999999"])
def test_malformed_source_date_epoch_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)

    with pytest.raises(ConfigError, match=r"SOURCE_DATE_EPOCH=.* is not a number of seconds"):
        sign_bundle(RULES, keys[0], tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * DAY), ("12h", 12 * HOUR), ("1d12h", DAY + 12 * HOUR), ("90m", 90 * 60)],
)
def test_expires_in_takes_days_and_the_policy_duration_syntax(text: str, seconds: int) -> None:
    assert parse_expires_in(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0d", "0s", "d", "30", "1w", "-1d", "1h30d", "30 d"])
def test_expires_in_that_is_not_a_positive_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_expires_in(text)


# --- freshness and rollback -------------------------------------------------------------------


def test_expired_bundle_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bundle = sign_at(tmp_path / "b.tar.gz", keys[0], T0, expires_in=dt.timedelta(hours=1))
    clock = FakeClock(T0 + HOUR - 1)
    source = SignedBundleSource(bundle, keys[1], backend=cel.DEFAULT_BACKEND, clock=clock)
    assert source().revision == load_bundle(RULES).revision

    clock.now = T0 + HOUR
    message = source_refusal(source, bundle)

    assert "expired: the bundle was valid until 2026-01-01T01:00:00Z" in message
    assert "signed at 2026-01-01T00:00:00Z" in message
    with pytest.raises(PolicyError, match="expired"):
        load_signed_bundle(bundle, keys[1], clock=clock)  # the stateless loader checks it too


def test_bundle_signed_in_the_future_beyond_the_clock_skew_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    bundle = sign_at(tmp_path / "b.tar.gz", keys[0], T0 + MAX_CLOCK_SKEW_SECONDS + 1)
    clock = FakeClock(T0)

    message = source_refusal(
        SignedBundleSource(bundle, keys[1], backend=cel.DEFAULT_BACKEND, clock=clock), bundle
    )

    assert f"{MAX_CLOCK_SKEW_SECONDS + 1} seconds ahead of this host's clock" in message
    clock.now = T0 + 1  # within the allowance now
    assert SignedBundleSource(bundle, keys[1], backend=cel.DEFAULT_BACKEND, clock=clock)()


def test_older_bundle_is_refused_after_a_newer_one_was_served_and_the_newer_stays_accepted(
    tmp_path: Path, keys: tuple[Path, Path], edited_rules: Path
) -> None:
    older = sign_at(tmp_path / "older.tar.gz", keys[0], T0)
    newer = sign_at(tmp_path / "newer.tar.gz", keys[0], T0 + 60, rules=edited_rules)
    served = tmp_path / "served.tar.gz"
    source = SignedBundleSource(
        served, keys[1], backend=cel.DEFAULT_BACKEND, clock=FakeClock(T0 + DAY)
    )
    publish(older, served)
    first = source()
    publish(newer, served)
    second = source()
    assert first.revision != second.revision

    publish(older, served)
    message = source_refusal(source, served)

    assert "rollback refused: the bundle was signed at 2026-01-01T00:00:00Z" in message
    assert f"(revision {first.revision[:12]})" in message
    assert f"signed at 2026-01-01T00:01:00Z (revision {second.revision[:12]})" in message
    assert (source.signed_at, source.revision) == (T0 + 60, second.revision)  # unchanged
    publish(newer, served)
    assert source().revision == second.revision


def test_rollback_protection_lasts_as_long_as_the_source(
    tmp_path: Path, keys: tuple[Path, Path], edited_rules: Path
) -> None:
    # A restarted process has a new source: it accepts any bundle that verifies and has not
    # expired, which is why bundles should carry an expiry.
    older = sign_at(tmp_path / "older.tar.gz", keys[0], T0)
    newer = sign_at(tmp_path / "newer.tar.gz", keys[0], T0 + 60, rules=edited_rules)
    clock = FakeClock(T0 + DAY)
    SignedBundleSource(newer, keys[1], backend=cel.DEFAULT_BACKEND, clock=clock)()

    restarted = SignedBundleSource(older, keys[1], backend=cel.DEFAULT_BACKEND, clock=clock)

    assert restarted().revision == load_bundle(RULES).revision


def test_same_signing_time_with_a_different_revision_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], edited_rules: Path
) -> None:
    first = sign_at(tmp_path / "first.tar.gz", keys[0], T0)
    other = sign_at(tmp_path / "other.tar.gz", keys[0], T0, rules=edited_rules)
    served = tmp_path / "served.tar.gz"
    source = SignedBundleSource(
        served, keys[1], backend=cel.DEFAULT_BACKEND, clock=FakeClock(T0 + DAY)
    )
    publish(first, served)
    revision = source().revision

    publish(other, served)
    message = source_refusal(source, served)

    assert "claims the signing time 2026-01-01T00:00:00Z of the one already served" in message
    assert source.revision == revision


def test_same_bundle_reloaded_twice_is_accepted(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bundle = sign_at(tmp_path / "b.tar.gz", keys[0], T0, expires_in=dt.timedelta(days=30))
    source = SignedBundleSource(
        bundle, keys[1], backend=cel.DEFAULT_BACKEND, clock=FakeClock(T0 + DAY)
    )

    revisions = {source().revision for _ in range(3)}
    # Signed again from the same rules at the same time: the same bundle, byte for byte.
    sign_at(bundle, keys[0], T0, expires_in=dt.timedelta(days=30))
    revisions.add(source().revision)

    assert revisions == {load_bundle(RULES).revision}
    assert (source.signed_at, source.expires_at) == (T0, T0 + 30 * DAY)


def test_refused_first_load_leaves_the_source_accepting_any_valid_bundle(
    tmp_path: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    served = tmp_path / "served.tar.gz"
    source = SignedBundleSource(
        served, keys[1], backend=cel.DEFAULT_BACKEND, clock=FakeClock(T0 + DAY)
    )
    publish(sign_at(tmp_path / "theirs.tar.gz", other_keys[0], T0 + 3600), served)

    assert "signature does not verify" in source_refusal(source, served)
    assert source.signed_at is None
    publish(sign_at(tmp_path / "ours.tar.gz", keys[0], T0), served)
    assert source().revision == load_bundle(RULES).revision


@pytest.mark.parametrize(
    "change",
    [
        {"signed_at": T0 + DAY},  # made to look newer than the bundle being served
        {"expires_at": T0 + 365 * DAY},  # its life extended
        {"expires_at": None},  # its expiry removed
    ],
)
def test_tampering_with_the_signing_or_expiry_time_breaks_the_signature(
    tmp_path: Path, keys: tuple[Path, Path], change: dict[str, int | None]
) -> None:
    bundle = sign_at(tmp_path / "b.tar.gz", keys[0], T0, expires_in=dt.timedelta(days=1))

    def edit(members: list[Member]) -> list[Member]:
        info, manifest = members[0]
        doc = json.loads(manifest) | change
        doc = {k: v for k, v in doc.items() if v is not None}
        edited = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return [(info, edited), *members[1:]]

    changed = repack(bundle, edit)
    source = SignedBundleSource(
        changed, keys[1], backend=cel.DEFAULT_BACKEND, clock=FakeClock(T0 + HOUR)
    )

    assert "signature does not verify" in source_refusal(source, changed)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"signed_at": None}, "keys must be exactly files, format, revision, signed_at"),
        ({"signed_at": "2026-01-01T00:00:00Z"}, "signed_at is not an integer"),
        ({"signed_at": float(T0)}, "signed_at is not an integer"),
        ({"signed_at": True}, "signed_at is not an integer"),
        ({"signed_at": -1}, "signed_at is not an integer"),
        ({"expires_at": 10**20}, "expires_at is not an integer"),
        ({"expires_at": T0}, "expires_at is not after signed_at"),
        ({"valid_until": T0 + DAY}, "keys must be exactly"),
    ],
)
def test_signed_manifest_with_malformed_times_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], fields: dict[str, object], why: str
) -> None:
    files = {"p.yaml": b"policies: []\n"}
    manifest = manifest_for(files, "0" * 64, **fields)

    assert why in refusal(forge(tmp_path / "f.tar.gz", keys[0], manifest, files), keys[1])


def test_bundle_close_to_expiry_is_served_with_a_warning(
    tmp_path: Path, keys: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    bundle = sign_at(tmp_path / "b.tar.gz", keys[0], T0, expires_in=dt.timedelta(days=30))
    clock = FakeClock(T0 + 30 * DAY - EXPIRY_WARNING_SECONDS - 1)
    source = SignedBundleSource(bundle, keys[1], backend=cel.DEFAULT_BACKEND, clock=clock)
    caplog.set_level(logging.WARNING, logger="signoff.policy")

    source()
    assert caplog.records == []
    clock.now = T0 + 29 * DAY
    source()

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"{bundle}" in record.getMessage()
    assert "expires at 2026-01-31T00:00:00Z, in 24 hours" in record.getMessage()


# --- opening ----------------------------------------------------------------------------------


def test_open_yields_a_private_directory_that_is_removed_afterwards(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    with open_signed_bundle(signed, keys[1]) as root:
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        got = {p.relative_to(root).as_posix(): p.read_bytes() for p in policy_files(root)}
        assert got == {p.relative_to(RULES).as_posix(): p.read_bytes() for p in policy_files(RULES)}
    assert not root.exists()


def test_open_removes_the_directory_when_the_caller_fails(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    with pytest.raises(RuntimeError), open_signed_bundle(signed, keys[1]) as root:
        raise RuntimeError("caller failed")
    assert not root.exists()


# --- refused: signature and manifest ----------------------------------------------------------


def test_unsigned_bundle_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    unsigned = repack(signed, lambda ms: [m for m in ms if m[0].name != "manifest.sig"])

    assert "not signed" in refusal(unsigned, keys[1])


def test_bundle_without_a_manifest_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    bare = repack(signed, lambda ms: [m for m in ms if m[0].name != "manifest.json"])

    assert "no manifest.json" in refusal(bare, keys[1])


def test_bundle_signed_by_another_key_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    theirs = tmp_path / "theirs.tar.gz"
    sign_bundle(RULES, other_keys[0], theirs)

    message = refusal(theirs, keys[1])

    assert "signature does not verify with the configured key sha256:" in message


@pytest.mark.parametrize("offset", [0, 1, 100, -2, -1])
def test_manifest_edited_by_one_byte_is_refused(
    signed: Path, keys: tuple[Path, Path], offset: int
) -> None:
    def edit(members: list[Member]) -> list[Member]:
        info, data = members[0]
        changed = bytearray(data)
        changed[offset] ^= 0x01
        return [(info, bytes(changed)), *members[1:]]

    assert "signature does not verify" in refusal(repack(signed, edit), keys[1])


def test_signature_edited_by_one_byte_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    def edit(members: list[Member]) -> list[Member]:
        info, sig = members[1]
        return [members[0], (info, bytes([sig[0] ^ 0x80]) + sig[1:]), *members[2:]]

    assert "signature does not verify" in refusal(repack(signed, edit), keys[1])


def test_signed_manifest_whose_revision_is_not_the_files_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    files = {p.relative_to(RULES).as_posix(): p.read_bytes() for p in policy_files(RULES)}
    forged = forge(tmp_path / "f.tar.gz", keys[0], manifest_for(files, "0" * 64), files)

    message = refusal(forged, keys[1])

    assert "but the manifest signs 000000" in message


def test_signed_manifest_that_is_not_canonical_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    files = {"p.yaml": b"policies: []\n"}
    pretty = json.dumps(json.loads(manifest_for(files, "0" * 64)), indent=2).encode()
    forged = forge(tmp_path / "f.tar.gz", keys[0], pretty, files)

    assert "not in canonical form" in refusal(forged, keys[1])


def test_signed_manifest_of_another_format_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    files = {"p.yaml": b"policies: []\n"}
    for other in ("signoff-policy-bundle/3", "something-else/2"):
        manifest = manifest_for(files, "0" * 64, format=other)

        message = refusal(forge(tmp_path / "f.tar.gz", keys[0], manifest, files), keys[1])

        assert f"unsupported bundle format {other!r}; this signoff reads {FORMAT}" in message


def test_bundle_of_the_format_before_signing_times_is_refused_with_a_hint_to_re_sign(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    files = {"p.yaml": b"policies: []\n"}
    manifest = manifest_for(files, "0" * 64, format="signoff-policy-bundle/1", signed_at=None)

    message = refusal(forge(tmp_path / "f.tar.gz", keys[0], manifest, files), keys[1])

    assert "unsupported bundle format 'signoff-policy-bundle/1'" in message
    assert "re-sign the rules" in message


def test_signed_manifest_naming_a_path_outside_the_bundle_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    files = {"../p.yaml": b"policies: []\n"}
    forged = forge(tmp_path / "f.tar.gz", keys[0], manifest_for(files, "0" * 64), {})

    assert "'../p.yaml' is not a policy file path" in refusal(forged, keys[1])


def test_load_problems_in_a_signed_bundle_name_the_file_inside_the_tarball(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    # Signed by hand, past `sign_bundle`'s check: e.g. signed by a newer signoff.
    files = {
        "p.yaml": b"policies:\n  - id: p\n    resources: [db]\n    actions: [read]\n    rules:\n      - {id: r, effect: allow, when: 'true + 1 == 2'}\n"
    }
    forged = forge(tmp_path / "f.tar.gz", keys[0], manifest_for(files, "0" * 64), files)

    with pytest.raises(PolicyError) as caught:
        load_signed_bundle(forged, keys[1])

    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.rule_id) == (f"{forged}!/p.yaml", 6, "p/r")


# --- refused: the files -----------------------------------------------------------------------


def test_file_altered_with_the_manifest_unchanged_is_refused(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    def alter(members: list[Member]) -> list[Member]:
        return [
            (info, data.replace(b"deny", b"allow", 1))
            if info.name == "files/iam.yaml"
            else (info, data)
            for info, data in members
        ]

    def same_size(members: list[Member]) -> list[Member]:
        return [
            (info, data[:-1] + b"#") if info.name == "files/iam.yaml" else (info, data)
            for info, data in members
        ]

    for change in (alter, same_size):
        changed = repack(signed, change)
        assert "file iam.yaml was altered" in refusal(changed, keys[1])


@pytest.mark.parametrize("name", ["files/extra.yaml", "files/sub/extra.yaml", "README", "files2/x"])
def test_extra_member_is_refused(signed: Path, keys: tuple[Path, Path], name: str) -> None:
    extended = repack(signed, lambda ms: [*ms, regular(name, b"policies: []\n")])

    assert f"unexpected member {name!r}" in refusal(extended, keys[1])


def test_removed_file_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    fewer = repack(signed, lambda ms: [m for m in ms if m[0].name != "files/roles.yaml"])

    assert "file roles.yaml is listed in the manifest but missing" in refusal(fewer, keys[1])


def test_every_file_problem_is_reported_at_once(signed: Path, keys: tuple[Path, Path]) -> None:
    def change(members: list[Member]) -> list[Member]:
        kept = [m for m in members if m[0].name != "files/roles.yaml"]
        kept = [(i, d + b"\n") if i.name == "files/iam.yaml" else (i, d) for i, d in kept]
        return [*kept, regular("files/extra.yaml", b"")]

    message = refusal(repack(signed, change), keys[1])

    assert "roles.yaml is listed in the manifest but missing" in message
    assert "file iam.yaml was altered" in message
    assert "unexpected member 'files/extra.yaml'" in message


def special(name: str, kind: bytes, target: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (special("files/iam.yaml", tarfile.SYMTYPE, "/etc/passwd"), "a symbolic link"),
        (special("files/link.yaml", tarfile.SYMTYPE, "iam.yaml"), "a symbolic link"),
        (special("files/hard.yaml", tarfile.LNKTYPE, "files/iam.yaml"), "a hard link"),
        (special("files/dir", tarfile.DIRTYPE), "a directory"),
        (special("files/dev.yaml", tarfile.CHRTYPE), "a character device"),
        (special("files/fifo.yaml", tarfile.FIFOTYPE), "a FIFO"),
    ],
)
def test_member_that_is_not_a_regular_file_is_refused(
    signed: Path, keys: tuple[Path, Path], member: Member, kind: str
) -> None:
    # First, so it is refused before any file it could point at is even read.
    changed = repack(signed, lambda ms: [member, *ms])

    assert f"member {member[0].name!r} is {kind}; only regular files allowed" in refusal(
        changed, keys[1]
    )


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.yaml", "it contains '..'"),
        ("files/../../evil.yaml", "it contains '..'"),
        ("files/../manifest.json", "it contains '..'"),
        ("/etc/cron.d/evil", "it is an absolute path"),
        ("/files/iam.yaml", "it is an absolute path"),
        ("files//iam.yaml", "it contains an empty or '.' component"),
        ("files/./iam.yaml", "it contains an empty or '.' component"),
        ("files/a\\..\\b.yaml", "it contains a backslash"),
        ("files/evil\n.yaml", "it contains a control character"),
    ],
)
def test_unsafe_member_path_is_refused(
    signed: Path, keys: tuple[Path, Path], name: str, why: str
) -> None:
    changed = repack(signed, lambda ms: [*ms, regular(name, b"policies: []\n")])

    assert f"unsafe member path {name!r}: {why}" in refusal(changed, keys[1])


def test_duplicate_member_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    # tar readers disagree on which copy wins; we accept neither.
    def twice(members: list[Member]) -> list[Member]:
        original = next(m for m in members if m[0].name == "files/iam.yaml")
        return [*members, regular("files/iam.yaml", original[1])]

    assert "duplicate member 'files/iam.yaml'" in refusal(repack(signed, twice), keys[1])


def test_pax_extended_headers_are_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    def with_pax(members: list[Member]) -> list[Member]:
        info, data = regular("files/iam.yaml", b"")
        info.pax_headers = {"comment": "x"}
        return [(info, data), *members]

    changed = repack(signed, with_pax, fmt=tarfile.PAX_FORMAT)

    assert "has pax extended headers" in refusal(changed, keys[1])


def test_oversized_extension_header_is_refused_before_tarfile_parses_it(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    # A GNU long name (or pax record) is read whole into memory by tarfile: more than one
    # block of it is never legitimate here, so it is not read at all.
    long_name = "files/" + "d/" * 300 + "x.yaml"
    changed = repack(signed, lambda ms: [regular(long_name, b""), *ms], fmt=tarfile.GNU_FORMAT)

    assert "a tar extension header is too large" in refusal(changed, keys[1])


# --- refused: sizes ---------------------------------------------------------------------------


def test_member_over_the_size_limit_is_refused_before_its_data_is_read(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    # A header claiming 1 GiB, followed by nothing: refused on the header alone.
    info = tarfile.TarInfo("files/huge.yaml")
    info.size = 1 << 30
    bomb = tmp_path / "huge.tar.gz"
    bomb.write_bytes(gzip.compress(info.tobuf(tarfile.USTAR_FORMAT)))

    message = refusal(bomb, keys[1])

    assert f"member 'files/huge.yaml' ({1 << 30} bytes) takes the files over {64 << 20}" in message


def test_member_with_a_negative_size_is_refused_without_inflating_the_rest(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    # Base-256 size fields can hold -1, which tarfile accepts; read(-1) would inflate it all.
    info = tarfile.TarInfo("files/a.yaml")
    info.size = -1
    bomb = tmp_path / "negative.tar.gz"
    bomb.write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(8 << 20)))

    assert "negative size" in refusal(bomb, keys[1])


def test_files_over_the_total_limit_are_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    message = refusal(signed, keys[1], Limits(max_total_bytes=5000))

    assert "takes the files over 5000 bytes" in message


def test_more_files_than_the_limit_are_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    assert "more than 3 files" in refusal(signed, keys[1], Limits(max_files=3))


def test_manifest_over_its_limit_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    assert "manifest.json is larger than 100 bytes" in refusal(
        signed, keys[1], Limits(max_manifest_bytes=100)
    )


def test_gzip_bomb_after_the_archive_is_refused_without_inflating_it(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    # 256 MiB of zeros in 256 concatenated gzip members: about 260 KiB on disk.
    zeros = gzip.compress(bytes(1 << 20))
    bomb = signed.with_name("bomb.tar.gz")
    bomb.write_bytes(signed.read_bytes() + zeros * 256)

    assert "unexpected data after the end of the tar archive" in refusal(bomb, keys[1])


def test_data_after_the_archive_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    appended = signed.with_name("appended.tar.gz")
    appended.write_bytes(signed.read_bytes() + gzip.compress(b"hidden member"))

    assert "unexpected data after the end of the tar archive" in refusal(appended, keys[1])


# --- refused: not a bundle at all -------------------------------------------------------------


def test_plain_tar_without_gzip_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    plain = signed.with_name("plain.tar")
    plain.write_bytes(gzip.decompress(signed.read_bytes()))

    assert "not a valid gzip file" in refusal(plain, keys[1])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not a valid tar archive"),
        (b"PK\x03\x04 not a gzip file at all", "not a valid gzip file"),
        (gzip.compress(b"not a tar archive" * 100), "not a valid tar archive"),
    ],
)
def test_file_that_is_not_a_gzip_tarball_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], content: bytes, why: str
) -> None:
    path = tmp_path / "junk.tar.gz"
    path.write_bytes(content)

    assert why in refusal(path, keys[1])


def test_truncated_bundle_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    cut = signed.with_name("cut.tar.gz")
    cut.write_bytes(signed.read_bytes()[: signed.stat().st_size // 2])

    assert "truncated" in refusal(cut, keys[1])


def test_directory_or_fifo_instead_of_a_bundle_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    for path in (tmp_path, fifo):
        assert "not a regular file" in refusal(path, keys[1])
    assert "bundle file not found" in refusal(tmp_path / "missing.tar.gz", keys[1])


# --- keys -------------------------------------------------------------------------------------


def test_generated_keys_are_pem_and_the_private_one_is_0600(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "k")

    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_private_key(private).public_key() == load_public_key(public)


def test_keygen_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "k")
    before = private.read_bytes(), public.read_bytes()
    public.unlink()

    with pytest.raises(ConfigError, match="already exists"):
        generate_keys(tmp_path / "k")

    assert private.read_bytes() == before[0]
    assert not public.exists()  # nothing half-written either


def test_keys_that_are_not_ed25519_pem_are_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_private = tmp_path / "ec.pem"
    ec_private.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_public = tmp_path / "ec.pub.pem"
    ec_public.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )

    with pytest.raises(ConfigError, match="not an Ed25519 private key"):
        load_private_key(ec_private)
    with pytest.raises(ConfigError, match="is encrypted"):
        load_private_key(encrypted)
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        load_public_key(ec_public)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_key(keys[0])  # the private key where the public one belongs
    with pytest.raises(ConfigError, match="cannot read bundle public key"):
        load_public_key(tmp_path / "missing.pem")


# --- the command ------------------------------------------------------------------------------


def test_cli_keygen_writes_keys_then_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["bundle", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert "bundle-signing-key.pub.pem" in capsys.readouterr().out

    assert run(["bundle", "keygen", "--out", str(tmp_path / "k")]) == 2
    assert "already exists; keygen never overwrites a key" in capsys.readouterr().err


def test_cli_sign_prints_the_revision_and_verify_accepts_it(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.tar.gz"
    revision = load_bundle(RULES).revision

    assert (
        run(["bundle", "sign", "--rules", str(RULES), "--key", str(keys[0]), "--out", str(out)])
        == 0
    )
    assert capsys.readouterr().out == f"{revision}\n"

    assert run(["bundle", "verify", "--bundle", str(out), "--public-key", str(keys[1])]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: ok, revision {revision}, 6 policy files, signed by sha256:" in printed
    assert printed.rstrip().endswith("Z, never expires")


def test_cli_sign_with_expires_in_and_verify_prints_both_times(
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # verify reads the real clock: sign a minute ago, by SOURCE_DATE_EPOCH.
    signed_at = int(time.time()) - 60
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(signed_at))
    out = tmp_path / "b.tar.gz"
    sign = ["bundle", "sign", "--rules", str(RULES), "--key", str(keys[0]), "--out", str(out)]
    verify = ["bundle", "verify", "--bundle", str(out), "--public-key", str(keys[1])]

    assert run([*sign, "--expires-in", "30d"]) == 0
    capsys.readouterr()
    assert run(verify) == 0

    captured = capsys.readouterr()
    signed_iso = dt.datetime.fromtimestamp(signed_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    expires = dt.datetime.fromtimestamp(signed_at + 30 * DAY, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f", signed at {signed_iso}, expires at {expires}\n" in captured.out
    assert captured.err == ""

    assert run([*sign, "--expires-in", "1d"]) == 0
    capsys.readouterr()
    assert run(verify) == 0
    assert f"warning: {out} expires in 23 hours" in capsys.readouterr().err


def test_cli_verify_exits_1_for_an_expired_bundle(
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = sign_at(tmp_path / "b.tar.gz", keys[0], 1_000_000_000, expires_in=dt.timedelta(days=1))

    assert run(["bundle", "verify", "--bundle", str(out), "--public-key", str(keys[1])]) == 1

    err = capsys.readouterr().err
    assert f"{out}: expired: the bundle was valid until 2001-09-10T01:46:40Z" in err


def test_cli_sign_exits_2_for_a_bad_expiry_or_source_date_epoch(
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "b.tar.gz"
    sign = ["bundle", "sign", "--rules", str(RULES), "--key", str(keys[0]), "--out", str(out)]

    with pytest.raises(SystemExit) as exited:
        run([*sign, "--expires-in", "1w"])
    assert exited.value.code == 2
    assert "invalid duration '1w'" in capsys.readouterr().err

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert run(sign) == 2
    assert "SOURCE_DATE_EPOCH='yesterday' is not a number of seconds" in capsys.readouterr().err
    assert not out.exists()


def test_cli_sign_exits_1_with_the_problems_of_rules_that_do_not_load(
    write_rules: WriteRules,
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = write_rules(a="policies: [{id: p}]\n")
    out = tmp_path / "b.tar.gz"

    assert (
        run(["bundle", "sign", "--rules", str(bad), "--key", str(keys[0]), "--out", str(out)]) == 1
    )

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "signoff bundle sign: refused:" in captured.err
    assert f"{bad / 'a.yaml'}:1:" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_cli_sign_exits_2_for_a_bad_key_or_output(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "b.tar.gz")

    assert run(["bundle", "sign", "--rules", str(RULES), "--key", str(keys[1]), "--out", out]) == 2
    assert "is not a PEM private key" in capsys.readouterr().err

    nowhere = str(tmp_path / "no-such-dir" / "b.tar.gz")
    assert (
        run(["bundle", "sign", "--rules", str(RULES), "--key", str(keys[0]), "--out", nowhere]) == 2
    )
    err = capsys.readouterr().err
    assert "No such file or directory" in err
    assert "Traceback" not in err


def test_cli_verify_exits_1_with_the_reason_for_a_tampered_bundle(
    signed: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    changed = repack(signed, lambda ms: [*ms, regular("files/extra.yaml", b"")])

    assert run(["bundle", "verify", "--bundle", str(changed), "--public-key", str(keys[1])]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "signoff bundle verify: refused:" in captured.err
    assert f"{changed}: unexpected member 'files/extra.yaml'" in captured.err


def test_cli_verify_exits_1_for_another_key(
    signed: Path, other_keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(["bundle", "verify", "--bundle", str(signed), "--public-key", str(other_keys[1])]) == 1
    )
    assert "signature does not verify with the configured key" in capsys.readouterr().err


def test_cli_verify_exits_2_for_usage_errors(
    signed: Path, tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.tar.gz")
    assert run(["bundle", "verify", "--bundle", missing, "--public-key", str(keys[1])]) == 2
    assert "no such file" in capsys.readouterr().err

    assert run(["bundle", "verify", "--bundle", str(signed), "--public-key", str(signed)]) == 2
    assert "is not a PEM public key" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        run(["bundle", "verify", "--bundle", str(signed)])
    assert exited.value.code == 2
    assert "--public-key" in capsys.readouterr().err


def test_cli_sign_refuses_a_bundle_that_would_already_be_expired(
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")  # 2001, e.g. an old commit's time
    out = tmp_path / "b.tar.gz"
    sign = ["bundle", "sign", "--rules", str(RULES), "--key", str(keys[0]), "--out", str(out)]

    assert run([*sign, "--expires-in", "1d"]) == 2

    err = capsys.readouterr().err
    assert "refusing to sign a bundle that is already expired" in err
    assert "signed at 2001-09-09T01:46:40Z (SOURCE_DATE_EPOCH or the clock)" in err
    assert "valid until 2001-09-10T01:46:40Z" in err
    assert not out.exists()
    assert run(sign) == 0  # without an expiry, an old signing time is fine


def test_cli_sign_refuses_a_bundle_dated_beyond_the_clock_skew(
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(time.time()) + DAY))
    out = tmp_path / "b.tar.gz"
    sign = ["bundle", "sign", "--rules", str(RULES), "--key", str(keys[0]), "--out", str(out)]

    assert run(sign) == 2

    err = capsys.readouterr().err
    assert "refusing to sign a bundle dated in the future" in err
    assert f"(verifiers allow {MAX_CLOCK_SKEW_SECONDS})" in err
    assert not out.exists()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(time.time()) + MAX_CLOCK_SKEW_SECONDS // 2))
    assert run(sign) == 0


def test_a_bundle_expiring_later_signed_within_the_skew_is_written(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    out = tmp_path / "b.tar.gz"
    clock = FakeClock(T0)

    sign_bundle(
        RULES, keys[0], out, signed_at=T0 - DAY, expires_in=dt.timedelta(days=2), clock=clock
    )

    assert load_signed_bundle(out, keys[1], clock=clock).revision == load_bundle(RULES).revision
