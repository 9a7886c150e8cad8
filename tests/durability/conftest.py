"""Fixtures for the durability tests: a private Redis per test, service processes, dev tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from signoff.devtokens import create_dev_keys
from tests.durability.support import Approvers, RedisServer, Services, approvers, redis_binary

MakeRedis = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dev signing key directory and the JWKS every service process verifies tokens with."""
    directory = tmp_path_factory.mktemp("dev-keys")
    return directory, create_dev_keys(directory)


@pytest.fixture(scope="session")
def tokens(dev_keys: tuple[Path, Path]) -> Approvers:
    return approvers(dev_keys[0])


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[MakeRedis]:
    """Start private redis-servers (each in a directory of its own); all are killed at the end."""
    redis_binary()  # fail loudly, not skip, when Redis is missing
    made: list[RedisServer] = []

    def make(*, appendonly: bool = True, fsync_always: bool = True) -> RedisServer:
        server = RedisServer(
            tmp_path / f"redis{len(made)}", appendonly=appendonly, fsync_always=fsync_always
        )
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def services(tmp_path: Path, dev_keys: tuple[Path, Path]) -> Iterator[Services]:
    """Start `signoff serve` processes; every one still running is stopped at the end."""
    directory = tmp_path / "services"
    directory.mkdir()
    started = Services(directory, dev_keys[1])
    yield started
    started.close()
