"""`signoff audit verify` exits 0/1/2 and names the first bad record; `export` writes JSON lines."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from signoff.cmd.audit import register as add_audit_arguments
from tests.audit.conftest import MakeLog
from tests.audit.support import SECRET, entries, write


def run(argv: list[str]) -> int:
    # The lead mounts this on `signoff`; a bare parser runs the same functions.
    parser = argparse.ArgumentParser(prog="signoff")
    add_audit_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    for name in ("SIGNOFF_HASH_KEY", "SIGNOFF_HASH_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOFF_REDIS_PREFIX", prefix)


@pytest.mark.usefixtures("env")
def test_verify_ok_exits_0(
    make_log: MakeLog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIGNOFF_HASH_KEY", SECRET.decode())
    log = make_log()
    write(log, 5)
    write(log, 2, stream="approvals")

    assert run(["audit", "verify"]) == 0

    out = capsys.readouterr().out
    assert "decisions: ok, 5 records verified, head seq 5 hash " in out
    assert "approvals: ok, 2 records verified" in out


@pytest.mark.usefixtures("env")
def test_verify_tampering_exits_1_and_names_the_record(
    make_log: MakeLog,
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SIGNOFF_HASH_KEY", SECRET.decode())
    log = make_log()
    write(log, 8)
    ids = [i for i, _ in entries(r, log.keys["decisions"].stream)]
    r.xdel(log.keys["decisions"].stream, ids[4])

    assert run(["audit", "verify", "--stream", "decisions"]) == 1

    out = capsys.readouterr().out
    assert (
        f"decisions: TAMPERED: first bad record seq 6, entry {ids[5]}: inserted_or_deleted" in out
    )
    assert "approvals" not in out


@pytest.mark.usefixtures("env")
def test_verify_reads_the_key_from_a_file(
    make_log: MakeLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(make_log(), 3)
    key_file = tmp_path / "secret"
    key_file.write_bytes(SECRET + b"\n")

    assert run(["audit", "verify", "--hash-key-file", str(key_file)]) == 0
    assert "decisions: ok, 3 records verified" in capsys.readouterr().out


@pytest.mark.usefixtures("env")
def test_verify_with_the_wrong_key_reports_tampering(
    make_log: MakeLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_HASH_KEY", "another-service-secret-0123456789abcdef")
    write(make_log(), 3)

    assert run(["audit", "verify", "--stream", "decisions"]) == 1


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("argv", "key", "message"),
    [
        ([], None, "no key: set SIGNOFF_HASH_KEY"),
        ([], "short", "at least 32 bytes"),
        (["--hash-key-file", "/nonexistent/key"], None, "cannot read hash key file"),
        (["--redis-url", "redis://127.0.0.1:1/0"], SECRET.decode(), "cannot read"),
        (["--redis-url", "nonsense://x"], SECRET.decode(), "bad REDIS_URL"),
    ],
)
def test_verify_config_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    key: str | None,
    message: str,
) -> None:
    if key is not None:
        monkeypatch.setenv("SIGNOFF_HASH_KEY", key)

    assert run(["audit", "verify", *argv]) == 2
    assert message in capsys.readouterr().err


def test_verify_with_redis_down_says_so_not_that_the_key_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No key configured: verify would look for the development secret in Redis.
    monkeypatch.delenv("SIGNOFF_HASH_KEY", raising=False)
    monkeypatch.delenv("SIGNOFF_HASH_KEY_FILE", raising=False)

    assert run(["audit", "verify", "--redis-url", "redis://127.0.0.1:1/0"]) == 2

    err = capsys.readouterr().err
    assert "signoff audit verify: cannot reach Redis to read the audit log: ConnectionError" in err
    assert "no key" not in err


@pytest.mark.usefixtures("env")
def test_export_writes_json_lines_filtered_by_time(
    make_log: MakeLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = make_log()
    for i, at in enumerate(["2025-03-01T10:00:00Z", "2025-03-01T12:00:00Z"]):
        assert log.submit({"type": "decision", "decision_id": f"d{i}", "at": at})
    assert log.submit({"type": "approval.created", "approval_id": "apr_1", "at": at})
    assert log.flush(5)
    target = tmp_path / "audit.jsonl"

    assert run(["audit", "export", "--since", "2025-03-01T11:00:00Z", "--output", str(target)]) == 0

    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(x["stream"], x.get("decision_id", x.get("approval_id"))) for x in lines] == [
        ("decisions", "d1"),
        ("approvals", "apr_1"),
    ]
    assert "2 records" in capsys.readouterr().err

    # No key is needed to export, and standard output is the default.
    assert run(["audit", "export", "--stream", "decisions", "--until", "2025-03-01T11:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["decision_id"] for line in out] == ["d0"]


@pytest.mark.usefixtures("env")
def test_export_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "export", "--output", str(tmp_path / "missing" / "x.jsonl")]) == 2
    assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["audit", "export", "--since", "yesterday"])


@pytest.mark.usefixtures("env")
def test_export_into_a_pipe_its_reader_closed_ends_quietly(make_log: MakeLog) -> None:
    log = make_log()
    write(log, 300)
    command = [sys.executable, "-m", "signoff.cli", "audit", "export"]
    # As `signoff audit export | head -1` once head has read its line: the pipe is closed
    # before the export writes, so every write fails.
    export = subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert export.stdout is not None
    export.stdout.close()
    _, err = export.communicate(timeout=30)

    assert export.returncode == 141  # as a shell reports a command ended by SIGPIPE
    assert err.decode() == ""
