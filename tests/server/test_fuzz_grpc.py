"""The gRPC fuzzer's quick mode (bench/fuzz_grpc.py): every answer allowed, nothing fails open."""

from __future__ import annotations

import re

import pytest

from bench import fuzz_grpc


def test_quick_fuzz_run_gets_only_allowed_codes_and_no_errored_allow_or_mask(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = fuzz_grpc.main(["--quick", "--seed", "7"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "violations: 0" in out
    counts = re.search(r"^requests: (\d+) ", out, re.MULTILINE)
    assert counts is not None, out
    assert int(counts[1]) >= 200, out
    # Mutated requests must reach the engine, and some of them its evaluation errors: a run
    # that only ever met the parser would prove little.
    errored = re.search(r"with evaluation errors: (\d+)$", out, re.MULTILINE)
    assert errored is not None, out
    assert int(errored[1]) > 0, out
    assert re.search(r"^codes: .*\bOK \d+", out, re.MULTILINE), out
    assert re.search(r"^codes: .*\bINVALID_ARGUMENT \d+", out, re.MULTILINE), out
