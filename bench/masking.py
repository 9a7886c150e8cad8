"""Masking throughput: apply_mask on rows against a plain dict copy, and columnar masking.

Rows: 100,000 records of 10 fields (ints, floats, booleans, strings; every value distinct),
3 of them masked. Each round times, one after the other (A B A B), a plain `dict(row)` copy of
every row, `apply_mask` on the list of rows, a compiled plan applied row by row, the reference
algorithm of docs/masking.md (what `apply_mask` did before plans were compiled) and a
hand-written masker for the same fields; the ratios to the copy are the medians of the rounds.
Two mixes: EMAIL + PARTIAL + REDACT (the target), and HASH + EMAIL + PARTIAL, where one
HMAC-SHA256 per row costs several dict copies by itself.

Columns: 500,000 values per operator through `mask_column` (pyarrow), in values per CPU second
of this process. Strings are all distinct, except the second HASH column (1,000 distinct
values, each repeated): HASH is keyed, so it runs once per distinct value, and its speed is
the number of distinct values, which the table says. Every masked value is checked against
the row path. `--quick` runs tiny sizes for the test that keeps this script working.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.targets import Section, Target, ratio_target
from signoff.client.masking import _apply_reference as reference_algorithm
from signoff.client.masking import apply_mask, compile_mask, key_id
from signoff.client.plan import MaskEntry, MaskOperator, MaskPlan

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
KEY = b"bench-masking-key-0123456789abcdef"
KEYS = {key_id(KEY): KEY}
ROW_LIMIT = 8.0  # apply_mask per row, times a dict copy
COLUMN_LIMIT = 5.0  # million values per CPU second, slowest vectorised operator

PLANS = {
    "EMAIL + PARTIAL + REDACT": MaskPlan(
        (
            MaskEntry("email", MaskOperator.EMAIL),
            MaskEntry("card", MaskOperator.PARTIAL, keep_last=4),
            MaskEntry("name", MaskOperator.REDACT),
        )
    ),
    "HASH + EMAIL + PARTIAL": MaskPlan(
        (
            MaskEntry("id", MaskOperator.HASH, key_id=key_id(KEY)),
            MaskEntry("email", MaskOperator.EMAIL),
            MaskEntry("card", MaskOperator.PARTIAL, keep_last=4),
        )
    ),
}
TARGET_MIX = "EMAIL + PARTIAL + REDACT"


def records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": 1_000_000 + i,
            "name": f"Customer {i}",
            "email": f"user.{i}@example.com",
            "phone": f"+1 555 {i % 1000:03d} {i % 10000:04d}",
            "card": f"4111 {i % 10000:04d} {i // 10000 % 10000:04d} {i % 9973:04d}",
            "country": ("DE", "FR", "US", "JP")[i % 4],
            "city": f"City {i % 500}",
            "amount": i * 1.25,
            "created": f"2026-01-{1 + i % 28:02d}T03:04:05Z",
            "active": i % 3 == 0,
        }
        for i in range(n)
    ]


_CARD_CONTENT = re.compile("[0-9A-Za-z]")


def hand_written(mix: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What a pipeline would write by hand for the mix (right for this data only)."""
    import hashlib
    import hmac

    def card(value: str) -> str:
        return _CARD_CONTENT.sub("*", value[:-4]) + value[-4:]

    def email(value: str) -> str:
        return "***@" + value.partition("@")[2]

    if mix == TARGET_MIX:

        def mask(row: dict[str, Any]) -> dict[str, Any]:
            out = dict(row)
            out["email"] = email(out["email"])
            out["card"] = card(out["card"])
            out["name"] = "[REDACTED]"
            return out

        return mask

    def mask_hash(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        digest = hmac.new(KEY, str(out["id"]).encode(), hashlib.sha256).hexdigest()
        out["id"] = "hmac-sha256:" + digest[:32]
        out["email"] = email(out["email"])
        out["card"] = card(out["card"])
        return out

    return mask_hash


def _copy_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


def _each(fn: Callable[[Any], Any], rows: list[dict[str, Any]]) -> list[Any]:
    return [fn(r) for r in rows]


def _median_ns_per_row(samples: list[float], rows: int) -> float:
    return statistics.median(samples) / rows * 1e9


def bench_rows(n: int, rounds: int) -> dict[str, Any]:
    rows = records(n)
    out: dict[str, Any] = {"rows": n, "rounds": rounds, "mixes": {}}
    for mix, plan in PLANS.items():
        compiled = compile_mask(plan, keys=KEYS)
        hand = hand_written(mix)
        rules = compiled._rules  # the reference algorithm takes the validated entries
        expected = apply_mask(rows, plan, keys=KEYS)
        # Every way must give the same answer before any of them is timed.
        assert [compiled.apply(r) for r in rows] == expected
        assert reference_algorithm(rules, rows, lenient=False) == expected
        assert [hand(r) for r in rows] == expected
        assert rows == records(n)  # the input is left as it was
        ways: dict[str, Callable[[], object]] = {
            "dict copy": functools.partial(_copy_rows, rows),
            "apply_mask(rows)": functools.partial(apply_mask, rows, plan, keys=KEYS),
            "compiled, row by row": functools.partial(_each, compiled.apply, rows),
            "hand-written": functools.partial(_each, hand, rows),
            "reference algorithm": functools.partial(
                reference_algorithm, rules, rows, lenient=False
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                start = time.process_time()
                way()
                samples[name].append(time.process_time() - start)
        ns = {name: _median_ns_per_row(s, n) for name, s in samples.items()}
        out["mixes"][mix] = {
            "ns_per_row": ns,
            "over_copy": {name: ns[name] / ns["dict copy"] for name in ns},
        }
    return out


def _columns(n: int) -> dict[str, tuple[list[Any], MaskEntry]]:
    emails = [f"user.{i}@example.com" for i in range(n)]
    return {
        "NULLIFY": (emails, MaskEntry("c", MaskOperator.NULLIFY)),
        "REDACT": (emails, MaskEntry("c", MaskOperator.REDACT)),
        "EMAIL": (emails, MaskEntry("c", MaskOperator.EMAIL)),
        "PARTIAL keep_last 4": (
            [f"4111 {i % 10000:04d} {i // 10000 % 10000:04d} {i % 9973:04d}" for i in range(n)],
            MaskEntry("c", MaskOperator.PARTIAL, keep_last=4),
        ),
        "PARTIAL 1/1, non-ASCII": (
            [f"Jürgen Müller-{i} 山田" for i in range(n)],
            MaskEntry("c", MaskOperator.PARTIAL, keep_first=1, keep_last=1),
        ),
        "HASH, all distinct": (emails, MaskEntry("c", MaskOperator.HASH, key_id=key_id(KEY))),
        "HASH, 1,000 distinct": (
            [f"user.{i % 1000}@example.com" for i in range(n)],
            MaskEntry("c", MaskOperator.HASH, key_id=key_id(KEY)),
        ),
    }


VECTORISED = ("NULLIFY", "REDACT", "EMAIL", "PARTIAL keep_last 4", "PARTIAL 1/1, non-ASCII")


def bench_columns(n: int, rounds: int) -> dict[str, Any]:
    import pyarrow as pa  # type: ignore[import-untyped]

    from signoff.client.masking_columns import mask_column

    out: dict[str, Any] = {"values": n, "rounds": rounds, "operators": {}}
    for label, (values, entry) in _columns(n).items():
        compiled = compile_mask(MaskPlan((entry,)), keys=KEYS)
        column = pa.array(values)
        masked = mask_column(column, "c", compiled)
        assert masked.to_pylist() == compiled.column("c", values), label
        samples = []
        for _ in range(rounds):
            start = time.process_time()
            mask_column(column, "c", compiled)
            samples.append(time.process_time() - start)
        seconds = statistics.median(samples)
        out["operators"][label] = {
            "million_values_per_cpu_s": n / seconds / 1e6 if seconds else float("inf"),
            "distinct": len(set(values)),
        }
    return out


def section(quick: bool = False) -> Section:
    rows = bench_rows(2_000 if quick else 100_000, 2 if quick else 5)
    try:
        columns: dict[str, Any] | None = bench_columns(
            20_000 if quick else 500_000, 2 if quick else 3
        )
    except ImportError:  # pyarrow is the client's `columns` extra
        columns = None
    mix = rows["mixes"][TARGET_MIX]["ns_per_row"]
    targets = [
        ratio_target(
            f"apply_mask, {rows['rows']:,} rows x 10 fields, {TARGET_MIX}, vs dict copy",
            mix["apply_mask(rows)"],
            mix["dict copy"],
            "ns/row",
            ROW_LIMIT,
            at_most=True,
        )
    ]
    lines = [
        f"Rows: {rows['rows']:,} x 10 fields, 3 masked; CPU ns per row, medians of "
        f"{rows['rounds']} rounds (A B A B); `python -m bench.masking`.",
        "",
        "| mix | way | ns/row | x dict copy |",
        "| --- | --- | --- | --- |",
    ]
    for name, measured in rows["mixes"].items():
        for way, ns in measured["ns_per_row"].items():
            lines.append(f"| {name} | {way} | {ns:.0f} | {measured['over_copy'][way]:.1f}x |")
    if columns is not None:
        rates = columns["operators"]
        slowest = min(VECTORISED, key=lambda op: rates[op]["million_values_per_cpu_s"])
        rate = rates[slowest]["million_values_per_cpu_s"]
        targets.append(
            Target(
                "columnar masking (pyarrow), slowest vectorised operator",
                f"{rate:.1f} M values/s per core ({slowest})",
                f">= {COLUMN_LIMIT:.0f} M values/s",
                rate >= COLUMN_LIMIT,
            )
        )
        lines += [
            "",
            f"Columns: {columns['values']:,} values through `mask_column` (pyarrow), million "
            "values per CPU second. HASH is keyed: it runs once per distinct value.",
            "",
            "| operator | distinct values | M values/s per core |",
            "| --- | --- | --- |",
        ]
        for op, measured in rates.items():
            lines.append(
                f"| {op} | {measured['distinct']:,} | {measured['million_values_per_cpu_s']:.1f} |"
            )
    else:
        targets.append(
            Target("columnar masking (pyarrow)", "not run: pyarrow missing", ">= 5 M/s", False)
        )
    return Section(
        title="Masking throughput",
        targets=targets,
        markdown="\n".join(lines),
        data={"rows": rows, "columns": columns},
    )


def main(argv: list[str] | None = None) -> Section:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, two rounds")
    args = parser.parse_args(argv)
    result = section(quick=args.quick)
    for t in result.targets:
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.measured} (limit {t.limit})")
    print()
    print(result.markdown)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "masking.json").write_text(json.dumps(result.data, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
