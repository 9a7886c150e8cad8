"""Server behaviour the approval client relies on: list order, and watches never starving Check."""

from __future__ import annotations

import threading
import time
import uuid

from signoff.client import Context, Principal, Resource, SignoffClient, SignoffRpcError, Verdict
from tests.client.conftest import DevIdentity
from tests.server.harness import serving

IVAN = Principal("ivan@acme.io", "human", ("iam_admin",), {"tenant": "acme"})
DEPLOY_BOT = Principal(
    "svc:deploy-bot", "service", ("deployer",), {"tenant": "acme", "owner": "dana@acme.io"}
)
ALICE = Principal("alice@acme.io", "human", ("analyst",), {"tenant": "acme"})
PROD = Context(environment="prod")


def grant(client: SignoffClient) -> str:
    decision = client.check(
        principal=IVAN,
        action="grant_role",
        resource=Resource("iam_role", "roles/db-admin", {"tenant": "acme"}),
        context=PROD,
        payload={"grantee": f"bob-{uuid.uuid4().hex[:8]}@acme.io", "role": "db-admin"},
    )
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    return decision.approval_id


def test_list_puts_the_soonest_to_expire_first(
    approvals_address: str, dev_identity: DevIdentity
) -> None:
    both = dev_identity.token("lee@acme.io", roles=("security", "sre_lead"))
    with SignoffClient(approvals_address, timeout=10.0) as anyone:
        older = grant(anyone)  # waits up to 4h
        time.sleep(0.01)
        newer = anyone.check(
            principal=DEPLOY_BOT,
            action="deploy",
            resource=Resource(
                "infra.k8s_deployment", f"prod/{uuid.uuid4().hex[:8]}", {"tenant": "acme"}
            ),
            context=PROD,
        ).approval_id  # waits up to 1h, so it expires first
    with SignoffClient(approvals_address, timeout=10.0, token=both) as lee:
        listed = [a.id for a in lee.list_approvals(page_size=500) if a.id in (older, newer)]

    assert listed == [newer, older]


def test_open_watches_do_not_stall_checks(dev_identity: DevIdentity) -> None:
    token = dev_identity.token("ivan@acme.io", roles=("iam_admin",))
    with (
        serving(now="2026-03-02T23:30:00Z", authenticator=dev_identity.authenticator()) as running,
        SignoffClient(f"127.0.0.1:{running.port}", timeout=10.0, token=token) as ivan,
    ):
        # One watcher per server worker: eight pipelines waiting with guard(wait=...).
        ids = [grant(ivan) for _ in range(8)]
        refused: list[str] = []

        def watch(approval_id: str) -> None:
            try:
                list(ivan.watch_approval(approval_id, timeout=1.5))
            except SignoffRpcError as exc:  # over the server's watch cap
                refused.append(exc.code)

        watchers = [threading.Thread(target=watch, args=(i,)) for i in ids]
        for watcher in watchers:
            watcher.start()
        time.sleep(0.3)
        try:
            decision = ivan.check(
                principal=ALICE,
                action="read",
                resource=Resource("customer_table", "crm.customers", {"tenant": "acme"}),
                context=PROD,
                payload={"row_limit": 5},
                timeout=0.5,
            )
        finally:
            for watcher in watchers:
                watcher.join(5)

    assert decision.verdict is Verdict.ALLOW
    # The harness serves with 8 workers, a cap of 4 watches, and 2 per caller.
    assert refused == ["RESOURCE_EXHAUSTED"] * 6
