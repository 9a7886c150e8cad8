"""Per-decision CPU time in-process: signoff's Engine.decide vs cedarpy.is_authorized, same cases.

Both engines get their policies compiled once, then one decision per call with the request's
data handed over as plain Python values (signoff: a `Request` whose attributes are dicts;
Cedar: the request and its entities as lists of dicts); that pair gives the ratio. More Cedar
figures show what its options cost: a case's three actions in one `is_authorized_batch` call
(entities converted once), entities pre-parsed into an `Entities` handle (engine time only),
and the policy text passed on every call (cedarpy then parses the policies on each call).
All of them take turns within each round (A B A B), and the medians of the rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from bench import targets, workload
from signoff.engine.evaluator import Engine
from signoff.engine.model import Principal, PrincipalKind, Request, Resource, Verdict
from signoff.policy.loader import load_bundle

Check = tuple[workload.Case, str]


def signoff_request(p: workload.Principal, r: workload.Resource, action: str) -> Request:
    return Request(
        principal=Principal(p.id, PrincipalKind.HUMAN, p.roles, p.attr()),
        action=action,
        resource=Resource(r.kind, r.id, r.attr()),
    )


def _alternating_us(
    runs: Sequence[tuple[Callable[[], None], int, int]], repeats: int
) -> list[float]:
    """Per (run, decisions, passes): the median CPU µs per decision over `repeats` rounds,
    the runs taking turns within each round (A B A B), so load from other processes falls
    on all of them alike."""
    for run, _, _ in runs:
        run()  # warm caches
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, (run, decisions, passes) in enumerate(runs):
            start = time.process_time()
            for _ in range(passes):
                run()
            samples[i].append((time.process_time() - start) / (passes * decisions) * 1e6)
    return [statistics.median(s) for s in samples]


@dataclass(frozen=True)
class Figures:
    """µs per decision (medians) and the signoff/Cedar ratio."""

    label: str
    decisions: int
    signoff_us: float
    cedar_us: float  # policies pre-parsed, entities as dicts per call
    cedar_entities_preparsed_us: float
    cedar_policy_text_us: float  # policies re-parsed per call
    cedar_batch_us: float  # is_authorized_batch: a case's three actions in one call

    @property
    def ratio(self) -> float:
        return self.signoff_us / self.cedar_us

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.label,
            "decisions_per_pass": self.decisions,
            "signoff_us": self.signoff_us,
            "cedar_us": self.cedar_us,
            "cedar_entities_preparsed_us": self.cedar_entities_preparsed_us,
            "cedar_policy_text_us": self.cedar_policy_text_us,
            "cedar_batch_us": self.cedar_batch_us,
            "signoff_over_cedar": self.ratio,
        }


def measure(
    rules_total: int = 30,
    repeats: int = 7,
    passes: int = 3,
    backend: str = "cel-expr",
    quick: bool = False,
) -> list[Figures]:
    """Figures for every case of the workload and for the hot case alone; answers verified
    (every case, also when `quick` times only a sample of them)."""
    all_cases = workload.cases(rules_total)
    policy_text = workload.cedar_policies(rules_total)
    policy_set = cedarpy.PolicySet.from_str(policy_text)
    with tempfile.TemporaryDirectory() as tmp:
        workload.write_signoff_rules(Path(tmp), rules_total)
        engine = Engine(load_bundle(Path(tmp), backend=backend))
    _verify(engine, policy_set, all_cases)
    timed = all_cases[:: max(1, len(all_cases) // 40)] if quick else all_cases
    out = []
    for label, chosen, n in (
        ("all cases", timed, passes),
        ("hot case", [workload.hot_case()], passes * (5 if quick else 200)),
    ):
        checks = [(c, a) for c in chosen for a in c.actions]
        reqs = [signoff_request(c.principal, c.resource, a) for c, a in checks]
        cedar = [
            (
                workload.cedar_request(c.principal, c.resource, a),
                workload.cedar_entities(c.principal, c.resource),
            )
            for c, a in checks
        ]
        handles = [(req, cedarpy.Entities.from_json_str(json.dumps(ents))) for req, ents in cedar]

        by_case = [
            (
                [workload.cedar_request(c.principal, c.resource, a) for a in c.actions],
                workload.cedar_entities(c.principal, c.resource),
            )
            for c in chosen
        ]
        sample = cedar[::20]  # re-parsing is slow: fewer calls, same per-call figure

        def run_signoff(reqs: Sequence[Request] = reqs) -> None:
            for req in reqs:
                engine.decide(req)

        def run_cedar(items: Sequence[tuple[Any, Any]] = cedar, policies: Any = policy_set) -> None:
            for req, ents in items:
                cedarpy.is_authorized(req, policies, ents)

        def run_cedar_batch(items: Sequence[tuple[Any, Any]] = by_case) -> None:
            for reqs_of_case, ents in items:
                cedarpy.is_authorized_batch(reqs_of_case, policy_set, ents)

        def run_cedar_handles(items: Sequence[tuple[Any, Any]] = handles) -> None:
            run_cedar(items)

        def run_cedar_text(items: Sequence[tuple[Any, Any]] = sample) -> None:
            run_cedar(items, policy_text)

        d = len(checks)
        figures = _alternating_us(
            [
                (run_signoff, d, n),
                (run_cedar, d, n),
                (run_cedar_handles, d, n),
                (run_cedar_text, len(sample), max(1, n // 10)),
                (run_cedar_batch, d, n),
            ],
            repeats,
        )
        out.append(Figures(label, d, *figures))
    return out


def _verify(engine: Engine, policy_set: cedarpy.PolicySet, all_cases: list[workload.Case]) -> None:
    wrong = []
    for case in all_cases:
        for action, want in case.expected:
            s = engine.decide(signoff_request(case.principal, case.resource, action)).verdict
            got_s = workload.ALLOW if s is Verdict.ALLOW else s.name
            c = cedarpy.is_authorized(
                workload.cedar_request(case.principal, case.resource, action),
                policy_set,
                workload.cedar_entities(case.principal, case.resource),
            )
            got_c = workload.ALLOW if c.allowed else workload.DENY
            if got_s != want or got_c != want:
                wrong.append(
                    f"{case.name} {action}: expected {want}, signoff {got_s}, Cedar {got_c}"
                )
    if wrong:
        raise workload.Disagreement(
            f"{len(wrong)} in-process answers disagree:\n  " + "\n  ".join(wrong[:40])
        )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--passes", type=int, default=3, help="passes over all cases per repeat")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, every answer checked")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.passes = 2, 1
    figures = measure(args.rules, args.repeats, args.passes, quick=args.quick)
    print(
        f"in-process CPU µs per decision, median of {args.repeats} alternating rounds; "
        f"{args.rules} rules; "
        f"cedarpy {_cedarpy_version()}"
    )
    print(
        f"{'workload':<10} {'decisions':>9} {'signoff':>9} {'Cedar':>9} {'signoff/Cedar':>14} "
        f"{'Cedar 3 per call':>17} {'Cedar entities pre-parsed':>26} "
        f"{'Cedar policy text per call':>27}"
    )
    for f in figures:
        print(
            f"{f.label:<10} {f.decisions:>9} {f.signoff_us:>9.1f} {f.cedar_us:>9.1f} "
            f"{f.ratio:>13.2f}x {f.cedar_batch_us:>17.1f} {f.cedar_entities_preparsed_us:>26.1f} "
            f"{f.cedar_policy_text_us:>27.1f}"
        )
    return [f.as_dict() for f in figures]


LIMIT = 0.5


def section(quick: bool = False) -> targets.Section:
    """The in-process target: Engine.decide against cedarpy over every workload case."""
    figures = measure(repeats=2 if quick else 7, passes=1 if quick else 3, quick=quick)
    every = figures[0]
    target = targets.ratio_target(
        "in-process decision, 30 rules, vs cedarpy",
        every.signoff_us,
        every.cedar_us,
        "µs",
        LIMIT,
        at_most=True,
    )
    rows = [
        "| workload | decisions | signoff µs | Cedar µs | signoff/Cedar | Cedar 3 per call µs |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {f.label} | {f.decisions} | {f.signoff_us:.1f} | {f.cedar_us:.1f} | "
            f"{f.ratio:.2f}x | {f.cedar_batch_us:.1f} |"
            for f in figures
        ),
    ]
    return targets.Section(
        "In-process decisions",
        [target],
        "\n".join(rows),
        {"figures": [f.as_dict() for f in figures]},
    )


def _cedarpy_version() -> str:
    from importlib.metadata import version

    return version("cedarpy")


if __name__ == "__main__":
    main()
