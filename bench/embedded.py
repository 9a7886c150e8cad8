"""Embedded decisions (signoff.client.embedded) against cedarpy in-process, same 30-rule cases.

The embedded decider holds the signed bundle fetched from a real signoff server and decides in
this process; each decision hands its audit record (a tuple) to the shipping thread, which is
part of the measured call. cedarpy gets its policies pre-parsed and the request and entities
as plain values, as in bench/inprocess.py. The two alternate A B A B within one run; the
medians give the ratio. The shipping thread's own work (building each record's audit view,
JSON, the batched RPC, and here also the in-process service ingesting and chaining them) is
measured separately, with its flush, and reported beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cedarpy
import grpc
import redis

from bench import targets, workload
from bench.inprocess import signoff_request
from signoff.audit import AuditConfig, AuditLog, audit_key
from signoff.bundles.keys import generate_keys
from signoff.bundles.signing import sign_bundle
from signoff.client.embedded import EmbeddedDecider
from signoff.client.types import CheckItem, Principal, Resource
from signoff.engine.evaluator import Engine
from signoff.engine.model import Verdict
from signoff.policy.loader import load_bundle
from signoff.server import app
from signoff.server.embedded import Embedded
from signoff.views import Views

REDIS_URL = "redis://127.0.0.1:6379/0"
HASH_KEY = b"signoff-bench-embedded-hash-key-0123456789"
LIMIT = 0.3


@contextmanager
def _service(tmp: Path, rules_total: int) -> Iterator[tuple[EmbeddedDecider, AuditLog]]:
    """A real server handing out a signed bundle of the workload, and a decider on it."""
    rules = tmp / "rules"
    rules.mkdir()
    workload.write_signoff_rules(rules, rules_total)
    private_key, public_key = generate_keys(tmp / "keys")
    bundle = tmp / "bundle.tar.gz"
    sign_bundle(rules, private_key, bundle)
    prefix = f"signoff:bench:embedded:{uuid.uuid4().hex}:"
    audit = AuditLog(
        REDIS_URL, audit_key(HASH_KEY), prefix=prefix, config=AuditConfig(batch_ms=5.0)
    )
    running = app.start(
        Engine(load_bundle(rules)),
        "127.0.0.1:0",
        hash_key_id="bench",
        audit=audit,
        views=Views(hash_key=HASH_KEY, hash_key_id="bench"),
        embedded=Embedded(bundle),
        workers=2,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    # Records are shipped when the benchmark says so, never while a loop is timed.
    decider = EmbeddedDecider(
        channel, public_key=public_key, flush_interval=3600.0, buffer_max=1_000_000
    )
    try:
        yield decider, audit
    finally:
        decider.close()
        channel.close()
        running.stop(grace=None)
        audit.close(timeout=5.0)
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def measure(quick: bool = False, rules_total: int = 30) -> dict[str, Any]:
    rounds, passes = (2, 1) if quick else (7, 4)
    cases = workload.cases(rules_total)
    if quick:
        cases = cases[:: max(1, len(cases) // 40)]
    checks = [(c, a) for c in cases for a in c.actions]
    reqs = [signoff_request(c.principal, c.resource, a) for c, a in checks]
    # The client's typed path (CheckItem in, client Decision out), on a sample.
    items = [_item(c, a) for c, a in checks[:: 1 if quick else 10]]
    policy_set = cedarpy.PolicySet.from_str(workload.cedar_policies(rules_total))
    cedar = [
        (
            workload.cedar_request(c.principal, c.resource, a),
            workload.cedar_entities(c.principal, c.resource),
        )
        for c, a in checks
    ]
    with tempfile.TemporaryDirectory() as tmp, _service(Path(tmp), rules_total) as (decider, log):
        wrong = _verify(decider, policy_set, cases)
        decider.flush()
        embedded_us, cedar_us, ship_us, ship_thread_us, check_us = [], [], [], [], []
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(passes):
                for cedar_req, ents in cedar:
                    cedarpy.is_authorized(cedar_req, policy_set, ents)
            cedar_us.append((time.process_time() - start) / (passes * len(cedar)) * 1e6)
            start = time.process_time()
            for _ in range(passes):
                for req in reqs:
                    decider.decide(req)
            embedded_us.append((time.process_time() - start) / (passes * len(reqs)) * 1e6)
            start = time.process_time()
            for item in items:
                decider.check(item)
            check_us.append((time.process_time() - start) / len(items) * 1e6)
            # The shipping thread's share: the records of this round, built and sent.
            start, start_thread = time.process_time(), time.thread_time()
            sent = decider.flush()
            ship_thread_us.append((time.thread_time() - start_thread) / max(sent, 1) * 1e6)
            ship_us.append((time.process_time() - start) / max(sent, 1) * 1e6)
        decider.close()
        stats = decider.stats()
        records = _embedded_records(log)
    made = stats.decided
    return {
        "decisions_per_pass": len(reqs),
        "rounds": rounds,
        "embedded_us": statistics.median(embedded_us),
        "cedar_us": statistics.median(cedar_us),
        "ship_us_per_record": statistics.median(ship_us),
        "ship_thread_us_per_record": statistics.median(ship_thread_us),
        "check_us": statistics.median(check_us),
        "decided": made,
        "shipped": stats.shipped,
        "dropped": stats.dropped,
        "records_in_audit_trail": records,
        "wrong": wrong,
        "cedarpy": _version("cedarpy"),
    }


def _item(case: workload.Case, action: str) -> CheckItem:
    p, r = case.principal, case.resource
    return CheckItem(
        Principal(p.id, "human", p.roles, p.attr()), action, Resource(r.kind, r.id, r.attr())
    )


def _verify(decider: EmbeddedDecider, policy_set: Any, cases: list[workload.Case]) -> list[str]:
    wrong = []
    for case in cases:
        for action, want in case.expected:
            decision, _ = decider.decide(signoff_request(case.principal, case.resource, action))
            got = workload.ALLOW if decision.verdict is Verdict.ALLOW else decision.verdict.name
            cedar = cedarpy.is_authorized(
                workload.cedar_request(case.principal, case.resource, action),
                policy_set,
                workload.cedar_entities(case.principal, case.resource),
            )
            got_c = workload.ALLOW if cedar.allowed else workload.DENY
            if got != want or got_c != want:
                wrong.append(
                    f"{case.name} {action}: expected {want}, embedded {got}, Cedar {got_c}"
                )
    return wrong


def _embedded_records(log: AuditLog) -> int:
    if not log.flush(10.0):
        return -1
    out = io.StringIO()
    log.export("decisions", None, None, out)
    lines = out.getvalue().splitlines()
    return sum(1 for line in lines if json.loads(line).get("decided_by") == "embedded")


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def section(quick: bool = False) -> targets.Section:
    """The embedded-decision target: decision path incl. the record hand-off vs cedarpy."""
    m = measure(quick)
    if m["wrong"]:
        raise workload.Disagreement(
            f"{len(m['wrong'])} embedded answers disagree:\n  " + "\n  ".join(m["wrong"][:40])
        )
    if m["records_in_audit_trail"] != m["decided"] or m["dropped"]:
        raise RuntimeError(
            f"embedded records lost: {m['decided']} decided, {m['records_in_audit_trail']} in "
            f"the audit trail, {m['dropped']} dropped"
        )
    target = targets.ratio_target(
        "embedded decision incl. its audit record, 30 rules, vs cedarpy",
        m["embedded_us"],
        m["cedar_us"],
        "µs CPU",
        LIMIT,
        at_most=True,
    )
    markdown = "\n".join(
        [
            f"CPU µs per decision, medians of {m['rounds']} alternating rounds over "
            f"{m['decisions_per_pass']} decisions (cedarpy {m['cedarpy']}).",
            "",
            "| path | µs per decision |",
            "| --- | --- |",
            f"| embedded decide (engine + record hand-off) | {m['embedded_us']:.1f} |",
            f"| cedarpy is_authorized (pre-parsed policies) | {m['cedar_us']:.1f} |",
            "| embedded check(CheckItem): the service's validation and conversions around it | "
            f"{m['check_us']:.1f} |",
            "| record, on the shipping thread: audit view and JSON built, sent in batches | "
            f"{m['ship_thread_us_per_record']:.1f} |",
            "| decision and its record, all the caller's process spends (not the target) | "
            f"{m['embedded_us'] + m['ship_thread_us_per_record']:.1f} |",
            "| record, whole process: shipped, then ingested and chained by the in-process "
            f"service | {m['ship_us_per_record']:.1f} |",
            "",
            f"{m['decided']} decisions made, {m['records_in_audit_trail']} records in the "
            f"service's audit trail, {m['dropped']} dropped.",
        ]
    )
    return targets.Section("Embedded decisions", [target], markdown, m)


def main(argv: list[str] | None = None) -> targets.Section:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, answers checked")
    args = parser.parse_args(argv)
    result = section(args.quick)
    for t in result.targets:
        print(f"{t.name}: {t.measured} (limit {t.limit}) {'PASS' if t.passed else 'FAIL'}")
    print(result.markdown)
    return result


if __name__ == "__main__":
    main()
