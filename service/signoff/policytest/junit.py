"""JUnit XML for policy suites: testsuites > testsuite (a suite file) > testcase (a case)."""

from __future__ import annotations

import datetime as dt
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signoff.policytest.runner import Coverage, SuiteResult

TITLE = "signoff policy tests"


def _seconds(value: float) -> str:
    return f"{value:.6f}"


def _classname(file: str) -> str:
    """`rules/iam_test.yaml` -> `rules.iam_test`: the dotted name CI tools group by."""
    path = PurePath(file)
    parts = [p for p in path.with_suffix("").parts if p not in ("/", ".", "..")]
    return ".".join(parts)


def _stamp() -> str:
    """Now as the schema's timestamp (ISO 8601 without a zone; UTC)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat()


def _close_suite(suite_el: ET.Element) -> None:
    # The stricter JUnit schemas want both streams present on every testsuite.
    ET.SubElement(suite_el, "system-out")
    ET.SubElement(suite_el, "system-err")


def _document(root: ET.Element) -> bytes:
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def case_report(
    results: Sequence[SuiteResult],
    backends: Sequence[str],
    revision: str,
    *,
    coverage: Coverage | None = None,
    min_coverage: float | None = None,
) -> bytes:
    """One testsuite per suite file, one testcase per case (failing if any backend fails),
    and with `coverage` a last testsuite holding the coverage figures as properties."""
    stamp = _stamp()
    host = socket.gethostname() or "localhost"
    root = ET.Element("testsuites", name=TITLE)
    total_tests = total_failures = 0
    total_time = 0.0
    for index, result in enumerate(results):
        failures = sum(not c.passed for c in result.cases)
        seconds = sum(c.seconds for c in result.cases)
        suite_el = ET.SubElement(
            root,
            "testsuite",
            name=result.suite.name,
            tests=str(len(result.cases)),
            failures=str(failures),
            errors="0",
            skipped="0",
            time=_seconds(seconds),
            timestamp=stamp,
            hostname=host,
            id=str(index),
            package=_classname(result.suite.file),
        )
        props = ET.SubElement(suite_el, "properties")
        for key, value in (
            ("file", result.suite.file),
            ("backends", ",".join(backends)),
            ("policy_revision", revision),
        ):
            ET.SubElement(props, "property", name=key, value=value)
        for case_result in result.cases:
            case = case_result.case
            case_el = ET.SubElement(
                suite_el,
                "testcase",
                name=case.name,
                classname=_classname(case.file),
                time=_seconds(case_result.seconds),
            )
            if not case_result.passed:
                lines = case_result.failure_lines()
                first = next((ln.strip() for ln in lines if not ln.startswith("on ")), "failed")
                failure = ET.SubElement(
                    case_el, "failure", message=first, type="PolicyExpectationFailed"
                )
                failure.text = "\n".join([case.location, *lines])
        _close_suite(suite_el)
        total_tests += len(result.cases)
        total_failures += failures
        total_time += seconds
    if coverage is not None:
        failed = _coverage_suite(root, coverage, min_coverage, stamp, host, len(results))
        total_tests += 1
        total_failures += failed
    root.set("tests", str(total_tests))
    root.set("failures", str(total_failures))
    root.set("errors", "0")
    root.set("time", _seconds(total_time))
    return _document(root)


def _coverage_suite(
    root: ET.Element,
    coverage: Coverage,
    min_coverage: float | None,
    stamp: str,
    host: str,
    index: int,
) -> int:
    """Append the coverage testsuite; its one testcase fails under `min_coverage` (returns 1)."""
    failed = min_coverage is not None and coverage.percent < min_coverage
    suite_el = ET.SubElement(
        root,
        "testsuite",
        name="policy coverage",
        tests="1",
        failures=str(int(failed)),
        errors="0",
        skipped="0",
        time=_seconds(0),
        timestamp=stamp,
        hostname=host,
        id=str(index),
        package="signoff.coverage",
    )
    props = ET.SubElement(suite_el, "properties")
    exercised = len(coverage.rules) - len(coverage.missed)
    for key, value in (
        ("coverage_percent", f"{coverage.percent:.1f}"),
        ("rules_total", str(len(coverage.rules))),
        ("rules_exercised", str(exercised)),
        ("rules_not_exercised", ",".join(coverage.missed)),
        ("derived_roles_never_held", ",".join(coverage.never_held)),
        ("coverage_backends", ",".join(coverage.backends)),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    name = "rule coverage"
    if min_coverage is not None:
        name += f" >= {min_coverage:g}%"
    case_el = ET.SubElement(
        suite_el, "testcase", name=name, classname="signoff.coverage", time=_seconds(0)
    )
    if failed:
        message = f"rule coverage {coverage.percent:.1f}% is below the minimum of {min_coverage:g}%"
        failure = ET.SubElement(case_el, "failure", message=message, type="PolicyCoverage")
        failure.text = "\n".join(
            [message, *(f"not exercised: {r}  ({coverage.where(r)})" for r in coverage.missed)]
        )
    _close_suite(suite_el)
    return int(failed)


def error_report(title: str, lines: Sequence[str]) -> bytes:
    """A report for a run that could not start: one testcase in error, listing the problems."""
    root = ET.Element("testsuites", name=TITLE, tests="1", failures="0", errors="1", time="0")
    suite_el = ET.SubElement(
        root,
        "testsuite",
        name="policy bundle",
        tests="1",
        failures="0",
        errors="1",
        skipped="0",
        time="0",
        timestamp=_stamp(),
        hostname=socket.gethostname() or "localhost",
        id="0",
        package="signoff.bundle",
    )
    ET.SubElement(suite_el, "properties")
    case_el = ET.SubElement(suite_el, "testcase", name="load", classname="signoff.bundle", time="0")
    error = ET.SubElement(case_el, "error", message=title, type="PolicyLoadError")
    error.text = "\n".join(lines)
    _close_suite(suite_el)
    return _document(root)
