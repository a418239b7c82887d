"""Shared fixtures (helpers live in testkit.py, on sys.path via pytest's `pythonpath`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testkit import ServerProcess


@pytest.fixture
def server_factory() -> Iterator:
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        server = ServerProcess(list(args), **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
