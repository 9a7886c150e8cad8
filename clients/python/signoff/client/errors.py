"""The client's exception root and the failures that are not tied to one feature."""

from __future__ import annotations


class SignoffClientError(Exception):
    """Root of every error the signoff client raises on purpose."""


class InvalidInput(SignoffClientError, ValueError):
    """A value handed to the client cannot be turned into a request.

    It is also a ValueError because that is what callers passing bad arguments expect to catch.
    """


class SignoffRpcError(SignoffClientError):
    """A call to the decision service failed; `code` is the gRPC status code name."""

    def __init__(self, method: str, code: str, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(
            f"{method} failed: {code}: {details}" if details else f"{method} failed: {code}"
        )


class ProtocolError(SignoffClientError):
    """The service answered with something this client cannot act on, e.g. an unknown verdict."""


class MaskingError(SignoffClientError):
    """A masking plan cannot be applied; nothing is returned, so no raw value escapes."""
