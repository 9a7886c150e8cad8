"""`--dev-login` offers the inbox's development login on loopback only, never beyond it."""

from __future__ import annotations

import argparse

import pytest

from signoff.cmd.serve import http_options
from signoff.errors import ConfigError


def options(address: str, dev_login: str) -> argparse.Namespace:
    return argparse.Namespace(
        http_address=address, allow_plaintext="on", authzen_token_file="", dev_login=dev_login
    )


def test_the_dev_login_is_off_unless_asked_for() -> None:
    assert http_options(options("127.0.0.1:8080", "off"), None).dev_login is False
    assert http_options(options("127.0.0.1:8080", "on"), None).dev_login is True


@pytest.mark.parametrize("address", ["0.0.0.0:8080", "10.1.2.3:8080", "example.com:8080"])
def test_the_dev_login_is_refused_beyond_loopback(address: str) -> None:
    with pytest.raises(ConfigError, match="refused beyond loopback"):
        http_options(options(address, "on"), None)
