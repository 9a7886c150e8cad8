"""The bundle as written: one parse feeds the compiler, lint and the test runner's locations."""

from __future__ import annotations

from pathlib import Path

from signoff.policy import model
from signoff.policy.lint import item_locations
from signoff.policy.loader import compile_bundle, load_bundle
from tests.conftest import RULES, WriteRules


def test_compiling_the_bundle_as_written_gives_what_loading_it_gives() -> None:
    written = model.read(RULES)
    compiled, loaded = compile_bundle(written), load_bundle(RULES)
    assert compiled.revision == loaded.revision
    assert [p.policy_id for p in compiled.policies] == [p.policy_id for p in loaded.policies]
    assert compiled.schema == loaded.schema


def test_items_carry_their_positions_and_a_broken_one_is_left_to_the_compiler(
    write_rules: WriteRules,
) -> None:
    rules = write_rules(
        p="""
        policies:
          - id: p
            resources: [db]
            actions: [read]
            rules:
              - {id: ok, effect: allow}
              - {id: bad, effect: allow, colour: red}
        """
    )
    written = model.read(rules)
    (parsed,) = written.parsed
    (policy,) = parsed.policies
    assert [r.rule_id for r in policy.rules] == ["p/ok", "p/bad"]
    assert [parsed.compiles(r.path) for r in policy.rules] == [True, False]
    assert [parsed.src.position(r.path).line for r in policy.rules] == [6, 7]
    assert [(p.line, p.rule_id) for p in written.problems] == [(7, "p/bad")]
    assert item_locations(rules) == {"p/ok": (str(Path(rules) / "p.yaml"), 6)} | {
        "p/bad": (str(Path(rules) / "p.yaml"), 7)
    }
