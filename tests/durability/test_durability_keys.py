"""The key hierarchy end to end: pipelines get a masking key that opens nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from signoff.audit.chain import Hasher, StreamKeys, audit_key
from signoff.audit.verify import verify
from signoff.client.masking import key_id
from tests.durability.conftest import MakeRedis
from tests.durability.support import (
    HASH_KEY,
    Approvers,
    Client,
    Services,
    grant,
    verdict_of,
)
from tests.server.harness import masked_export

ROTATED = "ab" * 32


def signoff(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    return subprocess.run(
        [sys.executable, "-m", "signoff.cli", *argv],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def plan_key_id(client: Client) -> str:
    plan = client.check(masked_export()).masking_plan.fields
    return {e.path: e.key_id for e in plan}["customers.*.id"]


def verified(redis_url: str, *, records: int, env: dict[str, str]) -> str:
    """`signoff audit verify`'s output once the decisions stream holds `records` records."""
    deadline = time.monotonic() + 10
    while True:
        result = signoff(
            "audit", "verify", "--stream", "decisions", "--redis-url", redis_url, env=env
        )
        if f"ok, {records} records" in result.stdout or time.monotonic() > deadline:
            return result.stdout + result.stderr
        time.sleep(0.2)


def test_the_pipelines_masking_key_cannot_verify_the_audit_chain(
    make_redis: MakeRedis, services: Services
) -> None:
    redis_server = make_redis(appendonly=False)
    service = services.start(redis_server.url)
    with Client(service) as client:
        in_plans = plan_key_id(client)
    printed = signoff("keys", "masking", env={"SIGNOFF_HASH_KEY": HASH_KEY})
    assert printed.returncode == 0, printed.stderr
    printed_id, hex_key = printed.stdout.split()
    masking = bytes.fromhex(hex_key)

    assert printed_id == in_plans == key_id(masking)
    assert HASH_KEY.encode() not in (masking, hex_key.encode())
    assert "ok, 1 records" in verified(
        redis_server.url, records=1, env={"SIGNOFF_HASH_KEY": HASH_KEY}
    )
    with redis_server.client() as r:
        for guess in (masking, audit_key(masking), hex_key.encode()):
            result = verify(r, Hasher(guess), StreamKeys.of("signoff:", "decisions"))
            assert not result.ok, guess
        assert verify(
            r, Hasher(audit_key(HASH_KEY.encode())), StreamKeys.of("signoff:", "decisions")
        ).ok


def test_rotating_the_masking_key_keeps_audit_and_pending_approvals(
    make_redis: MakeRedis, services: Services, tokens: Approvers
) -> None:
    redis_server = make_redis(appendonly=False)
    before = services.start(redis_server.url, name="before")
    with Client(before) as client:
        old_id = plan_key_id(client)
        approval_id = client.pending()
    before.close()

    after = services.start(redis_server.url, name="after", env={"SIGNOFF_MASKING_KEY": ROTATED})
    with Client(after) as client:
        new_id = plan_key_id(client)
        client.approve(approval_id, tokens.sam)
        client.approve(approval_id, tokens.sue)
        used = client.check(grant(approval_id=approval_id))
    printed = signoff(
        "keys", "masking", env={"SIGNOFF_HASH_KEY": HASH_KEY, "SIGNOFF_MASKING_KEY": ROTATED}
    )

    assert new_id == key_id(bytes.fromhex(ROTATED)) != old_id
    assert printed.stdout.split() == [new_id, ROTATED]
    assert verdict_of(used) == "VERDICT_ALLOW"
    # Four decisions on one chain, two under each masking key, all verified with the root.
    assert "ok, 4 records" in verified(
        redis_server.url, records=4, env={"SIGNOFF_HASH_KEY": HASH_KEY}
    )
