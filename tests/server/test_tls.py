"""Serving over TLS and mutual TLS: real handshakes, certificate checks at start, rotation."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import redis

from signoff import config
from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.cli import build_parser
from signoff.client import TLS, InvalidInput, SignoffClient, SignoffRpcError, Verdict
from signoff.client.types import CheckItem, Context, Principal, Resource
from signoff.cmd import serve
from signoff.devcerts import DevCerts, create_dev_certs
from signoff.engine.evaluator import Engine
from signoff.errors import ConfigError
from signoff.server import app
from signoff.server.tls import ServerTLS, TLSFiles
from signoff.v1 import signoff_pb2 as pb
from signoff.views import Views
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY, KEY_ID, REDIS_URL, TIMEOUT, bundled, drop_prefix


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """A second, unrelated CA with its own server and client certificates."""
    return create_dev_certs(tmp_path_factory.mktemp("other-certs"))


def files_of(certs: DevCerts, *, mutual: bool = False) -> TLSFiles:
    return TLSFiles(certs.server_cert, certs.server_key, certs.ca if mutual else None)


@contextmanager
def serving_tls(files: TLSFiles, audit: AuditLog | None = None) -> Iterator[int]:
    running = app.start(
        Engine(bundled(), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        tls=ServerTLS(files),
        audit=audit,
        views=Views(hash_key=KEY, hash_key_id=KEY_ID) if audit else None,
    )
    try:
        yield running.port
    finally:
        running.stop(grace=None)


def read_item() -> CheckItem:
    return CheckItem(
        Principal("alice@acme.io", roles=("analyst",), attributes={"tenant": "acme"}),
        "read",
        Resource("customer_table", "crm.customers", {"tenant": "acme"}),
        Context(environment="prod"),
        {"row_limit": 20},
    )


def read_allowed(client: SignoffClient) -> Verdict:
    return client.check_item(read_item()).verdict


def client_for(port: int, tls: TLS, host: str = "localhost") -> SignoffClient:
    return SignoffClient(f"{host}:{port}", timeout=TIMEOUT, tls=tls)


def test_a_client_trusting_the_ca_gets_decisions_over_tls(certs: DevCerts) -> None:
    with serving_tls(files_of(certs)) as port:
        for host in ("localhost", "127.0.0.1"):
            with client_for(port, TLS(ca=certs.ca), host) as client:
                assert read_allowed(client) is Verdict.ALLOW


def test_a_plaintext_client_gets_no_answer_from_a_tls_server(certs: DevCerts) -> None:
    with (
        serving_tls(files_of(certs)) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        with pytest.raises(grpc.RpcError) as raised:
            pb_stub_check(channel)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def pb_stub_check(channel: grpc.Channel) -> None:
    from signoff.v1 import signoff_pb2_grpc

    signoff_pb2_grpc.DecisionServiceStub(channel).Check(pb.CheckRequest(), timeout=2.0)


def test_a_client_not_trusting_the_servers_ca_is_refused(
    certs: DevCerts, other_certs: DevCerts
) -> None:
    with serving_tls(files_of(certs)) as port, client_for(port, TLS(ca=other_certs.ca)) as client:
        with pytest.raises(SignoffRpcError) as raised:
            read_allowed(client)
        assert raised.value.code == "UNAVAILABLE"


def test_a_name_the_certificate_does_not_cover_is_refused(certs: DevCerts) -> None:
    tls = TLS(ca=certs.ca, server_name="signoff.example.com")
    with serving_tls(files_of(certs)) as port, client_for(port, tls) as client:
        with pytest.raises(SignoffRpcError) as raised:
            read_allowed(client)
        assert raised.value.code == "UNAVAILABLE"


def test_mutual_tls_answers_only_callers_with_a_certificate_from_its_ca(
    certs: DevCerts, other_certs: DevCerts
) -> None:
    with serving_tls(files_of(certs, mutual=True)) as port:
        with client_for(port, TLS(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)) as ok:
            assert read_allowed(ok) is Verdict.ALLOW
        stranger = TLS(ca=certs.ca, cert=other_certs.client_cert, key=other_certs.client_key)
        for tls in (TLS(ca=certs.ca), stranger):
            with client_for(port, tls) as client, pytest.raises(SignoffRpcError) as raised:
                read_allowed(client)
            assert raised.value.code == "UNAVAILABLE"


@pytest.mark.parametrize("mutual", [True, False])
def test_audit_records_name_the_callers_certificate_under_mutual_tls(
    certs: DevCerts, mutual: bool
) -> None:
    prefix = f"signoff:test:tls:{uuid.uuid4().hex}:"
    audit = AuditLog(REDIS_URL, audit_key(KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0))
    tls = TLS(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    try:
        with serving_tls(files_of(certs, mutual=mutual), audit) as port:
            with client_for(port, tls) as client:
                read_allowed(client)
                client.check_batch([read_item(), read_item()])
            assert audit.flush(10.0)
        out = io.StringIO()
        audit.export("decisions", None, None, out)
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(records) == 3
        expected = ["signoff-dev-client"] * 3 if mutual else [None] * 3
        assert [r.get("caller") for r in records] == expected
    finally:
        audit.close(timeout=1.0)
        drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def install(source: DevCerts, target: Path) -> TLSFiles:
    """Copy `source`'s server certificate and key to fixed names in `target`, each replaced
    atomically, as a certificate manager does."""
    target.mkdir(exist_ok=True)
    for src, name in ((source.server_cert, "tls.crt"), (source.server_key, "tls.key")):
        shutil.copyfile(src, target / f".{name}.new")
        os.replace(target / f".{name}.new", target / name)
    return TLSFiles(target / "tls.crt", target / "tls.key")


def test_a_rotated_certificate_reaches_new_connections_without_a_restart(
    certs: DevCerts, other_certs: DevCerts, tmp_path: Path
) -> None:
    files = install(certs, tmp_path / "live")
    with serving_tls(files) as port:
        with client_for(port, TLS(ca=certs.ca)) as before:
            assert read_allowed(before) is Verdict.ALLOW
        install(other_certs, tmp_path / "live")
        with client_for(port, TLS(ca=other_certs.ca)) as after:
            assert read_allowed(after) is Verdict.ALLOW
        with client_for(port, TLS(ca=certs.ca)) as stale, pytest.raises(SignoffRpcError):
            read_allowed(stale)


def test_a_broken_rotation_keeps_the_last_good_certificate(
    certs: DevCerts, other_certs: DevCerts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = install(certs, tmp_path / "live")
    with serving_tls(files) as port:
        # Half a rotation: the new key has arrived, its certificate not yet.
        shutil.copyfile(other_certs.server_key, files.key)
        with caplog.at_level(logging.WARNING, logger="signoff.server.tls"):
            for _ in range(2):
                with client_for(port, TLS(ca=certs.ca)) as client:
                    assert read_allowed(client) is Verdict.ALLOW
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1  # once per change, not once per handshake
        assert "does not belong to" in refusals[0].getMessage()
        # The rest of the rotation lands and is taken up.
        shutil.copyfile(other_certs.server_cert, files.cert)
        with client_for(port, TLS(ca=other_certs.ca)) as client:
            assert read_allowed(client) is Verdict.ALLOW


def test_a_key_that_does_not_match_the_certificate_is_refused_at_start(
    certs: DevCerts, other_certs: DevCerts
) -> None:
    with pytest.raises(ConfigError, match="does not belong to"):
        ServerTLS(TLSFiles(certs.server_cert, other_certs.server_key))


def test_an_expired_certificate_is_refused_at_start(tmp_path: Path) -> None:
    old = create_dev_certs(
        tmp_path,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
        valid_for=dt.timedelta(days=1),
    )
    with pytest.raises(ConfigError, match="expired at"):
        ServerTLS(TLSFiles(old.server_cert, old.server_key))


def test_a_certificate_near_its_end_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    soon = create_dev_certs(tmp_path, valid_for=dt.timedelta(days=2))
    with caplog.at_level(logging.WARNING, logger="signoff.server.tls"):
        ServerTLS(TLSFiles(soon.server_cert, soon.server_key))
    assert any("expires at" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("which", ["cert", "key", "client_ca"])
def test_unreadable_or_non_pem_files_are_refused_at_start(
    certs: DevCerts, tmp_path: Path, which: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    files = {"cert": certs.server_cert, "key": certs.server_key, "client_ca": certs.ca}
    with pytest.raises(ConfigError, match="not"):
        ServerTLS(TLSFiles(**{**files, which: junk}))
    with pytest.raises(ConfigError, match="cannot read"):
        ServerTLS(TLSFiles(**{**files, which: tmp_path / "missing.pem"}))


def parse_serve(*argv: str) -> config.Config:
    return serve.from_args(build_parser().parse_args(["serve", *argv]))


def test_serving_beyond_loopback_needs_tls_or_an_explicit_plaintext_choice(
    certs: DevCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("SIGNOFF_")]:
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match="without TLS"):
        parse_serve("--address", "0.0.0.0:50051")
    assert parse_serve("--address", "0.0.0.0:50051", "--allow-plaintext", "on").tls is None
    for loopback in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051"):
        assert parse_serve("--address", loopback).tls is None
    tls = parse_serve(
        "--address", "0.0.0.0:50051", "--tls-cert", str(certs.server_cert),
        "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca),
    ).tls  # fmt: skip
    assert tls == TLSFiles(certs.server_cert, certs.server_key, certs.ca)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "c.pem"], "go together"),
        (["--tls-key", "k.pem"], "go together"),
        (["--tls-client-ca", "ca.pem"], "needs --tls-cert"),
    ],
)
def test_half_a_tls_configuration_is_refused(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("SIGNOFF_")]:
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match=message):
        parse_serve(*argv)


def test_a_client_given_both_tls_and_a_channel_is_refused(certs: DevCerts) -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel, pytest.raises(InvalidInput):
        SignoffClient("x", channel=channel, tls=TLS(ca=certs.ca))


def test_a_certificate_not_yet_valid_is_refused_at_start(tmp_path: Path) -> None:
    future = create_dev_certs(tmp_path, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    with pytest.raises(ConfigError, match="not valid before"):
        ServerTLS(TLSFiles(future.server_cert, future.server_key))


def test_a_missing_file_is_named_in_the_refusal(certs: DevCerts, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=str(missing)):
        ServerTLS(TLSFiles(certs.server_cert, missing))


def test_an_unreadable_rotation_is_retried_until_it_reads(
    certs: DevCerts, other_certs: DevCerts, tmp_path: Path
) -> None:
    files = install(certs, tmp_path / "live")
    tls = ServerTLS(files)
    # Mid-rotation the key path cannot be read (here: briefly a directory) ...
    files.key.unlink()
    files.key.mkdir()
    assert tls.refresh() is None
    assert tls.refresh() is None
    # ... then the new pair lands: taken up at the next look, not stuck on the failure.
    files.key.rmdir()
    install(other_certs, tmp_path / "live")
    assert tls.refresh() is not None
    assert tls.refresh() is None  # and only once


def test_dev_certs_never_overwrite_or_write_through_a_planted_link(tmp_path: Path) -> None:
    create_dev_certs(tmp_path / "once")
    with pytest.raises(ConfigError, match="already holds"):
        create_dev_certs(tmp_path / "once")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / ".ca-key.pem.tmp").symlink_to(tmp_path / "stolen")
    with pytest.raises(FileExistsError):
        create_dev_certs(shared)
    assert not (tmp_path / "stolen").exists()
