"""Every policy example in docs/policies.md loads against the bundled schema and roles."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from signoff.policy.loader import load_bundle
from tests.conftest import REPO, RULES

_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def policy_examples() -> list[tuple[int, str]]:
    text = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m[1])
        for m in _BLOCK.finditer(text)
        if re.search(r"^(policies|derived_roles):", m[1], re.MULTILINE)
        and "{...}" not in m[1]  # a sketch of a file's shape, not a policy
    ]


@pytest.mark.parametrize(("line", "example"), policy_examples(), ids=lambda v: str(v)[:20])
def test_a_policy_example_in_the_docs_loads_with_the_bundled_schema(
    tmp_path: Path, line: int, example: str
) -> None:
    for name in ("schema.yaml", "roles.yaml"):
        shutil.copy(RULES / name, tmp_path / name)
    if re.search(r"^derived_roles:", example, re.MULTILINE):
        (tmp_path / "roles.yaml").unlink()  # the example defines its own roles
    (tmp_path / "example.yaml").write_text(example, encoding="utf-8")
    load_bundle(tmp_path)  # raises PolicyError naming the example's problem
