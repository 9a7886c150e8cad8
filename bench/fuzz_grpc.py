"""Fuzz a real `signoff serve` over gRPC with random and mutated Check/CheckBatch request bytes.

Every answer must be OK or INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED or
RESOURCE_EXHAUSTED (never UNKNOWN, INTERNAL, ...), and no decision with an evaluation error may
be ALLOW or MASK. The seeds are the cases of the bundled rules' suites; the server serves the
bundled rules plus a policy whose conditions fail on some inputs, so mutated requests that
still parse reach the engine and, often enough, an evaluation error.

    python -m bench.fuzz_grpc              # 100,000 requests (at most --max-seconds)
    python -m bench.fuzz_grpc --quick      # about a second: what the test suite runs

Prints the number of requests, the status codes and verdicts seen; exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import redis
from google.protobuf import struct_pb2

from signoff.client.types import CheckItem, Context, Field, Principal, Resource
from signoff.engine import model
from signoff.policytest.suite import parse_suite, suite_files
from signoff.v1 import signoff_pb2 as pb
from tests.server.harness import KEY, REDIS_URL, drop_prefix, serve_process

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
CHECK = "/signoff.v1.DecisionService/Check"
BATCH = "/signoff.v1.DecisionService/CheckBatch"
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
ALLOWED_VALUES = frozenset(code.value[0] for code in ALLOWED)
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
VERDICT_NAMES = {value: name for name, value in pb.Verdict.items()}

# Conditions that fail to evaluate on some inputs (an absent attribute, a division by zero, an
# integer overflow), in environment "fuzz" only, so the suites' requests mostly decide normally.
ERRORING_POLICY = """
policies:
  - id: fuzz-errors
    description: Conditions that fail on some inputs, so the fuzzer reaches evaluation errors.
    resources: [customer_table, iam_role, infra.k8s_deployment]
    actions: [read, export, grant_role, deploy]
    rules:
      - id: allow-by-ratio
        effect: allow
        when: context.environment == 'fuzz' && 1000 / (payload.row_limit - 20) > 0
        reason: fuzz ratio
      - id: mask-by-owner
        effect: mask
        when: context.environment == 'fuzz' && principal.attr.owner.endsWith('@acme.io')
        reason: fuzz owner
        mask:
          - tags: [pii.email]
            operator: email
      - id: approve-by-size
        effect: require_approval
        when: context.environment == 'fuzz' && payload.row_limit * 1000000000000 > 5
        reason: fuzz size
        approval:
          approvers: {roles: [security]}
          quorum: 1
"""

ROLES = ("analyst", "data_steward", "iam_admin", "security", "sre", "deployer", "intern", "")
KINDS = ("customer_table", "iam_role", "infra.k8s_deployment", "s3_bucket", "", "x" * 600)
ACTIONS = ("read", "export", "grant_role", "deploy", "delete", "", "\u00e9\u0000")
ENVIRONMENTS = ("prod", "staging", "dev", "fuzz", "fuzz", "")
KEYS = ("tenant", "owner", "owner_mfa", "target", "row_limit", "grantee", "role", "note", "a.b")
# Declared in rules/schema.yaml, with a value of the declared type: such changes still decide.
TYPED: dict[str, Callable[[random.Random], Any]] = {
    "tenant": lambda rng: rng.choice(["acme", "globex", ""]),
    "owner": lambda rng: rng.choice(["alice@acme.io", "dana@acme.io", "bot"]),
    "owner_mfa": lambda rng: rng.random() < 0.5,
    "row_limit": lambda rng: rng.choice([0, 5, 20, 21, 100, 101, 2**40, -(2**53)]),
    "target": lambda rng: rng.choice(["s3://acme-exports/q.parquet", ""]),
    "grantee": lambda rng: rng.choice(["bob@acme.io", "ivan@acme.io"]),
    "role": lambda rng: "db-admin",
}
TAGS = ("pii.email", "pci.pan", "pii.customer_id", "secret", "")


@dataclass
class Tally:
    """What one run saw; violations keep the first few offending requests."""

    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    item_codes: Counter[str] = field(default_factory=Counter)
    errored_decisions: int = 0
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violation(self, text: str, body: bytes) -> None:
        with self.lock:
            if len(self.violations) < 20:
                self.violations.append(f"{text}; request bytes {body[:200].hex()}")


# --- seeds ---------------------------------------------------------------------------------


def seeds(rules: Path = RULES) -> list[pb.CheckRequest]:
    """One valid CheckRequest per case of the suites beside `rules`."""
    out = []
    for path in suite_files(rules):
        for case in parse_suite(path).cases:
            out.append(_proto(case.request, case.now))
    return out


def _proto(request: model.Request, now: Any) -> pb.CheckRequest:
    p, r, c = request.principal, request.resource, request.context
    item = CheckItem(
        Principal(p.id, p.kind.value, p.roles, p.attributes),
        request.action,
        Resource(r.kind, r.id, r.attributes, tuple(Field(f.path, f.tags) for f in r.fields)),
        Context(c.environment, c.time or now, c.source_ip, c.attributes),
        request.payload,
        request.approval_id,
        request.explain,
    )
    return item.to_proto()


# --- mutations -----------------------------------------------------------------------------


def _json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON-ish value: numbers include NaN, infinities and huge ones; deep nesting."""
    pick = rng.random()
    if depth > 30 or pick < 0.3:
        return rng.choice(
            [
                rng.randint(-(2**63), 2**63),
                rng.random() * 10 ** rng.randint(-5, 30),
                math.nan,
                math.inf,
                -math.inf,
                20,
                21,
                0,
            ]
        )
    if pick < 0.5:
        return rng.choice(["", "acme", "globex", "alice@acme.io", "x" * rng.randint(0, 3000)])
    if pick < 0.6:
        return rng.choice([True, False, None])
    if pick < 0.8:
        return [_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(KEYS): _json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _attributes(rng: random.Random, s: struct_pb2.Struct) -> None:
    """Drop an attribute, set a declared one to a value of its type, or set any to anything."""
    pick = rng.random()
    if s.fields and pick < 0.35:
        del s[rng.choice(list(s.fields))]
    elif pick < 0.8:
        key = rng.choice(list(TYPED))
        s[key] = TYPED[key](rng)
    else:
        s.update({rng.choice(KEYS): _json(rng)})


def _mutate_message(rng: random.Random, request: pb.CheckRequest) -> None:
    """One structural change that keeps the bytes parseable."""
    choice = rng.randrange(12)
    if choice == 0:
        _attributes(rng, request.principal.attributes)
    elif choice == 1:
        _attributes(rng, request.resource.attributes)
    elif choice == 2:
        _attributes(rng, request.context.attributes)
    elif choice in (3, 4):
        _attributes(rng, request.payload)
    elif choice == 5:
        del request.principal.roles[:]
        request.principal.roles.extend(rng.sample(ROLES, rng.randint(0, 3)))
        request.principal.kind = rng.randint(0, 4)  # type: ignore[assignment]
    elif choice == 6:
        request.action = rng.choice(ACTIONS)
    elif choice == 7:
        request.resource.kind = rng.choice(KINDS)
    elif choice == 8:
        request.context.environment = rng.choice(ENVIRONMENTS)
    elif choice == 9:
        request.context.time.seconds = rng.choice([0, -62135596801, 253402300800, 1772460000])
        request.context.time.nanos = rng.choice([0, 999_999_999, -1, 1_000_000_000])
    elif choice == 10:
        request.resource.fields.add(
            path=rng.choice(["customers.*.email", "customers..email", "", "a" * 600, "x.y"]),
            tags=rng.sample(TAGS, rng.randint(0, 2)),
        )
    else:
        request.approval_id = rng.choice(["", "apr_" + uuid.uuid4().hex, "apr_x", "z" * 600])
        request.explain = rng.random() < 0.5


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage: flips, inserts, deletions, truncation, duplicated chunks."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        at = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif choice == 2:
            del buf[at : at + rng.randint(1, 16)]
        elif choice == 3:
            del buf[at:]
        else:
            end = min(len(buf), at + rng.randint(1, 32))
            buf[at:at] = buf[at:end]
    return bytes(buf)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _check_body(rng: random.Random, pool: Sequence[pb.CheckRequest]) -> bytes:
    """A Check request body: mostly mutated seeds, some damaged bytes, a few random ones."""
    pick = rng.random()
    if pick < 0.03:
        return rng.randbytes(rng.randint(0, 64))
    request = pb.CheckRequest()
    request.CopyFrom(rng.choice(pool))
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        _mutate_message(rng, request)
    if rng.random() < 0.3:
        request.context.environment = "fuzz"  # where ERRORING_POLICY applies
    body = request.SerializeToString()
    if pick < 0.18:
        body = _mutate_bytes(rng, body)
    return body


def _batch_body(rng: random.Random, pool: Sequence[pb.CheckRequest]) -> bytes:
    """A CheckBatch body: its items are Check bodies, each a length-delimited field 1."""
    items = (_check_body(rng, pool) for _ in range(rng.randint(0, 5)))
    body = b"".join(b"\x0a" + _varint(len(item)) + item for item in items)
    return _mutate_bytes(rng, body) if rng.random() < 0.05 else body


# --- checking answers ----------------------------------------------------------------------


def _judge_decision(tally: Tally, decision: pb.CheckResponse, body: bytes) -> None:
    verdict = VERDICT_NAMES.get(decision.verdict, str(decision.verdict))
    with tally.lock:
        tally.verdicts[verdict] += 1
        if decision.errored_rules:
            tally.errored_decisions += 1
    # An evaluation error fails closed: DENY, never a verdict that lets the action go ahead.
    if decision.errored_rules and decision.verdict != pb.VERDICT_DENY:
        tally.violation(f"{verdict} with errored rules {list(decision.errored_rules)}", body)


def _send(tally: Tally, call: Callable[..., bytes], method: str, body: bytes) -> None:
    try:
        raw = call(body, timeout=30.0)
    except grpc.RpcError as error:
        code = cast(grpc.Call, error).code()
        with tally.lock:
            tally.requests += 1
            tally.codes[code.name] += 1
        if code not in ALLOWED:
            details = cast(grpc.Call, error).details()
            tally.violation(f"{method} answered {code.name}: {details}", body)
        return
    with tally.lock:
        tally.requests += 1
        tally.codes["OK"] += 1
    if method == CHECK:
        _judge_decision(tally, pb.CheckResponse.FromString(raw), body)
        return
    for result in pb.CheckBatchResponse.FromString(raw).results:
        if result.WhichOneof("outcome") == "decision":
            _judge_decision(tally, result.decision, body)
        else:
            with tally.lock:
                tally.item_codes[CODE_NAMES.get(result.error.code, str(result.error.code))] += 1
            if result.error.code not in ALLOWED_VALUES:
                tally.violation(f"batch item error {result.error.code}", body)


# --- running -------------------------------------------------------------------------------


@contextmanager
def fuzz_server() -> Iterator[int]:
    """A real `signoff serve` on the bundled rules plus ERRORING_POLICY; yields its port."""
    prefix = f"signoff:bench:fuzz:{uuid.uuid4().hex}:"
    with tempfile.TemporaryDirectory(prefix="signoff-fuzz-") as tmp:
        rules = Path(tmp) / "rules"
        shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("*_test.yaml"))
        (rules / "fuzz_errors.yaml").write_text(ERRORING_POLICY, encoding="utf-8")
        env = {
            "SIGNOFF_HASH_KEY": KEY.decode(),
            "SIGNOFF_LOG_LEVEL": "WARNING",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
        }
        try:
            with serve_process(
                "--address", "127.0.0.1:0", "--rules", str(rules), prefix=prefix, env=env
            ) as served:
                yield served.port
        finally:
            drop_prefix(redis.Redis.from_url(REDIS_URL), prefix)


def fuzz(port: int, requests: int, seconds: float, seed: int, threads: int = 4) -> Tally:
    """Send up to `requests` fuzzed requests (stopping after `seconds`) from `threads` callers."""
    pool = seeds()
    tally = Tally()
    deadline = time.monotonic() + seconds
    share = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]

    def caller(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = channel.unary_unary(CHECK, None, None)
            batch = channel.unary_unary(BATCH, None, None)
            for _ in range(share[index]):
                if time.monotonic() > deadline:
                    return
                if rng.random() < 0.8:
                    _send(tally, check, CHECK, _check_body(rng, pool))
                else:
                    _send(tally, batch, BATCH, _batch_body(rng, pool))

    with ThreadPoolExecutor(threads) as executor:
        for done in [executor.submit(caller, i) for i in range(threads)]:
            done.result()
    return tally


def report(tally: Tally, seconds: float) -> str:
    def counts(counter: Counter[str]) -> str:
        return ", ".join(f"{name} {n}" for name, n in counter.most_common()) or "none"

    lines = [
        f"requests: {tally.requests} in {seconds:.1f} s",
        f"codes: {counts(tally.codes)}",
        f"verdicts: {counts(tally.verdicts)}; with evaluation errors: {tally.errored_decisions}",
        f"batch item errors: {counts(tally.item_codes)}",
        f"violations: {len(tally.violations)}",
        *(f"  {v}" for v in tally.violations),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a second of fuzzing")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    requests, seconds = (600, 1.5) if args.quick else (args.requests, args.max_seconds)
    with fuzz_server() as port:
        started = time.monotonic()
        tally = fuzz(port, requests, seconds, args.seed)
        took = time.monotonic() - started
    print(report(tally, took), flush=True)
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
