"""Outside values cannot forge, split or disguise log lines: one Formatter escapes them all."""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from signoff import devtokens
from signoff.logsetup import FORMAT, OneLineFormatter
from signoff.notify.render import slack_message, teams_message
from signoff.safetext import escape_line
from signoff.v1 import approvals_pb2 as apb
from signoff.v1 import approvals_pb2_grpc as apb_grpc
from signoff.v1 import signoff_pb2 as pb
from signoff.v1 import signoff_pb2_grpc as pb_grpc
from tests.conftest import RULES
from tests.notifier.support import event, summary
from tests.server.harness import KEY, REDIS_URL, TIMEOUT, channel_to, drop_prefix, prod_grant

STARTUP_SECONDS = 20.0
LISTENING = re.compile(r"^signoff listening on \S+:(?P<port>\d+) ")
# What a record of the serve command's log starts with: its time.
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
FORGED = "2030-01-01 00:00:00,000 INFO signoff.approvals: approval apr_forged approve by root"


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("signoff.test", logging.INFO, __file__, 1, message, args, exc_info)


# --- the formatter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("a\x1b[31mb", "a\\x1b[31mb"),  # terminal escape
        ("a\x85b", "a\\x85b"),  # C1 next line
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("admin\u202e", "admin\\u202e"),  # right-to-left override
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # bidi isolates
        ("bob\u200b@acme.io", "bob\\u200b@acme.io"),
        ("tab\there", "tab\\there"),
        ("caf\u00e9 \u00fcber \U0001f600", "caf\u00e9 \u00fcber \U0001f600"),  # left as is
    ],
    ids=ascii,
)
def test_control_characters_in_a_message_argument_are_escaped(value: str, shown: str) -> None:
    text = OneLineFormatter("%(message)s").format(record("by %s: done", value))
    assert text == f"by {shown}: done"


def test_control_characters_in_the_message_itself_are_escaped() -> None:
    text = OneLineFormatter("%(message)s").format(record(f"line one\n{FORGED}"))
    assert text.splitlines() == [f"line one\\n{FORGED}"]


def test_every_line_of_a_traceback_is_indented_so_none_passes_for_a_record() -> None:
    try:
        raise ValueError(f"bad value\n{FORGED}\rand\u202e")
    except ValueError as exc:
        text = OneLineFormatter(FORMAT).format(record("it failed", exc=exc))

    first, *rest = text.splitlines()
    assert RECORD_START.match(first)
    assert first.endswith("INFO signoff.test: it failed")
    assert rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert f"    {FORGED}" in rest
    assert "\u202e" not in text
    assert "\\u202e" in text


def test_a_lone_surrogate_is_escaped_rather_than_breaking_the_handler() -> None:
    text = OneLineFormatter("%(message)s").format(record("sub %s", "a\udcffb"))
    assert text == "sub a\\udcffb"
    text.encode("utf-8")


# Controls the notifier's own list of characters used to miss.
@pytest.mark.parametrize(
    "char",
    ["\u2060", "\u2061", "\u061c", "\u00ad", "\u180e", "\U000e0041", "\U000e0001", "\ufff9"],
    ids=ascii,
)
def test_chat_messages_neutralise_every_control_a_log_escapes(char: str) -> None:
    forged = f"agent-7{char}admin"
    assert escape_line(char) != char
    ev = event(summary_data=summary(requester_id=forged, action=forged))

    for message in (slack_message(ev), teams_message(ev)):
        assert char not in json.dumps(message, ensure_ascii=False)
        assert "agent-7\ufffdadmin" in json.dumps(message, ensure_ascii=False)


# --- the serve command -----------------------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"signoff:test:logs:{uuid.uuid4().hex}:"
    yield prefix
    drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "signoff.cli", "serve", "--rules", str(RULES)],
        env={**env, "SIGNOFF_HTTP_ADDRESS": "127.0.0.1:0"},  # the default 8080 may be taken
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline() if selector.select(timeout=STARTUP_SECONDS) else ""
    match = LISTENING.match(line)
    if match is None:
        process.kill()
        _, err = process.communicate(timeout=STARTUP_SECONDS)
        pytest.fail(f"no listening line (got {line!r}); stderr:\n{err}")
    return process, int(match["port"])


def test_a_token_subject_with_a_line_break_cannot_forge_a_line_in_the_server_log(
    tmp_path: Path, prefix: str
) -> None:
    devtokens.create_dev_keys(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update(
        SIGNOFF_ADDRESS="127.0.0.1:0",
        SIGNOFF_REDIS_PREFIX=prefix,
        SIGNOFF_HASH_KEY=KEY.decode(),
        SIGNOFF_LOG_LEVEL="INFO",
        SIGNOFF_JWKS=str(tmp_path / devtokens.JWKS_FILE),
        SIGNOFF_JWT_ISSUER=devtokens.DEV_ISSUER,
        SIGNOFF_JWT_AUDIENCE=devtokens.DEV_AUDIENCE,
    )
    subject = f"erin@acme.io\n{FORGED}\r\u202e"
    token = devtokens.mint(tmp_path, subject=subject, kind="human", roles=["security"])

    process, port = _serve(env)
    try:
        with channel_to(port) as channel:
            asked = pb_grpc.DecisionServiceStub(channel).Check(prod_grant(), timeout=TIMEOUT)
            assert asked.verdict == pb.VERDICT_REQUIRE_APPROVAL
            voted = apb_grpc.ApprovalServiceStub(channel).Approve(
                apb.ApproveRequest(approval_id=asked.approval_id, reason="lgtm"),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=TIMEOUT,
            )
            assert voted.approval.state == apb.APPROVAL_STATE_PENDING
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=STARTUP_SECONDS)

    lines = err.splitlines()
    assert [line for line in lines if "apr_forged" in line] == [
        line for line in lines if f"by erin@acme.io\\n{FORGED}\\r\\u202e: voted" in line
    ]
    assert len([line for line in lines if "apr_forged" in line]) == 1
    assert all(RECORD_START.match(line) for line in lines), err
    assert "\u202e" not in err
