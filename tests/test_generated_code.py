"""The committed generated code is exactly what `make gen` produces from proto/."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

from grpc_tools import protoc

from tests.conftest import REPO


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto"))
    out = str(tmp_path)
    bin_dir = Path(sys.executable).parent  # the plugins live beside the interpreter
    args = [
        "protoc",
        f"-I{REPO / 'proto'}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    assert protoc.main(args) == 0
    fresh = tmp_path / "signoff" / "v1"
    committed = REPO / "clients" / "python" / "signoff" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    assert generated, "protoc produced nothing"
    _, mismatch, missing = filecmp.cmpfiles(fresh, committed, generated, shallow=False)
    assert (mismatch, missing) == ([], []), "run `make gen` and commit the result"
