"""Properties: compile fails only with PolicyError; verdicts ignore order; deny is monotone."""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.engine.evaluator import Engine
from signoff.engine.model import FieldRef, Principal, PrincipalKind, Request, Resource, Verdict
from signoff.errors import PolicyError
from signoff.policy.loader import load_bundle

SCHEMA = {"principal": {"tenant": "string", "level": "int"}, "resource": {"tenant": "string"}}
CONDITIONS = [
    "true",
    "false",
    "principal.attr.level > 2",
    "principal.attr.tenant == resource.attr.tenant",
    "'admin' in principal.roles",
    "principal.attr.missing_in_request == 'x'",  # declared below but never sent: errors
    "principal.kind == 'agent'",
]
SCHEMA["principal"]["missing_in_request"] = "string"
EFFECTS = ["allow", "deny", "mask", "require_approval"]

rule_st = st.tuples(st.sampled_from(EFFECTS), st.sampled_from(CONDITIONS))
request_st = st.builds(
    lambda level, roles, kind, same: Request(
        principal=Principal(
            "u",
            kind,
            roles,
            {"tenant": "a", "level": level},
        ),
        action="read",
        resource=Resource("db", "1", {"tenant": "a" if same else "b"}, (FieldRef("e", ("pii",)),)),
    ),
    st.integers(0, 5),
    st.sampled_from([(), ("admin",), ("viewer",)]),
    st.sampled_from(list(PrincipalKind)),
    st.booleans(),
)


def _rule(i: int, effect: str, when: str) -> dict[str, object]:
    rule: dict[str, object] = {"id": f"r{i}", "effect": effect, "when": when, "reason": f"r{i}"}
    if effect == "mask":
        rule["mask"] = [{"tags": ["pii"], "operator": ["redact", "hash", "email"][i % 3]}]
    if effect == "require_approval":
        rule["approval"] = {"approvers": {"roles": [f"boss{i % 2}"]}, "quorum": 1 + i % 3}
    return rule


def _bundle_dir(rules: list[dict[str, object]], files: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="signoff-prop-"))
    (root / "schema.yaml").write_text(yaml.safe_dump({"schema": SCHEMA}))
    chunks = [rules[i::files] for i in range(files)]
    for n, chunk in enumerate(chunks):
        if chunk:
            doc = {
                "policies": [
                    {"id": f"p{n}", "resources": ["db"], "actions": ["read"], "rules": chunk}
                ]
            }
            (root / f"f{n}.yaml").write_text(yaml.safe_dump(doc))
    return root


def _decide(rules: list[dict[str, object]], request: Request, files: int = 1) -> tuple[object, ...]:
    root = _bundle_dir(rules, files)
    try:
        d = Engine(load_bundle(root)).decide(request)
    finally:
        shutil.rmtree(root)
    # Rule ids embed the policy (file) they sit in; compare what the caller acts on.
    return (
        d.verdict,
        d.masking_plan and tuple((m.path, m.op) for m in d.masking_plan),
        d.approval and (d.approval.quorum, d.approval.approvers, d.approval.pending_ttl),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rule_st, min_size=1, max_size=6), request_st, st.randoms(use_true_random=False))
def test_rule_and_file_order_never_change_the_answer(
    specs: list[tuple[str, str]], request: Request, rnd: random.Random
) -> None:
    rules = [_rule(i, e, w) for i, (e, w) in enumerate(specs)]
    shuffled = rules[:]
    rnd.shuffle(shuffled)
    assert _decide(rules, request) == _decide(shuffled, request, files=rnd.randint(1, 3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rule_st, min_size=1, max_size=5), st.sampled_from(CONDITIONS), request_st)
def test_adding_a_deny_rule_never_turns_deny_into_anything_else(
    specs: list[tuple[str, str]], deny_when: str, request: Request
) -> None:
    rules = [_rule(i, e, w) for i, (e, w) in enumerate(specs)]
    before = _decide(rules, request)[0]
    after = _decide([*rules, _rule(99, "deny", deny_when)], request)[0]
    if before is Verdict.DENY:
        assert after is Verdict.DENY
    assert after is Verdict.DENY or after is before


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
cel_text = st.text(
    alphabet=st.sampled_from(list("principal.attr()&|!=<>'\"[]{}+-*/ 0123.xyzV")), max_size=40
)


def _policy_doc(when: str, extra: object) -> object:
    return {
        "policies": [
            {
                "id": "p",
                "resources": ["db"],
                "actions": ["read"],
                "rules": [{"id": "r", "effect": "allow", "when": when}],
            }
        ],
        "schema": extra,
    }


@settings(max_examples=150, deadline=None)
@given(st.one_of(yaml_values, st.builds(_policy_doc, cel_text, yaml_values)), st.text(max_size=60))
def test_compile_raises_only_policy_error(doc: object, raw: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="signoff-fuzz-"))
    try:
        (root / "a.yaml").write_text(yaml.safe_dump(doc))
        (root / "b.yaml").write_text(raw)
        problems = None
        try:
            load_bundle(root)
        except PolicyError as exc:  # anything else propagates and fails the test
            problems = exc.problems
        if problems is not None:
            assert problems
            assert all(p.file.endswith(".yaml") for p in problems)
    finally:
        shutil.rmtree(root)


def test_permutations_of_a_small_bundle_agree() -> None:
    rules = [_rule(i, e, "true") for i, e in enumerate(EFFECTS)]
    request = Request(
        Principal("u", PrincipalKind.HUMAN),
        "read",
        Resource("db", "1", {}, (FieldRef("e", ("pii",)),)),
    )
    answers = {_decide(list(p), request) for p in itertools.permutations(rules)}
    assert len(answers) == 1
