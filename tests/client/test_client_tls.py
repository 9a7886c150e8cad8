"""Client TLS: which targets may see a token in plaintext, TLS settings, and the CLI flags."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.client import TLS, InvalidInput, SignoffClient
from signoff.client.cmd.approvals import main as approvals_main
from signoff.client.cmd.check import EXIT_UNAVAILABLE
from signoff.client.cmd.check import main as check_main
from signoff.client.cmd.settings import (
    CA_VARIABLE,
    CERT_VARIABLE,
    KEY_VARIABLE,
    add_tls_arguments,
    tls_from_args,
)
from signoff.client.tls import is_loopback
from signoff.devcerts import DevCerts, create_dev_certs
from signoff.engine.evaluator import Engine
from signoff.server import app
from signoff.server.tls import ServerTLS, TLSFiles
from tests.conftest import fixed_clock
from tests.server.harness import DAY, KEY_ID, bundled

CHECK = [
    "--principal", "alice@acme.io", "--role", "analyst", "--attr", "tenant=acme",
    "--action", "read", "--resource-kind", "customer_table", "--resource-id", "crm.customers",
    "--resource-attr", "tenant=acme", "--json",
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_tls_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CA_VARIABLE, CERT_VARIABLE, KEY_VARIABLE):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("client-certs"))


@pytest.fixture(scope="module")
def mutual_port(certs: DevCerts) -> Iterator[int]:
    running = app.start(
        Engine(bundled(), clock=fixed_clock(DAY)),
        "127.0.0.1:0",
        hash_key_id=KEY_ID,
        tls=ServerTLS(TLSFiles(certs.server_cert, certs.server_key, certs.ca)),
    )
    yield running.port
    running.stop(grace=None)


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("ipv4:127.0.0.1:50051", True),
        ("dns:///localhost:50051", True),
        ("unix:/run/signoff.sock", True),
        ("10.0.0.5:50051", False),
        ("[2001:db8::1]:50051", False),
        ("signoff.internal:50051", False),
        ("localhost.evil.example:50051", False),
        ("dns:///signoff.internal:443", False),
        ("ipv6:[::1]:1,[2001:db8::1]:50051", False),
        ("ipv4:127.0.0.1:1,10.0.0.5:50051", False),
        ("dns:///unix:443", False),
        ("[::1]x:50051", False),
        ("[::1:50051", False),
        ("localhost:http", False),
    ],
)
def test_only_loopback_targets_count_as_this_machine(target: str, loopback: bool) -> None:
    assert is_loopback(target) is loopback


def test_a_token_is_never_sent_in_plaintext_beyond_this_machine(certs: DevCerts) -> None:
    with pytest.raises(InvalidInput, match="plaintext") as raised:
        SignoffClient("signoff.internal:50051", token="secret-jwt")
    assert "secret-jwt" not in str(raised.value)
    # Plaintext without a token, or a token over TLS, is the caller's choice to make.
    SignoffClient("signoff.internal:50051").close()
    SignoffClient("signoff.internal:50051", token="secret-jwt", tls=TLS(ca=certs.ca)).close()
    SignoffClient("127.0.0.1:50051", token="secret-jwt").close()


def test_a_client_certificate_needs_its_key_and_readable_pem(
    certs: DevCerts, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="both cert and key"):
        TLS(cert=certs.client_cert)
    with pytest.raises(InvalidInput, match="cannot read"):
        SignoffClient("localhost:1", tls=TLS(ca=tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(InvalidInput, match="not PEM"):
        SignoffClient("localhost:1", tls=TLS(ca=junk))


def parse_tls(*argv: str) -> TLS | None:
    parser = argparse.ArgumentParser()
    add_tls_arguments(parser)
    return tls_from_args(parser.parse_args(argv))


def test_tls_settings_come_from_flags_then_the_environment(
    certs: DevCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_tls() is None
    assert parse_tls("--tls") == TLS()
    assert parse_tls("--tls-ca", str(certs.ca)) == TLS(ca=certs.ca)
    monkeypatch.setenv(CA_VARIABLE, str(certs.ca))
    monkeypatch.setenv(CERT_VARIABLE, str(certs.client_cert))
    monkeypatch.setenv(KEY_VARIABLE, str(certs.client_key))
    assert parse_tls() == TLS(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    assert parse_tls("--tls-ca", "/x/ca.pem", "--tls-server-name", "s") == TLS(
        ca=Path("/x/ca.pem"), cert=certs.client_cert, key=certs.client_key, server_name="s"
    )


def test_check_command_speaks_mutual_tls(
    certs: DevCerts, mutual_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    addr = ["--addr", f"localhost:{mutual_port}", "--timeout", "5"]
    mutual = ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert)]
    assert check_main([*CHECK, *addr, *mutual, "--tls-key", str(certs.client_key)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "ALLOW"
    # Without the client certificate the handshake fails: unavailable, no traceback.
    assert check_main([*CHECK, *addr, "--tls-ca", str(certs.ca)]) == EXIT_UNAVAILABLE
    assert "Traceback" not in capsys.readouterr().err


def test_check_command_reads_tls_settings_from_the_environment(
    certs: DevCerts,
    mutual_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(CA_VARIABLE, str(certs.ca))
    monkeypatch.setenv(CERT_VARIABLE, str(certs.client_cert))
    monkeypatch.setenv(KEY_VARIABLE, str(certs.client_key))
    assert check_main([*CHECK, "--addr", f"localhost:{mutual_port}"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "ALLOW"


def test_approvals_command_refuses_a_plaintext_token_to_a_remote_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("some-jwt-value")
    code = approvals_main(["list", "--addr", "signoff.internal:50051", "--token-file", str(token)])
    err = capsys.readouterr().err
    assert code == 2
    assert "plaintext" in err
    assert "some-jwt-value" not in err
