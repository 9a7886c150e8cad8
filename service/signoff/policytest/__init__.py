"""Policy test suites: YAML cases run against the bundle on every CEL backend (`signoff test`)."""

from signoff.policytest.cli import add_test_arguments, run_test
from signoff.policytest.runner import run_suites

__all__ = ["add_test_arguments", "run_suites", "run_test"]
