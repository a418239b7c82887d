"""Brokers: carry publishes between the workers of a server (``local``) and
between servers (``redis://...``).

A broker moves ``(topic, opcode, payload)`` and never sees a connection: what
it receives it hands to a ``Sink`` (the WebSocket glue's topic registry),
which writes it to the subscribers of its own worker. ``topic`` None is a
broadcast (every connection). This package is part of the reactor core for
the layering test: it imports no protocol code.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Protocol

from ..loop import Reactor


class Sink(Protocol):
    """Where a broker delivers what other workers published."""

    def hold(self) -> None:
        """Publishes until ``release`` arrive together: write them in one go."""

    def receive(self, topic: str | None, opcode: int, payload: bytes) -> None:
        """One publish (``topic`` None: a broadcast) from another worker."""

    def release(self) -> None:
        """The end of a batch started by ``hold``."""


class Broker(Protocol):
    def publish(self, topic: str | None, opcode: int, payload: bytes) -> None:
        """Queue a publish for every other worker (sent by ``flush``)."""

    def flush(self) -> None:
        """Send what ``publish`` queued."""

    def topic_added(self, topic: str) -> None:
        """The first connection of this worker joined ``topic``."""

    def topic_removed(self, topic: str) -> None:
        """The last connection of this worker left ``topic``."""


def check_url(value: str) -> str:
    """``--broker`` values: ``local`` or a Redis URL (checked before any fork)."""
    if value == "local":
        return value
    from .redis import parse_url

    parse_url(value)  # BrokerUrlError (a ValueError) says what is wrong
    if importlib.util.find_spec("hiredis") is None:
        raise ValueError("--broker redis:// needs hiredis: pip install 'reactor[redis]'")
    return value


def create(options: argparse.Namespace, reactor: Reactor, sink: Sink) -> Broker | None:
    """The broker ``--broker`` names, or None when there is no one to reach
    (a single worker with the local broker)."""
    group = getattr(options, "worker_group", None)
    if options.broker == "local":
        if group is None or options.workers < 2:
            return None
        from .local import LocalBroker

        return LocalBroker(reactor, sink, group, options.worker_index, options.workers)
    from .redis import RedisBroker

    return RedisBroker(reactor, sink, options.broker)
