"""The one exception root of signoff and its families."""

from __future__ import annotations

from dataclasses import dataclass


class SignoffError(Exception):
    """Root of every error signoff raises on purpose."""


@dataclass(frozen=True, order=True)
class Problem:
    """One problem found in a policy bundle, located as precisely as the source allows."""

    file: str
    line: int
    column: int
    rule_id: str
    message: str

    def __str__(self) -> str:
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{located(self.file, self.line, self.column)}{rule}: {self.message}"


def located(file: str, line: int, column: int) -> str:
    """`file:line:col`, or just `file` for line 0: a problem with the file (or signed bundle)
    as a whole, such as a bad signature, has no position to point at."""
    return f"{file}:{line}:{column}" if line > 0 else file


class PolicyError(SignoffError):
    """A policy bundle failed to load; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        # The checker can report one fault twice (e.g. inside a macro); list each once.
        self.problems = sorted(set(problems))
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"policy bundle has {len(self.problems)} problem(s):\n{lines}")


class InvalidRequest(SignoffError):
    """A request is malformed; `field` names the offending field path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigError(SignoffError):
    """The service configuration is unusable."""


class Unauthenticated(SignoffError):
    """No credential, or one that does not verify (signature, issuer, audience, expiry)."""


class PermissionDenied(SignoffError):
    """The verified caller may not do this; `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class NotFound(SignoffError):
    """The named object does not exist (or no longer exists)."""


class Conflict(SignoffError):
    """The object is not in a state that allows this, e.g. approving a rejected approval."""


class StoreUnavailable(SignoffError):
    """The approval store (Redis) cannot be reached; never treated as permission."""


class ProviderUnavailable(SignoffError):
    """A party outside signoff that a surface relies on (an OpenID provider) cannot be reached."""


class Overloaded(SignoffError):
    """A bounded resource (e.g. concurrent watch streams) is at its limit; retry or poll."""


class AuditUnavailable(SignoffError):
    """The audit stream cannot be appended to (Redis down, or a chain it cannot extend)."""
