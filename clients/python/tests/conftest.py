"""Fixtures: real `window-node serve` processes on free loopback ports (see daemons.py)."""

from __future__ import annotations

import pytest

from daemons import Daemons, RedisServer


@pytest.fixture
def daemons(tmp_path):
    """Starts daemons with ``daemons.start(data_dir, *options)``; SIGKILLs them all at teardown
    and prints their logs' tails (pytest shows them when the test failed)."""
    started = Daemons(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port (the test is skipped without one, except
    under CI); SIGKILLed at teardown."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.kill()
