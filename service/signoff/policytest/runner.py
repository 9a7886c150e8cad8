"""Runs policy suites on every CEL backend and reports each case, any disagreement, and totals."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from signoff.engine.cel import BACKENDS, CelEvalError
from signoff.engine.compiled import Bundle
from signoff.engine.evaluator import Engine
from signoff.engine.model import Decision, MaskOp, Verdict
from signoff.errors import InvalidRequest, PolicyError, Problem
from signoff.policy.lint import item_locations
from signoff.policy.loader import load_bundle
from signoff.policytest import junit as junit_xml
from signoff.policytest.suite import (
    Case,
    Expectation,
    MalformedSuite,
    Suite,
    SuiteError,
    parse_suite,
    suite_files,
)

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


@dataclass
class BackendOutcome:
    """One case on one backend: the decision (or why there is none) and what did not match."""

    backend: str
    decision: Decision | None
    error: str = ""
    mismatches: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """What must be identical across backends (reasons excluded: they are prose)."""
        if self.decision is None:
            return f"error: {self.error}"
        return describe(self.decision, with_reasons=False)


@dataclass
class CaseResult:
    case: Case
    outcomes: list[BackendOutcome]
    seconds: float

    @property
    def disagree(self) -> bool:
        return len({o.fingerprint for o in self.outcomes}) > 1

    @property
    def passed(self) -> bool:
        return not self.disagree and all(not o.mismatches for o in self.outcomes)

    def failure_lines(self) -> list[str]:
        """Why the case failed, grouped by backend when backends fail the same way."""
        lines: list[str] = []
        groups: dict[tuple[str, ...], list[str]] = {}
        for o in self.outcomes:
            if o.mismatches:
                groups.setdefault(tuple(o.mismatches), []).append(o.backend)
        for mismatches, backends in groups.items():
            lines.append(f"on {', '.join(backends)}:")
            lines.extend(f"  {m}" for m in mismatches)
        if self.disagree:
            lines.append("backends disagree:")
            width = max(len(o.backend) for o in self.outcomes) + 1
            for o in self.outcomes:
                lines.append(f"  {o.backend + ':':<{width}} {o.fingerprint}")
        return lines


@dataclass
class SuiteResult:
    suite: Suite
    cases: list[CaseResult]


@dataclass
class Coverage:
    """Which rules the cases exercised and which derived roles they made true, on any backend.

    A rule is exercised when some case's explanation shows it MATCHED where it counts: in the
    decision, or (audit-only shadow rules) in the shadow verdict. The union over the backends
    that ran is taken; a passing run has the backends agreeing, so it is the same on each.
    """

    backends: tuple[str, ...]
    rules: tuple[str, ...]
    derived_roles: tuple[str, ...]
    # `file:line` of each rule and of each derived role (`derived_role:<name>`).
    locations: Mapping[str, str]
    exercised: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)

    @property
    def percent(self) -> float:
        if not self.rules:
            return 100.0  # nothing to exercise
        return 100.0 * len(self.exercised & set(self.rules)) / len(self.rules)

    @property
    def missed(self) -> list[str]:
        return [r for r in self.rules if r not in self.exercised]

    @property
    def never_held(self) -> list[str]:
        return [r for r in self.derived_roles if r not in self.held]

    def where(self, key: str) -> str:
        return self.locations.get(key, "?")

    def record(self, engine: Engine, case: Case, decision: Decision) -> None:
        self.exercised.update(_matched(decision))
        self._record_roles(engine, case)

    def _record_roles(self, engine: Engine, case: Case) -> None:
        """Derived roles true in this case, among those its candidate rules select on."""
        request = case.request
        wanted = {
            name
            for rule in engine.candidates(request.resource.kind, request.action)
            for name in rule.derived_roles
            if name not in self.held
        }
        if not wanted:
            return
        activation = engine.bundle.backend.activation(engine.activation_data(request, at=case.now))
        roles = frozenset(request.principal.roles)
        for name in sorted(wanted):
            try:
                if engine.holds_derived(name, roles, activation):
                    self.held.add(name)
            except CelEvalError:
                pass  # an error is not holding the role; the case reports the failure itself


# --- comparing -------------------------------------------------------------------------------


def _name(value: Verdict | MaskOp) -> str:
    return value.name.lower()


def format_duration(value: dt.timedelta) -> str:
    """A timedelta in the policy-file syntax: 1h30m, 15m, 45s."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def _list(items: Sequence[str] | frozenset[str]) -> str:
    return "[" + ", ".join(sorted(items)) + "]"


def describe(decision: Decision, *, with_reasons: bool = True) -> str:
    """A one-line summary of a decision, stable enough to compare across backends."""
    parts = [_name(decision.verdict), f"rules={_list(decision.matched_rules)}"]
    if decision.masking_plan:
        masks = ", ".join(
            f"{m.path}: {_mask_text(m.op, m.keep_first, m.keep_last)}"
            for m in decision.masking_plan
        )
        parts.append(f"masked={{{masks}}}")
    if decision.approval is not None:
        a = decision.approval
        sets = "; ".join(_approver_text(s.roles, s.groups) for s in a.approvers)
        parts.append(
            f"approval=(quorum {a.quorum} of {sets}, pending {format_duration(a.pending_ttl)}, "
            f"grant {format_duration(a.grant_ttl)})"
        )
    if decision.errored_rules:
        parts.append(f"errored={_list(decision.errored_rules)}")
    if with_reasons and decision.reasons:
        parts.append(f"reasons={list(decision.reasons)}")
    return " ".join(parts)


def _mask_text(op: MaskOp, keep_first: int | None, keep_last: int | None) -> str:
    text = _name(op)
    extra = [f"{k}={v}" for k, v in (("keep_first", keep_first), ("keep_last", keep_last)) if v]
    return f"{text}({', '.join(extra)})" if extra else text


def _approver_text(roles: Sequence[str], groups: Sequence[str]) -> str:
    parts = []
    if roles:
        parts.append(f"roles {_list(roles)}")
    if groups:
        parts.append(f"groups {_list(groups)}")
    return " + ".join(parts) or "nobody"


def _set_diff(what: str, expected: frozenset[str], actual: Sequence[str]) -> list[str]:
    got = frozenset(actual)
    if expected == got:
        return []
    details = []
    if missing := expected - got:
        details.append(f"missing {_list(missing)}")
    if extra := got - expected:
        details.append(f"unexpected {_list(extra)}")
    return [
        f"{what}: expected {_list(expected)}, got {_list(got)} ({'; '.join(details)})",
    ]


def compare(expect: Expectation, decision: Decision) -> list[str]:
    """Human-readable differences between an expectation and a decision (empty: it matches)."""
    out: list[str] = []
    if decision.verdict is not expect.verdict:
        out.append(f"verdict: expected {_name(expect.verdict)}, got {_name(decision.verdict)}")
    if expect.rules is not None:
        out += _set_diff("rules", expect.rules, decision.matched_rules)
    if expect.errored is not None:
        out += _set_diff("errored rules", expect.errored, decision.errored_rules)
    if expect.reasons is not None:
        for reason in expect.reasons:
            if reason not in decision.reasons:
                out.append(f"reasons: expected {reason!r} among {list(decision.reasons)}")
    if expect.masked is not None:
        plan = {m.path: m for m in decision.masking_plan}
        for path in sorted(set(expect.masked) | set(plan)):
            want, got = expect.masked.get(path), plan.get(path)
            want_text = (
                _mask_text(want.op, want.keep_first, want.keep_last) if want else "(unmasked)"
            )
            if got is None:
                if want is not None:
                    out.append(f"masked {path}: expected {want_text}, got (unmasked)")
                continue
            got_text = _mask_text(got.op, got.keep_first, got.keep_last)
            if (
                want is None
                or want.op is not got.op
                or (want.keep_first is not None and want.keep_first != got.keep_first)
                or (want.keep_last is not None and want.keep_last != got.keep_last)
            ):
                out.append(f"masked {path}: expected {want_text}, got {got_text}")
    if expect.approval is not None:
        out += _compare_approval(expect, decision)
    if out:
        out.append(f"actual: {describe(decision)}")
    return out


def _compare_approval(expect: Expectation, decision: Decision) -> list[str]:
    want = expect.approval
    assert want is not None
    got = decision.approval
    if got is None:
        return ["approval: expected an approval requirement, got none"]
    out: list[str] = []
    if want.approvers is not None:
        got_sets = {(tuple(sorted(s.roles)), tuple(sorted(s.groups))) for s in got.approvers}
        if got_sets != want.approvers:
            w = "; ".join(sorted(_approver_text(r, g) for r, g in want.approvers))
            a = "; ".join(sorted(_approver_text(r, g) for r, g in got_sets))
            out.append(f"approval approvers: expected {w}, got {a}")
    if want.quorum is not None and want.quorum != got.quorum:
        out.append(f"approval quorum: expected {want.quorum}, got {got.quorum}")
    for name, w_ttl, g_ttl in (
        ("pending_ttl", want.pending_ttl, got.pending_ttl),
        ("grant_ttl", want.grant_ttl, got.grant_ttl),
    ):
        if w_ttl is not None and w_ttl != g_ttl:
            out.append(
                f"approval {name}: expected {format_duration(w_ttl)}, got {format_duration(g_ttl)}"
            )
    if want.rules is not None:
        out += _set_diff("approval rules", want.rules, got.rule_ids)
    return out


# --- running ---------------------------------------------------------------------------------


def _run_case(
    case: Case,
    engines: dict[str, Engine],
    coverage: Coverage | None = None,
) -> CaseResult:
    started = time.perf_counter()
    outcomes: list[BackendOutcome] = []
    request = case.request
    for backend, engine in engines.items():
        try:
            decision = engine.decide(request, at=case.now)
        except InvalidRequest as exc:
            message = f"request rejected: {exc}"
            outcomes.append(BackendOutcome(backend, None, message, [message]))
            continue
        except Exception as exc:  # an engine bug: report it on this case, run the others
            message = f"engine raised {type(exc).__name__}: {exc}"
            outcomes.append(BackendOutcome(backend, None, message, [message]))
            continue
        if coverage is not None:
            coverage.record(engine, case, decision)
        outcomes.append(BackendOutcome(backend, decision, "", compare(case.expect, decision)))
    return CaseResult(case, outcomes, time.perf_counter() - started)


def _load(
    rules_dir: Path, backends: Sequence[str]
) -> tuple[dict[str, Bundle], list[tuple[Problem, list[str]]]]:
    """One bundle per backend, or every problem (each once, with the backends reporting it)."""
    bundles: dict[str, Bundle] = {}
    problems: dict[Problem, list[str]] = {}
    for backend in backends:
        try:
            bundles[backend] = load_bundle(rules_dir, backend=backend)
        except PolicyError as exc:
            for problem in exc.problems:
                problems.setdefault(problem, []).append(backend)
    return bundles, sorted(problems.items())


def _matched(decision: Decision) -> tuple[str, ...]:
    """Enforced rules that matched, and shadow rules that would have (kept apart otherwise)."""
    shadow = decision.shadow.matched_rules if decision.shadow is not None else ()
    return decision.matched_rules + shadow


def _all_rules(bundle: Bundle) -> set[str]:
    return {rule.rule_id for policy in bundle.policies for rule in policy.rules}


def _new_coverage(rules_dir: Path, bundles: dict[str, Bundle]) -> Coverage:
    found = item_locations(rules_dir)
    return Coverage(
        backends=tuple(bundles),
        rules=tuple(sorted(set().union(*(_all_rules(b) for b in bundles.values())))),
        derived_roles=tuple(sorted({n for b in bundles.values() for n in b.derived_roles})),
        locations={key: f"{file}:{line}" for key, (file, line) in found.items()},
    )


def _print_coverage(coverage: Coverage, min_coverage: float | None, out: TextIO) -> bool:
    """Print the coverage section; False when it is under `min_coverage`."""
    exercised = len(coverage.rules) - len(coverage.missed)
    print(
        f"coverage: {exercised} of {len(coverage.rules)} rule(s) exercised "
        f"({coverage.percent:.1f}%) on {', '.join(coverage.backends)}",
        file=out,
    )
    for rule in coverage.missed:
        print(f"  not exercised: {rule}  ({coverage.where(rule)})", file=out)
    for name in coverage.never_held:
        where = coverage.where(f"derived_role:{name}")
        print(f"  derived role never held: {name}  ({where})", file=out)
    if min_coverage is not None and coverage.percent < min_coverage:
        print(
            f"error: rule coverage {coverage.percent:.1f}% is below the minimum of "
            f"{min_coverage:g}%",
            file=out,
        )
        return False
    return True


def run_suites(
    rules_dir: Path,
    *,
    junit: Path | None = None,
    backends: Sequence[str] = BACKENDS,
    out: TextIO = sys.stdout,
    coverage: bool = False,
    min_coverage: float | None = None,
) -> int:
    """Run every `*_test.yaml` suite under `rules_dir` against the bundle on each backend.

    Returns 0 when every case passes on every backend (and the backends agree), 1 when any case
    fails or rule coverage is under `min_coverage` (a percentage, which implies `coverage`),
    2 when the bundle does not load or a suite file is malformed.
    """
    rules_dir = Path(rules_dir)
    started = time.perf_counter()

    def fatal(title: str, lines: list[str]) -> int:
        print(title, file=out)
        for line in lines:
            print(f"  {line}", file=out)
        if junit is not None:
            _write_junit(junit, junit_xml.error_report(title, lines), out)
        return EXIT_ERROR

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        return fatal(
            "error: unknown CEL backend",
            [f"{', '.join(unknown) or '(none given)'}; choose from {', '.join(BACKENDS)}"],
        )
    backends = list(dict.fromkeys(backends))
    if not rules_dir.is_dir():
        return fatal("error: rules directory not found", [str(rules_dir)])

    suites: list[Suite] = []
    suite_problems: list[SuiteError] = []
    for path in suite_files(rules_dir):
        try:
            suites.append(parse_suite(path))
        except MalformedSuite as exc:
            suite_problems.extend(exc.problems)
    if suite_problems:
        return fatal(
            f"error: {len(suite_problems)} problem(s) in suite files",
            [str(p) for p in suite_problems],
        )
    if not suites:
        return fatal(f"error: no suites (*_test.yaml) under {rules_dir}", [])

    bundles, problems = _load(rules_dir, backends)
    if problems:
        lines = []
        for problem, failing in problems:
            only = f"  (only on {', '.join(failing)})" if len(failing) < len(backends) else ""
            lines.append(f"{problem}{only}")
        return fatal(f"error: policy bundle has {len(problems)} problem(s)", lines)

    revision = next(iter(bundles.values())).revision
    print(
        f"signoff test {rules_dir}: {sum(len(s.cases) for s in suites)} case(s) in "
        f"{len(suites)} suite(s) on {', '.join(backends)}; revision {revision[:12]}",
        file=out,
    )
    engines = {backend: Engine(bundle) for backend, bundle in bundles.items()}

    tracker = None
    if coverage or min_coverage is not None:
        tracker = _new_coverage(rules_dir, bundles)
    results: list[SuiteResult] = []
    for suite in suites:
        print(f"\n{suite.name}  ({suite.file})", file=out)
        suite_result = SuiteResult(suite, [])
        for case in suite.cases:
            result = _run_case(case, engines, tracker)
            suite_result.cases.append(result)
            _print_case(result, out)
        results.append(suite_result)

    passed = sum(r.passed for s in results for r in s.cases)
    failed = sum(not r.passed for s in results for r in s.cases)
    disagreements = sum(r.disagree for s in results for r in s.cases)

    matched = {
        rule
        for s in results
        for r in s.cases
        for o in r.outcomes
        if o.decision is not None
        for rule in _matched(o.decision)
    }
    never = sorted(set().union(*(_all_rules(b) for b in bundles.values())) - matched)
    print("", file=out)
    covered = True
    if tracker is not None:
        covered = _print_coverage(tracker, min_coverage, out)
    elif never:
        print(f"warning: {len(never)} rule(s) not matched by any case:", file=out)
        for rule in never:
            print(f"  {rule}", file=out)
    summary = f"{passed} passed, {failed} failed"
    if disagreements:
        summary += f" ({disagreements} with backends disagreeing)"
    print(f"{summary} in {time.perf_counter() - started:.2f}s", file=out)

    if junit is not None:
        report = junit_xml.case_report(
            results, backends, revision, coverage=tracker, min_coverage=min_coverage
        )
        if not _write_junit(junit, report, out):
            return EXIT_ERROR
    return EXIT_PASSED if failed == 0 and covered else EXIT_FAILED


def _print_case(result: CaseResult, out: TextIO) -> None:
    case = result.case
    if result.passed:
        verdict = _name(case.expect.verdict)
        print(f"  PASS  {case.name}  [{verdict}]", file=out)
        return
    print(f"  FAIL  {case.name}  ({case.location})", file=out)
    for line in result.failure_lines():
        print(f"          {line}", file=out)


def _write_junit(path: Path, document: bytes, out: TextIO) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(document)
    except OSError as exc:
        print(f"error: cannot write JUnit report {path}: {exc}", file=out)
        return False
    print(f"JUnit report written to {path}", file=out)
    return True
