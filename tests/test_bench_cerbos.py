"""bench/cerbos.py: Cerbos installs from npm and answers the workload as its reference does."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cerbos


def test_quick_cerbos_run_checks_its_answers_against_the_reference_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The first run downloads Cerbos (~96 MB, seconds); later ones use bench/.tools.
    checks = cerbos.main(["--quick"])
    out = capsys.readouterr().out
    if checks == 0:
        assert "SKIPPED the Cerbos side" in out
        pytest.skip("the npm registry is unreachable: Cerbos could not be installed")
    assert checks >= 100
    assert "every one as the workload's reference model expects" in out


def test_an_unreachable_npm_registry_is_told_apart_from_other_install_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9; no retries, so npm gives up at once.
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "cache"))
    with pytest.raises(cerbos.NpmUnreachable):
        cerbos.install(tmp_path / "tools")
