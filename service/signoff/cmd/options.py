"""The service options several commands share, each declared once (flag, variable, default)."""

from __future__ import annotations

import argparse
from pathlib import Path

from signoff.client.cmd.settings import Setting
from signoff.keys import KEY_ENV

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_REDIS_PREFIX = "signoff:"

REDIS_URL = Setting(
    "--redis-url", "REDIS_URL", DEFAULT_REDIS_URL, f"Redis (REDIS_URL; default {DEFAULT_REDIS_URL})"
)
REDIS_PREFIX = Setting(
    "--redis-prefix",
    "SIGNOFF_REDIS_PREFIX",
    DEFAULT_REDIS_PREFIX,
    f"key prefix in Redis (SIGNOFF_REDIS_PREFIX; default {DEFAULT_REDIS_PREFIX!r})",
)
REDIS = (REDIS_URL, REDIS_PREFIX)
LOG_LEVEL = Setting(
    "--log-level",
    "SIGNOFF_LOG_LEVEL",
    "INFO",
    "SIGNOFF_LOG_LEVEL; default INFO",
    choices=LOG_LEVELS,
)
HASH_KEY_FILE = Setting(
    "--hash-key-file",
    "SIGNOFF_HASH_KEY_FILE",
    "",
    "file holding the root secret (SIGNOFF_HASH_KEY_FILE; or the secret itself in "
    "SIGNOFF_HASH_KEY); every purpose key not set on its own is derived from it. Never put it "
    "in policy files.",
)


def key_file(purpose: str) -> Setting:
    """--<purpose>-key-file: a purpose key set on its own, so it rotates without the root."""
    name = KEY_ENV[purpose]
    return Setting(
        f"--{purpose}-key-file",
        f"{name}_FILE",
        "",
        f"file holding the {purpose} key as hex ({name}_FILE; or the hex in {name}); set, it "
        "replaces the key derived from the root",
    )


def rules_dir(parser: argparse.ArgumentParser, about: str = "") -> None:
    """The optional RULES positional of the commands that read a bundle (default ./rules)."""
    parser.add_argument(
        "rules_dir",
        metavar="RULES",
        nargs="?",
        type=Path,
        default=Path("rules"),
        help=f"policy bundle directory{about} (default: rules)",
    )
