"""Policy test suites: YAML cases run against the bundle on every CEL backend (`signoff test`)."""

from signoff.policytest.runner import run_suites

__all__ = ["run_suites"]
